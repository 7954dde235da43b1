"""Kernel math: x4 identity, centring, clean-up, Gaussians."""

from __future__ import annotations

import numpy as np
import pytest

from kgengine.api import kernel_stats
from kgengine.degrade import degrade
from kgengine.kernel import (
    analytic_x4,
    anisotropic_gaussian,
    axis_difference,
    center_kernel,
    center_of_mass,
    clean_kernel,
    gaussian_kernel,
    principal_axes,
    shift_kernel,
    shrink_elongation,
)


def test_x4_identity_degrade_twice_equals_once(aniso_kernel):
    """(x ⋆ k2)↓2 twice == (x ⋆ k4)↓4 away from the borders."""
    rng = np.random.default_rng(0)
    x = rng.random((96, 104, 3))
    k4 = analytic_x4(aniso_kernel)
    assert k4.shape == (37, 37)
    assert k4.sum() == pytest.approx(1.0)
    twice = degrade(degrade(x, aniso_kernel, 2), aniso_kernel, 2)
    once = degrade(x, k4, 4)
    assert twice.shape == once.shape == (24, 26, 3)
    m = 6  # border rows/cols (LR x4 px) that see reflected pixels differently
    np.testing.assert_allclose(twice[m:-m, m:-m], once[m:-m, m:-m], rtol=0, atol=1e-12)
    assert center_of_mass(k4) == pytest.approx((18.0, 18.0), abs=1e-9)


@pytest.mark.parametrize("shape", [(5, 5), (4, 4), (6, 5), (8, 3)])
def test_x4_identity_non_symmetric_kernel(shape):
    """Also for even sides (one HR pixel off before 0.9.26)."""
    rng = np.random.default_rng(1)
    k2 = rng.random(shape)
    k2 /= k2.sum()
    x = rng.random((64, 64))
    k4 = analytic_x4(k2)
    assert k4.shape == tuple(3 * (n + 1 - n % 2) - 2 for n in shape)
    once = degrade(x, k4, 4)
    twice = degrade(degrade(x, k2, 2), k2, 2)
    np.testing.assert_allclose(twice[6:-6, 6:-6], once[6:-6, 6:-6], atol=1e-12)


def test_gaussian_centre_and_covariance():
    k = anisotropic_gaussian(31, 2.0, 0.7, np.pi / 5)
    assert k.sum() == pytest.approx(1.0)
    assert center_of_mass(k) == pytest.approx((15.0, 15.0), abs=1e-9)
    yy, xx = np.mgrid[0:31, 0:31] - 15.0
    cov = np.array([[np.sum(k * xx * xx), np.sum(k * xx * yy)],
                    [np.sum(k * xx * yy), np.sum(k * yy * yy)]])
    c, s = np.cos(np.pi / 5), np.sin(np.pi / 5)
    rot = np.array([[c, -s], [s, c]])
    np.testing.assert_allclose(cov, rot @ np.diag([2.0, 0.7]) @ rot.T, atol=1e-6)
    np.testing.assert_allclose(gaussian_kernel(13, 1.3), gaussian_kernel(13, 1.3).T)


def test_center_kernel_moves_centre_of_mass():
    k = shift_kernel(gaussian_kernel(13, 1.2), 0.5, -0.7)
    c = center_kernel(k)
    assert c.shape == (13, 13) and c.sum() == pytest.approx(1.0) and (c >= 0).all()
    assert center_of_mass(c) == pytest.approx((6.0, 6.0), abs=0.02)


def test_clean_kernel_keeps_40_largest_region():
    rng = np.random.default_rng(2)
    k = gaussian_kernel(13, 1.5) + 1e-4 * rng.standard_normal((13, 13))
    c = clean_kernel(k, 40)
    assert c.sum() == pytest.approx(1.0) and (c >= 0).all()
    assert (c > 0).sum() <= 60  # the 40 largest and their near-ties survive
    pivot = np.sort(k.ravel())[-41]
    expected = np.clip(k - 0.75 * pivot, 0, None)
    np.testing.assert_allclose(c, expected / expected.sum())


