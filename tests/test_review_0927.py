"""Bugs found by the 0.9.27 review of the kernel maths and the exports, one test each: every
assertion here failed before its fix."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from kgengine.consensus import combine
from kgengine.degrade import degrade
from kgengine.errors import BadKernelError
from kgengine.export.degraders import build_pool_model
from kgengine.export.generator import VALID_CONVENTION, build_generator_model
from kgengine.export.metadata import read_metadata
from kgengine.kernel import anisotropic_gaussian, center_kernel, gaussian_kernel, shift_kernel
from kgengine.metrics import aligned_kernel_psnr, lr_resynthesis_psnr
from kgengine.release import released_prior
from kgengine.spectral import mix_covariance, spectral_covariance
from kgengine.width import calibrate_width
from tests.synthetic import power_law_image


@pytest.fixture(scope="module")
def small_lr() -> np.ndarray:
    """A 1024 px power-law image degraded x2 with a known Gaussian (variances 2, 2)."""
    return degrade(power_law_image(1024, 11), anisotropic_gaussian(13, 2.0, 2.0, 0.0), 2)


@pytest.mark.parametrize("side", [64, 96])
def test_spectral_fit_ignores_a_gain_on_small_images(small_lr: np.ndarray, side: int) -> None:
    """Below ~112 px some inner polar bins are empty; their made-up log power 0 was read as
    data, so the fit moved with the image's gain (the docstring: "a gain cancels")."""
    crop = small_lr[:side, :side]
    fits = [np.linalg.eigvalsh(spectral_covariance(crop * gain)) for gain in (1.0, 255.0, 1 / 255)]
    np.testing.assert_allclose(fits[1], fits[0], rtol=1e-6)
    np.testing.assert_allclose(fits[2], fits[0], rtol=1e-6)


def test_consensus_survives_a_kernel_with_a_negative_lobe() -> None:
    """A kernel with a positive sum and a large negative lobe had its centre of mass far off
    the canvas: the whole consensus came out NaN with confidence 0."""
    g = gaussian_kernel(13, 1.0)
    bad = g - 0.99 * shift_kernel(g, 0.0, 3.0)
    for kernels in ([g, shift_kernel(g, 0.2, 0.0), gaussian_kernel(13, 1.1), bad], [bad]):
        out = combine(kernels)
        assert np.isfinite(out.kernel).all() and out.kernel.min() >= 0.0
        assert out.kernel.sum() == pytest.approx(1.0)


def test_aligned_psnr_stays_in_its_box() -> None:
    """A grid step that does not divide max_shift reached past it (returned shift −1.2 for a
    box of ±1.1); a step of 0 divided by zero."""
    g = gaussian_kernel(13, 1.0)
    res = aligned_kernel_psnr(shift_kernel(g, 1.1, 1.1), g, max_shift=1.1, step=0.4)
    assert max(abs(t) for t in res.shift) <= 1.1 + 1e-12
    with pytest.raises(ValueError, match="step"):
        aligned_kernel_psnr(g, g, step=0.0)


def test_resynthesis_psnr_names_a_nan_image() -> None:
    """NaN pixels gave ``math domain error`` from deep inside."""
    hr = np.random.default_rng(0).random((64, 64))
    lr = degrade(hr, gaussian_kernel(13, 1.0), 2)
    with pytest.raises(ValueError, match="hr has NaN"):
        lr_resynthesis_psnr(hr * np.nan, lr, gaussian_kernel(13, 1.0), 2)
    with pytest.raises(ValueError, match="lr has NaN"):
        lr_resynthesis_psnr(hr, lr * np.nan, gaussian_kernel(13, 1.0), 2)


def test_mix_covariance_refuses_a_non_square_kernel() -> None:
    """A (13, 11) kernel failed on a broadcast inside."""
    with pytest.raises(ValueError, match="square"):
        mix_covariance(np.ones((13, 11)) / 143, np.diag([1.8, 1.6]), 0.5)


def test_a_nan_prior_is_refused(small_lr: np.ndarray) -> None:
    """NaN passed ``prior < 0``: the calibration took the smallest scale (argmin of NaN)."""
    with pytest.raises(ValueError, match="prior"):
        calibrate_width(small_lr[:128, :128], gaussian_kernel(13, 1.3), prior=float("nan"))
    with pytest.raises(ValueError, match="prior"):
        released_prior(float("nan"), None)


def test_center_kernel_always_clips_and_normalises() -> None:
    """An already-centred kernel came back as given: sum 2, or negative entries kept."""
    g = gaussian_kernel(13, 1.0)
    assert center_kernel(2 * g).sum() == pytest.approx(1.0, abs=1e-12)
    neg = g - 0.01 * (np.arange(169).reshape(13, 13) % 2)
    neg = (neg + neg[::-1, ::-1]) / 2  # symmetric: centred as it is
    out = center_kernel(neg)
    assert out.min() >= 0.0 and out.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(center_kernel(g), g)  # a clean centred kernel: untouched
    with pytest.raises(BadKernelError, match="NaN"):
        center_kernel(g * np.nan)


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def test_generator_metadata_states_its_own_mapping() -> None:
    """The generator said it used the degraders' centred, reflect-padded convention, and a
    non-square generator's size and output shape came from its height only."""
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(4, 1, 7, 3)), rng.normal(size=(1, 4, 1, 1))]
    model = build_generator_model(weights)
    meta = read_metadata(model)
    assert meta["kernel_convention"] == VALID_CONVENTION
    assert meta["kernel_size"] == "7x3"
    out = _run(model, {"hr": rng.random((1, 1, 21, 21), dtype=np.float32)})
    assert out.shape == (1, 1, (21 - 7) // 2 + 1, (21 - 3) // 2 + 1)
    assert "floor((W-3)/2)+1" in model.doc_string


@pytest.mark.parametrize("n_kernels", [1, 3])
def test_pool_model_refuses_another_number_of_kernels(n_kernels: int) -> None:
    """With 3 kernels for 2 images the third was ignored without a word (and with 1 the
    error named a Gather inside the Loop): the model now fails in a node that says why."""
    model = build_pool_model(5, 2)
    rng = np.random.default_rng(0)
    hr = rng.random((2, 1, 12, 12), dtype=np.float32)
    kernels = rng.random((n_kernels, 1, 5, 5), dtype=np.float32)
    with pytest.raises(Exception, match="kernel_rows_must_equal_hr_images"):
        _run(model, {"hr": hr, "kernel": kernels})
    assert _run(model, {"hr": hr, "kernel": kernels[:1].repeat(2, 0)}).shape == (2, 1, 6, 6)


def test_a_shared_kernel_with_a_batch_axis_works_at_every_scale() -> None:
    """(1, h, w) was taken at scales 1-4 (ops.downscale) and refused above (degrade_torch)."""
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64)
    k = torch.from_numpy(gaussian_kernel(5, 1.0))
    for scale in (2, 5):
        torch.testing.assert_close(degrade(x, k[None], scale), degrade(x, k, scale))
