"""Crop-sampling maps vs a from-the-formula NumPy reference of the authors' gradient map.

The authors' ``create_gradient_map`` sums the normalised, border-zeroed, clipped ``|gx|`` and
``|gy|`` and the *raw* border-zeroed gradient magnitude, then box-blurs; kgengine 0.1 clipped
the magnitude too (``clip_magnitude=True``), which concentrates crops on the strongest edges.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, signal

from kgengine.probmap import crop_map, crop_probability_maps, gradient_map


def reference_gradient_map(img: np.ndarray, window: int = 5, percent: float = 0.97,
                           clip_magnitude: bool = False) -> np.ndarray:
    grey = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    gx, gy = np.gradient(grey)

    def border(m):
        out = np.zeros_like(m)
        out[window:-window, window:-window] = m[window:-window, window:-window]
        return out

    def clip(m):
        v = np.sort(m.ravel())
        i = int(percent * v.size)
        lo = v[i]
        hi = v[i + 1] if v[i + 1] > lo else lo + 1e-5
        return np.clip(m, lo, hi) - lo

    terms = [clip(border(np.abs(gx))), clip(border(np.abs(gy)))]
    mag = border(np.sqrt(gx**2 + gy**2))
    terms.append(clip(mag) if clip_magnitude else mag)
    total = sum(t / t.sum() for t in terms)
    # box blur with zero padding, as scipy.signal.convolve2d(..., 'same') / window²
    blurred = signal.convolve2d(total, np.ones((window, window)), mode="same") / window**2
    return blurred / blurred.mean()


@pytest.mark.parametrize("clip_magnitude", [False, True])
@pytest.mark.parametrize("shape", [(40, 57), (64, 64)])
def test_gradient_map_matches_the_formula(shape, clip_magnitude):
    rng = np.random.default_rng(1)
    img = rng.random((*shape, 3))
    img[:, shape[1] // 2 :] += 0.5  # one strong vertical edge
    ref = reference_gradient_map(img, clip_magnitude=clip_magnitude)
    out = gradient_map(img, clip_magnitude=clip_magnitude)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-12)


def test_raw_magnitude_spreads_crops_beyond_the_strongest_edges():
    rng = np.random.default_rng(2)
    img = np.repeat(rng.random((96, 96, 1)) * 0.2, 3, axis=2)  # texture
    img[:, 48:] += 0.6  # plus one strong edge
    raw = crop_probability_maps(img, 64, 26)[1]
    clipped = crop_probability_maps(img, 64, 26, clip_magnitude=True)[1]
    np.testing.assert_allclose([raw.sum(), clipped.sum()], 1.0)
    # the raw magnitude term gives the textured left half more mass than the clipped one
    assert raw[:, :36].sum() > clipped[:, :36].sum()


def _stepwise_gradient_map(img, window=5, percent=0.97, clip_magnitude=False):
    """The gradient map one fresh array per step and a full sort for the quantile (kgengine
    0.9.17's code): :func:`gradient_map` works in place and must give the same bits."""
    def border(m):
        out = np.zeros_like(m)
        if m.shape[0] > 2 * window and m.shape[1] > 2 * window:
            out[window:-window, window:-window] = m[window:-window, window:-window]
        return out

    def clip(m):
        flat = np.sort(m.ravel())
        pivot = min(int(percent * flat.size), flat.size - 2)
        lo = flat[pivot]
        hi = flat[pivot + 1] if flat[pivot + 1] > lo else lo + 1e-5
        return np.clip(m, lo, hi) - lo

    grey = img @ np.array([0.299, 0.587, 0.114])
    gx, gy = np.gradient(grey)
    total = np.zeros_like(grey)
    for i, m in enumerate([np.abs(gx), np.abs(gy), np.sqrt(gx**2 + gy**2)]):
        m = border(m)
        if i < 2 or clip_magnitude:
            m = clip(m)
        if m.sum() > 0:
            total += m / m.sum()
    total = ndimage.uniform_filter(total, size=window, mode="constant")
    mean = total.mean()
    return total / mean if mean > 0 else np.ones_like(total)


def _stepwise_crop_map(loss_map, crop):
    half = max(crop // 2, 1)
    blurred = ndimage.uniform_filter(loss_map, size=half, mode="constant")
    prob = np.zeros_like(blurred)
    if blurred.shape[0] > 2 * half and blurred.shape[1] > 2 * half:
        prob[half:-half, half:-half] = blurred[half:-half, half:-half]
    total = prob.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(loss_map.shape, 1.0 / loss_map.size)
    return prob / total


def _images():
    rng = np.random.default_rng(7)
    edge = rng.random((61, 83, 3))
    edge[:, 40:] += 0.5
    ties = np.round(rng.random((48, 50, 3)) * 4) / 4  # many equal gradients: ties at q
    return {"random": rng.random((64, 64, 3)), "odd, with an edge": edge / 1.5, "ties": ties,
            "flat": np.full((40, 40, 3), 0.5), "tiny": rng.random((9, 12, 3)),
            "one row of texture": np.pad(rng.random((1, 70, 3)), ((20, 20), (0, 0), (0, 0)))}


@pytest.mark.parametrize("clip_magnitude", [False, True])
@pytest.mark.parametrize("name", list(_images()))
def test_maps_in_place_are_the_stepwise_bits(name, clip_magnitude):
    """The in-place gradient and crop maps equal the step-by-step arrays bit for bit (random,
    odd sizes, ties at the quantile, a flat image, an image under 2 windows a side)."""
    img = _images()[name]
    ref = _stepwise_gradient_map(img, clip_magnitude=clip_magnitude)
    out = gradient_map(img, clip_magnitude=clip_magnitude)
    assert out.dtype == ref.dtype and np.array_equal(out, ref)
    for crop in (26, 64, 1):
        assert np.array_equal(crop_map(ref, crop), _stepwise_crop_map(ref, crop))
