"""``degrade`` against an independent SciPy implementation of the convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from kgengine.degrade import degrade
from kgengine.ops.downscale import reflect_index


def _scipy_degrade(x: np.ndarray, k: np.ndarray, s: int) -> np.ndarray:
    """SciPy: correlate with the kernel's centre at size//2 (mode 'mirror'), keep [::s]."""
    kh, kw = k.shape
    # scipy centres even kernels at size//2 too; origin 0 keeps that
    out = ndimage.correlate(x, k, mode="mirror", origin=(0, 0))
    return out[::s, ::s]


@pytest.mark.parametrize("shape", [(40, 40), (37, 53), (17, 29)])
@pytest.mark.parametrize("ksize", [(13, 13), (5, 7), (4, 4)])
@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_degrade_matches_scipy(shape, ksize, scale):
    rng = np.random.default_rng(hash((shape, ksize, scale)) % 2**32)
    x = rng.random(shape)
    k = rng.random(ksize)
    k /= k.sum()
    np.testing.assert_allclose(degrade(x, k, scale), _scipy_degrade(x, k, scale), atol=1e-12)


def test_degrade_rgb_and_tensor_batch_with_per_image_kernels():
    rng = np.random.default_rng(3)
    x = rng.random((2, 3, 30, 31))
    ks = rng.random((2, 9, 9))
    ks /= ks.sum(axis=(1, 2), keepdims=True)
    y = degrade(torch.from_numpy(x), torch.from_numpy(ks), 2)
    assert y.shape == (2, 3, 15, 16)
    for b in range(2):
        for c in range(3):
            expected = _scipy_degrade(x[b, c], ks[b], 2)
            np.testing.assert_allclose(y[b, c].numpy(), expected, atol=1e-12)
    img = x[0].transpose(1, 2, 0)
    np.testing.assert_allclose(degrade(img, ks[0], 2), y[0].numpy().transpose(1, 2, 0), atol=1e-12)


def test_kernel_larger_than_image_and_size_one():
    rng = np.random.default_rng(4)
    k = rng.random((13, 13))
    k /= k.sum()
    for shape in [(5, 7), (1, 9), (1, 1)]:
        x = rng.random(shape)
        np.testing.assert_allclose(degrade(x, k, 2), _scipy_degrade(x, k, 2), atol=1e-12)


def test_reflect_index_whole_sample():
    assert reflect_index(3, 2, 2).tolist() == [2, 1, 0, 1, 2, 1, 0]
    assert reflect_index(1, 2, 1).tolist() == [0, 0, 0, 0]


def test_impulse_lands_where_the_convention_says():
    """HR impulse at (2i, 2j) appears at LR (i, j) weighted by the kernel's centre."""
    x = np.zeros((20, 20))
    x[8, 10] = 1.0
    k = np.zeros((5, 5))
    k[2, 2], k[1, 2] = 0.75, 0.25
    y = degrade(x, k, 2)
    assert y[4, 5] == pytest.approx(0.75)
    # LR (i, j) reads HR (2i + u - 2, 2j + v - 2): k[1, 2] reads HR row 2i - 1
    x2 = np.zeros((20, 20))
    x2[7, 10] = 1.0
    assert degrade(x2, k, 2)[4, 5] == pytest.approx(0.25)
