"""Combining restarts: identical kernels, a rejected outlier, shifted copies, confidence order."""

from __future__ import annotations

import numpy as np
import pytest

from kgengine.consensus import combine
from kgengine.kernel import anisotropic_gaussian, center_kernel, center_of_mass, shift_kernel
from kgengine.metrics import kernel_psnr


def gauss(v1: float, v2: float, theta: float = 0.3, size: int = 13) -> np.ndarray:
    return anisotropic_gaussian(size, v1, v2, theta)


@pytest.mark.parametrize("rule", ["mean", "medoid"])
@pytest.mark.parametrize("k_count", [1, 4])
def test_identical_kernels_give_that_kernel(rule, k_count):
    k = gauss(3.0, 1.0)
    res = combine([k.copy() for _ in range(k_count)], rule)
    np.testing.assert_allclose(res.kernel, center_kernel(k), atol=1e-12)
    assert res.confidence == pytest.approx(1.0)
    assert res.inliers == tuple(range(k_count))


def test_known_outlier_is_rejected():
    good = [gauss(3.0, 1.0), gauss(3.2, 1.1), gauss(2.9, 0.95)]
    outlier = gauss(0.3, 0.3, 0.0)  # a near-delta: a collapsed restart
    res = combine(good + [outlier], "mean")
    assert 3 not in res.inliers and res.medoid != 3
    expected = np.mean([center_kernel(k) for k in good], axis=0)
    np.testing.assert_allclose(res.kernel, expected, atol=1e-9)
    with_outlier = np.mean([center_kernel(k) for k in good + [outlier]], axis=0)
    assert np.abs(res.kernel - expected).max() < np.abs(with_outlier - expected).max()


def test_shifted_copies_are_aligned():
    k = np.pad(gauss(2.5, 1.2), 3)  # room to shift
    copies = [shift_kernel(k, dy, dx) for dy, dx in [(0, 0), (1.0, -1.0), (0.4, 0.7), (-1.3, 0.2)]]
    res = combine(copies)
    assert res.confidence > 0.999
    cy, cx = center_of_mass(res.kernel)
    assert (cy, cx) == pytest.approx((res.kernel.shape[0] // 2, res.kernel.shape[1] // 2),
                                     abs=1e-6)
    # spline shifts are accurate to ~1 % of the peak here; an unaligned mean is far worse
    ref = center_kernel(k)
    unaligned = np.mean(copies, axis=0)
    assert kernel_psnr(res.kernel, ref) > 70.0 > kernel_psnr(unaligned, ref) + 10.0


def test_confidence_orders_agreement():
    tight = [gauss(3.0, 1.0), gauss(3.1, 1.05), gauss(2.95, 0.98), gauss(3.05, 1.02)]
    loose = [gauss(3.0, 1.0), gauss(4.0, 1.5), gauss(2.0, 0.7), gauss(3.5, 0.8, 1.2)]
    broken = tight[:2] + [gauss(0.3, 0.3), gauss(0.3, 4.5, 1.5)]
    c = [combine(s).confidence for s in (tight, loose, broken)]
    assert c[0] > c[1] > c[2] and 0.0 <= c[2] and c[0] <= 1.0 + 1e-12


def test_bad_input():
    with pytest.raises(ValueError, match="rule"):
        combine([gauss(1, 1)], "vote")
    with pytest.raises(ValueError, match="no kernels"):
        combine([])
    with pytest.raises(ValueError, match="restart 1"):
        combine([gauss(1, 1), np.full((13, 13), np.nan)])
