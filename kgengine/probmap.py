"""Crop-sampling probability maps: crops are drawn where the image has gradients.

Following the authors (``create_gradient_map`` / ``create_probability_map``):

1. grey image -> ``gx, gy = np.gradient``; three maps ``|gx|``, ``|gy|``, ``sqrt(gx²+gy²)``,
   each with a zeroed border of ``window`` px; ``|gx|`` and ``|gy|`` are clipped to
   ``[q, q + eps]`` above their ``percent`` quantile ``q`` (then shifted to start at 0), so
   they mark *where* there are strong edges; the magnitude is used raw, as the authors'
   code does (it computes a clipped magnitude and never uses it; ``clip_magnitude=True``
   clips it too, kgengine 0.1's behaviour);
2. the three maps, each normalised to sum 1, are added and box-blurred (``window``);
3. the crop map is that map box-blurred with ``crop//2``, with a zeroed border of
   ``crop//2`` (crops are not favoured near the borders), normalised to sum 1.

D's map is computed on the image itself; G's on its x2 bicubic downscale, upsampled back
by nearest neighbour, so that both crops see comparable content. An image with no
gradients gets a uniform map. All arrays are float64 NumPy, (H, W).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from kgengine.kernel import bicubic_taps_x2


def _zero_border(m: np.ndarray, edge: int) -> np.ndarray:
    out = np.zeros_like(m)
    if edge == 0:
        return m.copy()
    if m.shape[0] > 2 * edge and m.shape[1] > 2 * edge:
        out[edge:-edge, edge:-edge] = m[edge:-edge, edge:-edge]
    return out


def _clip_extreme(m: np.ndarray, percent: float) -> np.ndarray:
    flat = np.sort(m.ravel())
    pivot = min(int(percent * flat.size), flat.size - 2)
    v_min = flat[pivot]
    v_max = flat[pivot + 1] if flat[pivot + 1] > v_min else v_min + 1e-5
    return np.clip(m, v_min, v_max) - v_min


def gradient_map(img: np.ndarray, window: int = 5, percent: float = 0.97,
                 clip_magnitude: bool = False) -> np.ndarray:
    """Smoothed gradient map of an (H, W, 3) image, mean 1 (or all ones for a flat image).

    ``Σ_m m/Σm`` over ``m`` = clipped ``|gx|``, clipped ``|gy|`` and ``|∇|`` (raw unless
    ``clip_magnitude``), each border-zeroed, then box-blurred over ``window``.
    """
    grey = img @ np.array([0.299, 0.587, 0.114])
    gx, gy = np.gradient(grey)
    maps = [np.abs(gx), np.abs(gy), np.sqrt(gx**2 + gy**2)]
    total = np.zeros_like(grey)
    for i, m in enumerate(maps):
        m = _zero_border(m, window)
        if i < 2 or clip_magnitude:
            m = _clip_extreme(m, percent)
        if m.sum() > 0:
            total += m / m.sum()
    total = ndimage.uniform_filter(total, size=window, mode="constant")
    mean = total.mean()
    return total / mean if mean > 0 else np.ones_like(total)


def crop_map(loss_map: np.ndarray, crop: int) -> np.ndarray:
    """Probability (sum 1) of each pixel being a crop centre, from a gradient map."""
    half = max(crop // 2, 1)
    blurred = ndimage.uniform_filter(loss_map, size=half, mode="constant")
    prob = _zero_border(blurred, half)
    total = prob.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(loss_map.shape, 1.0 / loss_map.size)
    return prob / total


def half_scale(img: np.ndarray) -> np.ndarray:
    """x2 bicubic downscale (MATLAB ``imresize(im, 0.5)``-like, reflected borders)."""
    taps = bicubic_taps_x2()
    out = ndimage.correlate1d(img, taps, axis=0, mode="reflect", origin=-1)[::2]
    return ndimage.correlate1d(out, taps, axis=1, mode="reflect", origin=-1)[:, ::2]


def crop_probability_maps(
    img: np.ndarray, g_crop: int, d_crop: int, window: int = 5, percent: float = 0.97,
    clip_magnitude: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(G map, D map), each (H, W) summing to 1, for an (H, W, 3) image with even H, W."""
    h, w = img.shape[:2]
    d_map = crop_map(gradient_map(img, window, percent, clip_magnitude), d_crop)
    small = gradient_map(half_scale(img), window, percent, clip_magnitude)
    big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)[:h, :w]
    if big.shape != (h, w):
        big = np.pad(big, ((0, h - big.shape[0]), (0, w - big.shape[1])), mode="edge")
    g_map = crop_map(big, g_crop)
    return g_map, d_map
