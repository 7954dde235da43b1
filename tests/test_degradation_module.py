"""The training-time ``Degrader`` (nn.Module) and ``PairDataset`` against the offline CLI.

Same seed + same image name + same HR pixels -> the same 8-bit LR as ``kgengine degrade``
writes: bit-exact on the CPU (with and without JPEG, any batch composition). On CUDA the
downscale op's float32 sums may round differently: at most one 8-bit level without JPEG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.degradation import (
    MANIFEST,
    Degrader,
    PairDataset,
    PipelineConfig,
    read_manifest,
)
from kgengine.imageio import read_image, to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import make_pool, save_pool

SIZES = {"a.png": (48, 40), "b.png": (48, 40), "c.png": (40, 40), "d.png": (51, 47)}
NO_JPEG = ("--noise-range", "0.005-0.03", "--noise-poisson", "--second-order", "--shuffle",
           "--set", "gray_prob=0.5")
NO_JPEG_CFG = PipelineConfig(gaussian_prob=1.0, gaussian_sigma=(0.005, 0.03), poisson_prob=1.0,
                             second_prob=1.0, shuffle=True, gray_prob=0.5)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("module")
    rng = np.random.default_rng(0)
    (root / "hr").mkdir()
    for name, (h, w) in SIZES.items():
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.clip(0.5 + 0.3 * np.sin(xx / 3.0 + yy / 5.0)[..., None] * rng.random(3)
                      + 0.1 * rng.random((h, w, 3)), 0, 1)
        Image.fromarray(to_uint8(img)).save(root / "hr" / name)
    kernels = [anisotropic_gaussian(13, v1, v2, th) for v1, v2, th in
               [(0.8, 3.0, 0.3), (2.0, 2.0, 0.0), (4.0, 1.0, 1.2)]]
    pool = make_pool(kernels, ["k0", "k1", "k2"], ["p0", "p1", "p2"], 2, seeds=[0, 1, 2])
    return root / "hr", save_pool(root / "pool", pool)


def _offline(data, out: Path, *flags: str) -> dict[str, np.ndarray]:
    hr_dir, pool = data
    res = CliRunner().invoke(app, ["degrade", str(hr_dir), "-k", str(pool), "-o", str(out),
                                   "--seed", "7", *flags])
    assert res.exit_code == 0, res.output
    return {n: np.asarray(Image.open(out / e["lr"]))
            for n, e in read_manifest(out / MANIFEST).items()}


def _hr_batch(hr_dir: Path, names: list[str]) -> torch.Tensor:
    imgs = [read_image(hr_dir / n) for n in names]
    return torch.stack([torch.from_numpy(i[: i.shape[0] // 2 * 2, : i.shape[1] // 2 * 2]
                                         .transpose(2, 0, 1).copy()) for i in imgs])


@pytest.mark.parametrize("flags, cfg", [
    (NO_JPEG, NO_JPEG_CFG),
    ((*NO_JPEG, "--jpeg", "30-90"), NO_JPEG_CFG.replace(jpeg_prob=1.0, jpeg_quality=(30, 90))),
])
def test_module_equals_offline_cli_bit_exact(data, tmp_path, flags, cfg) -> None:
    offline = _offline(data, tmp_path / "out", *flags)
    degrader = Degrader(data[1], cfg, seed=7)
    names = ["a.png", "b.png"]  # equal sizes: one batch, different kernels and stage orders
    lr = degrader(_hr_batch(data[0], names), names)
    assert lr.shape == (2, 3, 24, 20) and lr.dtype == torch.float32
    assert len({tuple(d.order) for d in degrader.last_draws}) == 2
    for i, n in enumerate(names):
        np.testing.assert_array_equal((lr[i] * 255).round().byte().permute(1, 2, 0).numpy(),
                                      offline[n])
        # and the float LR equals the PNG read back as kgengine reads images
        np.testing.assert_array_equal(lr[i].permute(1, 2, 0).numpy(),
                                      read_image(tmp_path / "out" / "lr" / n))
    odd = degrader(_hr_batch(data[0], ["d.png"]), ["d.png"])  # the cropped 50x46 HR
    np.testing.assert_array_equal(to_uint8(odd[0].permute(1, 2, 0).numpy()), offline["d.png"])


def test_module_batches_devices_and_auto_names(data) -> None:
    degrader = Degrader(data[1], NO_JPEG_CFG.replace(jpeg_prob=0.5), seed=1)
    hr = torch.rand(5, 3, 32, 28, generator=torch.Generator().manual_seed(0))
    names = [f"x{i}.png" for i in range(5)]
    full = degrader(hr, names)
    parts = torch.cat([degrader(hr[:2], names[:2]), degrader(hr[2:], names[2:])])
    assert torch.equal(full, parts)
    assert torch.equal(degrader(hr.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2), names),
                       full)  # memory layout does not matter
    a, b = degrader(hr), degrader(hr)  # automatic keys: new draws at every call
    assert not torch.equal(a, b)
    assert "scale=2" in repr(degrader) and "kernel -> second" in repr(degrader)
    raw = Degrader(data[1], seed=1, quantize=False)(hr, names)
    assert not torch.equal(raw, (raw * 255).round() / 255)
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        gpu = degrader.cuda()(hr.cuda(), names).cpu()
        assert (gpu - full).abs().max() <= 1 / 255 + 1e-6


def test_dataset_equals_offline_and_works_in_workers(data, tmp_path) -> None:
    offline = _offline(data, tmp_path / "out", *NO_JPEG, "--jpeg", "50-60")
    cfg = NO_JPEG_CFG.replace(jpeg_prob=1.0, jpeg_quality=(50, 60))
    ds = PairDataset(data[0], data[1], cfg, seed=7)
    assert len(ds) == 4
    for i in range(4):
        item = ds[i]
        assert item["hr"].shape[1:] == (2 * item["lr"].shape[1], 2 * item["lr"].shape[2])
        np.testing.assert_array_equal(to_uint8(item["lr"].permute(1, 2, 0).numpy()),
                                      offline[item["key"]])
    ds.set_epoch(1)
    assert ds.key(0) == "a.png@1" and not torch.equal(ds[0]["lr"], ds.__class__(
        data[0], data[1], cfg, seed=7)[0]["lr"])
    ds.set_epoch(0)
    crops = PairDataset(data[0], data[1], cfg, seed=7, patch=16)
    loader = DataLoader(crops, batch_size=2, num_workers=1)
    got = [b for b in loader]
    assert [tuple(b["lr"].shape) for b in got] == [(2, 3, 8, 8)] * 2
    assert torch.equal(got[0]["lr"][1], crops[1]["lr"])  # a worker process gives the same
    with pytest.raises(ValueError, match="multiple of 2"):
        PairDataset(data[0], data[1], cfg, patch=15)
