"""Crop-sampling maps vs a from-the-formula NumPy reference of the authors' gradient map.

The authors' ``create_gradient_map`` sums the normalised, border-zeroed, clipped ``|gx|`` and
``|gy|`` and the *raw* border-zeroed gradient magnitude, then box-blurs; kgengine 0.1 clipped
the magnitude too (``clip_magnitude=True``), which concentrates crops on the strongest edges.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from kgengine.probmap import crop_probability_maps, gradient_map


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
