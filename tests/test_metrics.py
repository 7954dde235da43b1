"""Kernel PSNR, aligned kernel PSNR and LR re-synthesis PSNR against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kgengine.degrade import degrade
from kgengine.kernel import anisotropic_gaussian, bicubic_taps_x2, gaussian_kernel
from kgengine.metrics import (
    PSNR_CAP,
    aligned_kernel_psnr,
    blur_reflect,
    common_size,
    kernel_psnr,
    lr_resynthesis_psnr,
    pad_to,
    psnr_from_mse,
)


def gaussian_at(size: int, var1: float, var2: float, theta: float, dy: float, dx: float):
    """Anisotropic Gaussian sampled with its mean at (c + dy, c + dx): an exact sub-pixel shift."""
    c = size // 2
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([var1, var2]) @ rot.T)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    pts = np.stack([xx - c - dx, yy - c - dy], axis=-1)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, inv, pts))
    return k / k.sum()


# ---------------------------------------------------------------------------- psnr basics
def test_psnr_from_mse_closed_form_and_cap():
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    assert psnr_from_mse(1e-4) == pytest.approx(40.0)
    assert psnr_from_mse(0.0) == PSNR_CAP
    assert psnr_from_mse(1e-30) == PSNR_CAP


def test_identical_kernels_give_the_cap(aniso_kernel):
    assert kernel_psnr(aniso_kernel, aniso_kernel) == PSNR_CAP
    # normalisation: a scaled copy is the same kernel
    assert kernel_psnr(3.0 * aniso_kernel, aniso_kernel) == PSNR_CAP
    assert aligned_kernel_psnr(aniso_kernel, aniso_kernel).psnr == PSNR_CAP


def test_kernel_psnr_hand_computed():
    # a: delta at the centre; b: half of the mass moved one pixel right.
    a = np.zeros((5, 5))
    a[2, 2] = 1.0
    b = np.zeros((5, 5))
    b[2, 2] = b[2, 3] = 0.5
    # SSE = 0.5² + 0.5² = 0.5 on a 5x5 canvas -> MSE = 0.02
    assert kernel_psnr(b, a) == pytest.approx(20 * math.log10(1 / math.sqrt(0.02)))
    # explicit larger canvas: MSE = 0.5 / 49
    assert kernel_psnr(b, a, size=7) == pytest.approx(20 * math.log10(7 / math.sqrt(0.5)))
    # the plain metric is symmetric
    assert kernel_psnr(a, b) == pytest.approx(kernel_psnr(b, a))


def test_kernel_psnr_pads_to_a_common_centred_size():
    small = np.zeros((3, 3))
    small[1, 1] = 1.0
    big = np.zeros((7, 7))
    big[3, 3] = 1.0
    assert kernel_psnr(small, big) == PSNR_CAP
    # constant difference of 0.01 on 4 known entries of a 9x9 canvas (after normalisation)
    g = gaussian_kernel(9, 1.2)
    e = g.copy()
    e[0, 0] += 0.01
    e[8, 8] += 0.01
    e[0, 8] -= 0.01
    e[8, 0] -= 0.01  # sum unchanged
    expected = 20 * math.log10(1 / math.sqrt(4 * 0.01**2 / 81))
    assert kernel_psnr(e, g) == pytest.approx(expected)


def test_canvas_too_small_is_refused():
    with pytest.raises(ValueError, match="canvas"):
        kernel_psnr(gaussian_kernel(13, 1.0), gaussian_kernel(11, 1.0), size=11)


@pytest.mark.parametrize("bad", [np.zeros((5, 5)), np.ones(5), np.full((3, 3), np.nan)])
def test_bad_kernels_raise(bad):
    with pytest.raises(ValueError):
        kernel_psnr(bad, gaussian_kernel(5, 1.0))


@pytest.mark.parametrize("shape", [(13, 13), (11, 11), (8, 8), (7, 4)])
def test_pad_to_keeps_degrade_unchanged(shape):
    """pad_to places index h//2 at S//2: the padded kernel degrades exactly like the original."""
    rng = np.random.default_rng(1)
    k = rng.random(shape)
    k /= k.sum()
    size = common_size(k) + 4
    x = rng.random((40, 36, 3))
    for s in (1, 2):
        np.testing.assert_allclose(degrade(x, pad_to(k, size), s), degrade(x, k, s), atol=1e-12)


def test_common_size_of_even_kernel():
    assert common_size(np.ones((8, 8))) == 9
    assert common_size(np.ones((11, 11)), np.ones((13, 13))) == 13


# ---------------------------------------------------------------------------- alignment
def test_integer_shift_is_undone_by_the_aligned_metric():
    gt = anisotropic_gaussian(15, 3.0, 1.0, 0.4)
    est = np.zeros_like(gt)
    est[1:, :-1] = gt[:-1, 1:]  # down 1, left 1 (the dropped edge is ~1e-9)
    plain = kernel_psnr(est, gt)
    al = aligned_kernel_psnr(est, gt)
    assert plain < 50
    assert al.psnr > 95
    assert al.shift == pytest.approx((-1.0, 1.0), abs=0.02)


