"""Bugs found by the 0.9.29 review, one test each: every assertion here failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.export.degraders import build_fixed_model, build_pool_model
from kgengine.kernel import collapsed, gaussian_kernel
from kgengine.ops import downscale, sample_patches
from kgengine.ops._torch import degrade_torch, ieee_convolutions
from kgengine.ops._torch import downscale as reference

SAMPLE = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_lr.png"


def _run(model, feeds: dict) -> np.ndarray:  # noqa: ANN001
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(["lr"], feeds)[0]


@pytest.mark.parametrize("kind", ["fixed", "pool"])
@pytest.mark.parametrize("channels, sigma_rows, noise_shape", [
    (3, 4, (1, 3, 8, 8)),   # more sigmas than images
    (3, 1, (5, 3, 8, 8)),   # more noise images than images
    (1, 1, (1, 3, 8, 8)),   # RGB noise on a grey image
])
def test_onnx_noise_cannot_grow_the_batch(kind: str, channels: int, sigma_rows: int,
                                          noise_shape: tuple[int, ...]) -> None:
    """A noise_sigma or noise with more rows (or channels) than ``hr`` made ``lr`` that many
    copies of the one blurred image, with no error; it now fails in a node that says why,
    and the shapes the README gives still work."""
    k = np.full((5, 5), 1 / 25, np.float32)
    model = (build_fixed_model(k, 2, noise=True) if kind == "fixed"
             else build_pool_model(5, 2, noise=True))
    hr = np.random.default_rng(0).random((1, channels, 16, 16), dtype=np.float32)
    feeds = {"hr": hr} if kind == "fixed" else {"hr": hr, "kernel": k[None, None]}
    bad = {"noise_sigma": np.full(sigma_rows, 0.01, np.float32),
           "noise": np.zeros(noise_shape, np.float32)}
    with pytest.raises(Exception, match="noise_must_broadcast_to_lr"):
        _run(model, {**feeds, **bad})
    good = {"noise_sigma": np.full(1, 0.5, np.float32),
            "noise": np.ones((1, 1, 1, 8), np.float32)}
    clean = {"noise_sigma": np.zeros(1, np.float32), "noise": np.zeros((1, 1, 8, 8), np.float32)}
    lr = _run(model, {**feeds, **good})
    assert lr.shape == (1, channels, 8, 8)
    np.testing.assert_allclose(lr - _run(model, {**feeds, **clean}), 0.5, atol=1e-6)


@pytest.mark.parametrize("scale", [2.0, np.float64(2.0), True])
@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_downscale_refuses_a_scale_that_is_not_an_integer(scale: object, backend: str) -> None:
    """2.0 and True passed the check (they equal 2 and 1) and failed with an unrelated
    TypeError inside the backend."""
    with pytest.raises(ValueError, match="scale: expected one of"):
        downscale(torch.rand(1, 1, 8, 8), torch.ones(3, 3) / 9, scale, backend=backend)
    out = downscale(torch.rand(1, 1, 8, 8), torch.ones(3, 3) / 9, np.int64(2), backend=backend)
    assert out.shape == (1, 1, 4, 4)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_sample_patches_rechecks_sizes_changed_through_numpy(backend: str) -> None:
    """The size check was cached on the tensor's version counter, which a write through a
    NumPy alias leaves unchanged: the Numba kernel then cropped outside the image."""
    images = torch.rand(1, 1, 40, 40)
    cdf = torch.zeros(1, 2, 1600, dtype=torch.float64)
    cdf[..., -1] = 1.0
    buf = np.array([[40, 40]], np.int64)
    sizes, seeds = torch.from_numpy(buf), torch.zeros(1, dtype=torch.int64)
    sample_patches(images, cdf, sizes, seeds, 0, 32, 16, 0.0, backend=backend)
    buf[:] = 400
    with pytest.raises(ValueError, match="exceeds the padded batch"):
        sample_patches(images, cdf, sizes, seeds, 0, 32, 16, 0.0, backend=backend)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_downscale_second_derivatives_agree(backend: str) -> None:
    """``create_graph=True`` through the Numba backend's kernel gradient gave a gradient
    without a graph ("element 0 of tensors does not require grad"); x's gradient had no
    graph on any custom backend."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 9, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    k = torch.rand(3, 3, dtype=torch.float64, generator=gen, requires_grad=True)

    def second(be: str | None) -> list[torch.Tensor]:
        y = downscale(x, k, 2, backend=be) if be else reference(x, k, 2, "reflect")
        gx, gk = torch.autograd.grad((y**2).sum(), (x, k), create_graph=True)
        return list(torch.autograd.grad((gk**2).sum() + (gx**3).sum(), (x, k)))

    for got, want in zip(second(backend), second(None), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"),
                    reason="torch < 2.9: the legacy allow_tf32 flag only")
def test_cuda_convolutions_are_held_to_float32() -> None:
    """cuDNN's float32 convolutions may run in TF32 by PyTorch's default (about 1e-3
    relative on Ampere and newer); the degrade path turns that off for its convolution and
    restores the global setting afterwards."""
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with ieee_convolutions(False):
        assert conv.fp32_precision == before
    with ieee_convolutions(True):
        assert conv.fp32_precision == "ieee"
    assert conv.fp32_precision == before


@pytest.mark.needs_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_degrade_matches_the_cpu_in_float32() -> None:
    """With TF32 a 13×13 degrade on an Ampere+ GPU is off by about 1e-3 relative."""
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(2, 3, 96, 80, generator=gen)
    k = torch.rand(13, 13, generator=gen)
    k /= k.sum()
    want = degrade_torch(hr.double(), k.double(), 2)
    got = degrade_torch(hr.cuda(), k.cuda(), 2).cpu().double()
    torch.testing.assert_close(got, want, rtol=2e-6, atol=2e-6)


def test_collapsed_is_the_raw_sum_outside_its_range() -> None:
    k = gaussian_kernel(13, 1.5)
    assert not collapsed(k) and not collapsed(1.7 * k)
    assert collapsed(np.zeros((13, 13))) and collapsed(0.47 * k) and collapsed(69 * k)


def test_a_collapsed_training_is_saved_with_confidence_0_and_said(tmp_path) -> None:
    """G's kernel that vanished (sum about 0, every loss finite) was post-processed and saved
    like any other, with a confidence (0.20 on a noisy photo, above healthy runs). Twenty
    iterations leave G's kernel at about 0, as a collapse does."""
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["estimate", str(SAMPLE), "-o", str(out), "--iters", "20",
                                   "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "not about 1" in res.output
    report = json.loads((out / "sample_lr_report.json").read_text())
    assert report["collapsed"] is True and abs(report["raw_sum"]) < 0.5
    assert report["confidence"] == 0.0


def test_the_farm_counts_collapsed_trainings(tmp_path) -> None:
    """A farm said nothing of a collapsed training (20 iterations: G's kernel not grown)."""
    photos = tmp_path / "in"
    photos.mkdir()
    (photos / "a.png").write_bytes(SAMPLE.read_bytes())
    res = CliRunner().invoke(app, ["farm", str(photos), "-o", str(tmp_path / "pool"),
                                   "--iters", "20", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "1 done, 0 failed, 0 skipped (done before), 1 collapsed (confidence 0)" in res.output
    pool = np.load(tmp_path / "pool" / "kernel_pool.npz")
    assert pool["confidences"].tolist() == [0.0]
