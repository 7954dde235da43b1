"""Each pipeline stage against an independent reference (NumPy/SciPy/Pillow/kgengine.degrade),
the per-image draws, and the pipeline config (TOML, CLI overrides).

Noise statistics use large samples (3·256·256 = 196,608 values) with tolerances of 5
standard errors derived from the sample size n: for the mean ``σ/√n``; for the variance
``√((μ4 − σ⁴)/n)`` (Gaussian: ``σ²·√(2/n)``; Poisson with λ counts: ``√((λ + 2λ²)/n)``).
The seeds are fixed, so the tests are deterministic; 5 standard errors leave a true
implementation a ~1e-6 chance per check of failing for a new seed.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage, stats

from kgengine.degradation import stages as st
from kgengine.degradation.config import (
    STAGES,
    PipelineConfig,
    build_config,
    load_config,
    parse_sets,
)
from kgengine.degradation.draws import Draws, draw, stage_rng
from kgengine.degradation.plan import hash_int, kernel_row
from kgengine.degrade import degrade
from kgengine.errors import KGEngineError
from kgengine.imageio import to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.ops.backend import resolve

N_SIDE = 256
N = 3 * N_SIDE * N_SIDE
DOWN = resolve("downscale", torch.device("cpu"))


def _const(v: float) -> torch.Tensor:
    return torch.full((1, 3, N_SIDE, N_SIDE), v, dtype=torch.float32)


# --- noise --------------------------------------------------------------------------------


def test_gaussian_noise_statistics() -> None:
    sigma = 0.05
    y = st.gaussian_noise(_const(0.5), {"sigma": sigma, "gray": False, "seed": 3}).double()
    n = (y - 0.5).flatten().numpy()
    assert abs(n.mean()) < 5 * sigma / math.sqrt(N)
    assert abs(n.var() - sigma**2) < 5 * sigma**2 * math.sqrt(2 / N)
    assert stats.kstest(n / sigma, "norm").pvalue > 1e-3  # shape: a normal, not just 2 moments
    # the channels are independent: correlation ~ N(0, 1/n_pixels)
    r = np.corrcoef(n.reshape(3, -1))[0, 1]
    assert abs(r) < 5 / N_SIDE


def test_gaussian_gray_noise_is_shared_and_clipped() -> None:
    y = st.gaussian_noise(_const(0.5), {"sigma": 0.05, "gray": True, "seed": 4})
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    y = st.gaussian_noise(_const(0.98), {"sigma": 0.2, "gray": False, "seed": 5})
    assert y.max() == 1.0 and y.min() >= 0.0  # clipped to [0, 1]


@pytest.mark.parametrize("v, peak", [(0.3, 100.0), (0.2, 20.0)])  # P(clip at 1) < 1e-8
def test_poisson_variance_equals_mean(v: float, peak: float) -> None:
    y = st.poisson_noise(_const(v), {"peak": peak, "gray": False, "seed": 7}).double()
    counts = (y * peak).flatten().numpy()
    lam = v * peak
    assert np.abs(counts - np.round(counts)).max() < 1e-3  # y·peak is a count
    assert abs(counts.mean() - lam) < 5 * math.sqrt(lam / N)
    assert abs(counts.var() - lam) < 5 * math.sqrt((lam + 2 * lam**2) / N)  # Var ≈ mean
    # the histogram follows scipy's Poisson pmf (chi-square over bins with >= 5 expected)
    ks = np.arange(max(0, int(lam - 4 * lam**0.5)), int(lam + 4 * lam**0.5))
    observed = np.array([(np.round(counts) == k).sum() for k in ks])
    expected = stats.poisson.pmf(ks, lam) * N
    expected *= observed.sum() / expected.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_poisson_gray_adds_one_shot_noise_to_all_channels() -> None:
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    y = st.poisson_noise(x, {"peak": 200.0, "gray": True, "seed": 8})
    d = (y - x).double()
    inside = ((y > 0) & (y < 1)).all(dim=1)
    assert torch.allclose(d[:, 0][inside], d[:, 2][inside], atol=1e-6)
    lum = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    counts = ((d[:, 0] + lum) * 200.0)[inside]
    assert (counts - counts.round()).abs().max() < 1e-3


def test_real_noise_tiles_the_patch_from_its_offset() -> None:
    rng = np.random.default_rng(0)
    patch = (0.02 * rng.standard_normal((3, 16, 16))).astype(np.float32)
    x = torch.full((1, 3, 40, 37), 0.5)
    y = st.real_noise(x, torch.from_numpy(patch), {"offset": [5, 11], "scale": 2.0})
    tiled = np.tile(patch, (1, 4, 4))[:, 5 : 5 + 40, 11 : 11 + 37]  # independent: np.tile
    np.testing.assert_allclose(y[0].numpy(), np.clip(0.5 + 2.0 * tiled, 0, 1), atol=1e-7)


# --- JPEG, 8 bits -------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_bytes_are_pillows(quality: int) -> None:
    x = torch.rand(1, 3, 33, 47, generator=torch.Generator().manual_seed(quality))
    img8 = to_uint8(x[0].permute(1, 2, 0).numpy())  # kgengine.imageio's 8-bit rounding
    buf = io.BytesIO()
    Image.fromarray(img8).save(buf, format="JPEG", quality=quality)
    assert st.jpeg_encode(st.quantize_u8(x[0]).permute(1, 2, 0).numpy(), quality) == buf.getvalue()
    y = st.jpeg(x, {"quality": quality})
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(st.quantize_u8(y[0]).permute(1, 2, 0).numpy(), ref)
    assert torch.equal(y, st.from_u8(st.quantize_u8(y)))  # on the 8-bit grid


def test_quantize_matches_imageio_and_read_back() -> None:
    v = torch.tensor([-0.1, 0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 0.49999, 0.5, 1.0, 1.2])
    x = torch.cat([v, torch.rand(10_000, generator=torch.Generator().manual_seed(1))])
    np.testing.assert_array_equal(st.quantize_u8(x).numpy(), to_uint8(x.numpy()))
    q = st.quantize_u8(x)
    np.testing.assert_array_equal(st.from_u8(q).numpy(), q.numpy().astype(np.float32) / 255.0)


# --- kernel, second round -------------------------------------------------------------------


def test_kernel_downscale_equals_kgengine_degrade() -> None:
    rng = np.random.default_rng(2)
    hr = rng.random((2, 3, 38, 44), dtype=np.float32)
    ks = np.stack([anisotropic_gaussian(13, 1.0, 4.0, 0.4), anisotropic_gaussian(13, 3, 1, 2)])
    ks[1, 3, 9] += 0.03  # not symmetric: a flip would show
    ks = (ks / ks.sum(axis=(1, 2), keepdims=True)).astype(np.float32)
    lr = st.kernel_downscale(torch.from_numpy(hr), torch.from_numpy(ks), 2, DOWN)
    for b in range(2):  # the NumPy façade, float64
        ref = degrade(hr[b].transpose(1, 2, 0), ks[b], 2).transpose(2, 0, 1)
        np.testing.assert_allclose(lr[b].numpy(), ref, rtol=0, atol=1e-5)


def test_second_round_blur_and_resize_against_scipy() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((1, 3, 30, 40), dtype=np.float32)
    p = {"kernel": "gaussian", "size": 7, "sigma": [0.6, 1.3], "theta": 0.5, "resize": 0.6,
         "mode": "bilinear"}
    k = st.second_kernel(p, np.zeros((1, 13, 13), np.float32))
    np.testing.assert_allclose(k, anisotropic_gaussian(7, 0.36, 1.69, 0.5), atol=1e-7)
    y = st.blur_resize(torch.from_numpy(x), torch.from_numpy(k[None]), [p], DOWN)[0].numpy()
    blurred = degrade(x[0].transpose(1, 2, 0), k, 1)  # stride 1, same convention
    small = ndimage.zoom(blurred, (18 / 30, 24 / 40, 1), order=1, grid_mode=True, mode="nearest")
    back = ndimage.zoom(small, (30 / 18, 40 / 24, 1), order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(y, back.transpose(2, 0, 1), atol=1e-5)
    # area at r = 0.5: 2x2 block means, then back up
    t = torch.from_numpy(blurred.transpose(2, 0, 1).astype(np.float32))[None]
    down = F.interpolate(t, size=(15, 20), mode="area")[0].numpy()
    np.testing.assert_allclose(down, t[0].numpy().reshape(3, 15, 2, 20, 2).mean((2, 4)),
                               atol=1e-6)
    assert st.resize_back(t, 1.01, "bicubic") is t  # r ≈ 1: no resize


# --- draws ----------------------------------------------------------------------------------


FULL = PipelineConfig(second_prob=1.0, gaussian_prob=1.0, poisson_prob=0.5, jpeg_prob=1.0,
                      real_prob=1.0, real_noise="x.npy", gray_prob=0.5)


def test_draws_depend_only_on_seed_and_name() -> None:
    np.random.seed(123)
    torch.manual_seed(123)
    state, tstate = np.random.get_state()[1].copy(), torch.get_rng_state()
    d1 = draw(FULL, 0, "a.png", 5, (10, 32))
    assert draw(FULL, 0, "a.png", 5, (10, 32)) == d1
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # no global RNG
    assert torch.equal(torch.get_rng_state(), tstate)
    assert draw(FULL, 1, "a.png", 5, (10, 32)) != d1
    assert draw(FULL, 0, "b.png", 5, (10, 32)) != d1
    assert d1.kernel_row == kernel_row(0, "a.png", 5)  # the legacy job's kernel
    assert Draws.from_dict(d1.to_dict()) == d1
    # a stage's draws do not depend on the other stages being on
    only_jpeg = draw(PipelineConfig(jpeg_prob=1.0), 0, "a.png", 5)
    assert only_jpeg.stages["jpeg"] == d1.stages["jpeg"]
    rng = stage_rng(0, "a.png", "jpeg")
    assert rng.random() < 1.0 and int(rng.integers(30, 96)) == d1.stages["jpeg"]["quality"]
    assert hash_int("x", "\udcff.png") != hash_int("x", "\udcfe.png")  # raw bytes hashed


def test_draw_ranges_probabilities_and_shuffle() -> None:
    cfg = FULL.replace(shuffle=True, jpeg_quality="40-60")
    ds = [draw(cfg, 0, f"img{i}.png", 3, (4, 16)) for i in range(400)]
    assert len({d.order for d in ds}) > 20  # many permutations of 5 stages
    assert all(sorted(d.order) == sorted(STAGES) for d in ds)
    q = [d.stages["jpeg"]["quality"] for d in ds]
    assert min(q) == 40 and max(q) == 60
    applied = sum(d.stages["poisson"] is not None for d in ds)
    assert abs(applied - 200) < 5 * math.sqrt(100)  # prob 0.5: binomial(400, 0.5)
    peaks = np.log([d.stages["poisson"]["peak"] for d in ds if d.stages["poisson"]])
    assert np.log(30) <= peaks.min() and peaks.max() <= np.log(1000)
    assert all(d.order == FULL.order for d in (draw(FULL, 0, f"{i}", 3, (4, 16))
                                                for i in range(20)))


# --- config ---------------------------------------------------------------------------------


def test_config_toml_overrides_and_errors(tmp_path) -> None:
    path = tmp_path / "deg.toml"
    path.write_text('order = ["jpeg", "gaussian"]\nshuffle = true\ngaussian_prob = 1.0\n'
                    'gaussian_sigma = [0.01, 0.02]\njpeg_prob = 0.5\njpeg_quality = [50, 60]\n'
                    'real_noise = "noise"\n')
    cfg = load_config(path)
    assert cfg.order == ("jpeg", "gaussian") and cfg.shuffle and cfg.jpeg_quality == (50, 60)
    assert cfg.gaussian_sigma == (0.01, 0.02) and cfg.real_noise == str(tmp_path / "noise")
    assert cfg.active() == ("jpeg", "gaussian")
    # flags override the file, --set overrides the flags
    cfg2 = build_config(path, jpeg="30-95", poisson=True,
                        sets=parse_sets(["jpeg_quality=70,80", "gray_prob=0.25"]))
    assert (cfg2.jpeg_prob, cfg2.jpeg_quality, cfg2.poisson_prob) == (1.0, (70, 80), 1.0)
    assert cfg2.gray_prob == 0.25 and cfg2.shuffle
    assert build_config(noise=0.02).gaussian_sigma == (0.02, 0.02)
    assert build_config(noise_range="1e-3-0.05").gaussian_sigma == (0.001, 0.05)
    assert PipelineConfig.from_dict(cfg2.to_dict()) == cfg2
    assert PipelineConfig().active() == ()  # default: kernel and downscale only
    for bad, msg in [("colour = 1\n", "unknown key 'colour'"),
                     ("jpeg_quality = [90, 40]\n", "lo <= hi"),
                     ("gaussian_prob = 2.0\n", r"in \[0, 1\]"),
                     ("order = ['blur']\n", "unknown stage 'blur'"),
                     ("shuffle = 'maybe'\n", "shuffle expects bool"),
                     ("real_prob = 1.0\n", "needs real_noise"),
                     ("jpeg_quality = [0, 50]\n", "within 1-100"),
                     ("x = [\n", "not valid TOML")]:
        path.write_text(bad)
        with pytest.raises(KGEngineError, match=msg):
            load_config(path)
    with pytest.raises(KGEngineError, match="expected key=value"):
        parse_sets(["gray_prob"])