def test_subpixel_shift_is_undone_by_the_aligned_metric():
    gt = gaussian_at(13, 2.5, 1.2, 0.7, 0.0, 0.0)
    est = gaussian_at(13, 2.5, 1.2, 0.7, 0.5, -0.25)  # true shift (+0.5, -0.25)
    plain = kernel_psnr(est, gt)
    al = aligned_kernel_psnr(est, gt)
    assert al.shift == pytest.approx((-0.5, 0.25), abs=0.03)
    assert al.psnr > plain + 15.0
    assert al.psnr > 60.0


def test_aligned_is_never_below_plain_and_respects_max_shift():
    rng = np.random.default_rng(2)
    for _ in range(5):
        a = rng.random((9, 9)) ** 4
        b = rng.random((11, 11)) ** 4
        assert aligned_kernel_psnr(a, b).psnr >= kernel_psnr(a, b) - 1e-9
    gt = gaussian_at(21, 1.0, 1.0, 0.0, 0.0, 0.0)
    far = gaussian_at(21, 1.0, 1.0, 0.0, 3.0, 0.0)
    res = aligned_kernel_psnr(far, gt, max_shift=1.5)
    assert abs(res.shift[0]) <= 1.5 + 1e-9
    assert res.psnr < aligned_kernel_psnr(far, gt, max_shift=3.5).psnr - 10


def test_bicubic_half_pixel_offset_is_removed_by_alignment():
    taps = bicubic_taps_x2()
    bic = np.outer(taps, taps)  # centre of mass 3.5: half a pixel up-left of index 4
    shifted = np.zeros((9, 9))
    shifted[1:, 1:] = bic  # the same kernel, centre of mass at 4.5
    res = aligned_kernel_psnr(bic, shifted)
    assert res.shift == pytest.approx((1.0, 1.0), abs=0.02)
    assert res.psnr > 95


# ---------------------------------------------------------------------------- re-synthesis
@pytest.mark.parametrize("kshape", [(13, 13), (8, 8), (37, 37)])
def test_blur_reflect_equals_degrade_stride_1(kshape):
    rng = np.random.default_rng(3)
    k = rng.random(kshape)
    x = rng.random((45, 38, 3))
    np.testing.assert_allclose(blur_reflect(x, k), degrade(x, k, 1), atol=1e-12)
    np.testing.assert_allclose(blur_reflect(x[..., 0], k), degrade(x[..., 0], k, 1), atol=1e-12)


@pytest.mark.parametrize("scale", [2, 4])
def test_resynthesis_true_kernel_is_exact_and_finds_the_phase(sample_hr, scale):
    hr = sample_hr[:200, :160].astype(np.float64)
    k = anisotropic_gaussian(13, 3.0, 1.0, 0.5)
    blurred = degrade(hr, k, 1)
    lr = degrade(hr, k, scale)
    res = lr_resynthesis_psnr(hr, lr, k, scale)
    assert res.psnr == PSNR_CAP
    assert res.offset == (0, 0)
    # an LR image sampled at another phase: L[i, j] = B[s·i + 1, s·j − 1] (column 0 is
    # outside the image and inside the shaved border)
    h, w = lr.shape[:2]
    off = np.zeros_like(lr)
    off[:, 1:] = blurred[1::scale, scale - 1 :: scale][:h, : w - 1]
    res = lr_resynthesis_psnr(hr, off, k, scale)
    assert res.psnr == PSNR_CAP
    assert res.offset == (1, -1)


def test_resynthesis_ceiling_is_the_8bit_quantisation(sample_hr):
    hr = sample_hr.astype(np.float64)
    k = anisotropic_gaussian(11, 2.0, 1.0, 0.3)
    lr8 = np.round(degrade(hr, k, 2) * 255) / 255
    ceiling = lr_resynthesis_psnr(hr, lr8, k, 2).psnr
    # uniform quantisation error of 1/255: MSE = 1 / (12 · 255²) -> 58.9 dB
    assert ceiling == pytest.approx(10 * math.log10(12 * 255**2), abs=0.5)
    worse = lr_resynthesis_psnr(hr, lr8, gaussian_kernel(13, 0.5), 2).psnr
    assert worse < ceiling - 10


def test_resynthesis_hand_computed_constant_offset():
    # blurred image of a constant is the constant; an LR off by 0.1 everywhere gives 20 dB
    hr = np.full((64, 64, 3), 0.5)
    lr = np.full((32, 32, 3), 0.6)
    res = lr_resynthesis_psnr(hr, lr, gaussian_kernel(13, 1.3), 2)
    assert res.psnr == pytest.approx(20.0)


def test_resynthesis_rejects_bad_shapes():
    with pytest.raises(ValueError, match="larger"):
        lr_resynthesis_psnr(np.zeros((40, 40, 3)), np.zeros((30, 30, 3)), np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match="layouts"):
        lr_resynthesis_psnr(np.zeros((40, 40, 3)), np.zeros((20, 20)), np.ones((3, 3)), 2)