@pytest.mark.parametrize("theta", [0.0, np.pi / 5, np.pi / 2, 2.5])
def test_principal_axes_invert_anisotropic_gaussian(theta):
    """Closed form: the second moments of a sampled Gaussian on a wide canvas are its Σ."""
    v1, v2, t = principal_axes(anisotropic_gaussian(41, 4.0, 1.0, theta))
    assert (v1, v2) == pytest.approx((4.0, 1.0), rel=1e-6)
    assert axis_difference(t, theta) == pytest.approx(0.0, abs=1e-6)


def test_principal_axes_transpose_mirrors_the_axis():
    """Transposing a kernel swaps rows and columns: the axis θ becomes π/2 − θ."""
    k = anisotropic_gaussian(41, 5.0, 0.6, np.pi / 8)
    _, _, t = principal_axes(k.T)
    assert axis_difference(t, np.pi / 2 - np.pi / 8) == pytest.approx(0.0, abs=1e-6)


def test_axis_difference_is_sign_free():
    assert axis_difference(0.1, np.pi - 0.1) == pytest.approx(0.2)
    assert axis_difference(0.0, np.pi / 2) == pytest.approx(np.pi / 2)
    assert axis_difference(3 * np.pi + 0.3, 0.3) == pytest.approx(0.0, abs=1e-12)


def test_report_axes_of_a_known_kernel():
    """The report's axes of an anisotropic Gaussian are its variances and angle."""
    axes = kernel_stats(anisotropic_gaussian(41, 3.0, 1.2, np.radians(120)))["axes"]
    assert axes == pytest.approx({"var_long": 3.0, "var_short": 1.2, "theta_deg": 120.0},
                                 rel=1e-6)


@pytest.mark.parametrize("theta", [0.0, 0.4, np.pi / 2, 2.5])
@pytest.mark.parametrize("power", [0.0, 0.4, 0.5])
def test_shrink_elongation_closed_form(theta, power):
    """Σ = R diag(4, 1) Rᵀ -> λi' = g^(1-β) λi^β with g = 2: same axis, det and centre."""
    out = shrink_elongation(anisotropic_gaussian(31, 4.0, 1.0, theta), power)
    v1, v2, t = principal_axes(out)
    assert (v1, v2) == pytest.approx((2.0 * 2.0**power, 2.0 * 0.5**power), rel=2e-3)
    if power > 0:
        assert axis_difference(t, theta) == pytest.approx(0.0, abs=2e-3)
    assert out.sum() == pytest.approx(1.0)
    assert center_of_mass(out) == pytest.approx((15.0, 15.0), abs=1e-6)
    assert out.min() >= 0.0


def test_shrink_elongation_identities():
    k = anisotropic_gaussian(13, 3.0, 1.0, 0.7) + 1e-3 * np.eye(13)
    k /= k.sum()
    assert shrink_elongation(k, 1.0).tobytes() == k.tobytes()  # β = 1: the kernel itself
    iso = gaussian_kernel(13, 1.3)
    np.testing.assert_allclose(shrink_elongation(iso, 0.4), iso, atol=1e-12)
    delta = np.zeros((13, 13))
    delta[6, 6] = 1.0
    assert shrink_elongation(delta, 0.4).tobytes() == delta.tobytes()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="power"):
            shrink_elongation(k, bad)


def test_shrink_elongation_commutes_with_x4():
    """Σ4 = 5·Σ2 under analytic_x4, so shrinking k2 then deriving x4 is shrinking k4."""
    k2 = anisotropic_gaussian(13, 3.0, 0.8, 1.1)
    a = analytic_x4(shrink_elongation(k2, 0.4))
    b = shrink_elongation(analytic_x4(k2), 0.4)
    assert np.abs(a - b).max() < 2e-2 * a.max()  # spline warps of a 13- vs a 37-px grid
    assert principal_axes(a) == pytest.approx(principal_axes(b), rel=1e-2)
