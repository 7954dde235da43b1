"""Images that follow the spectral model of kgengine.width / kgengine.spectral, shared by
their tests."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate


def power_law_image(n: int, seed: int, alpha: float = 2.0) -> np.ndarray:
    """(n, n) Gaussian random field with power spectrum ∝ |f|^-alpha: scale invariant, the
    model's assumption about the HR image."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    amp = np.where(f > 0, np.maximum(f, 1.0 / n) ** (-alpha / 2), 0.0)
    img = np.fft.ifft2(amp * np.fft.fft2(rng.standard_normal((n, n)))).real
    return (img - img.min()) / (img.max() - img.min())


def degrade(hr: np.ndarray, k: np.ndarray, scale: int) -> np.ndarray:
    """``(HR ∗ k)↓2`` once (x2) or twice (x4, kgengine's analytic x4)."""
    out = hr
    for _ in range(scale // 2):
        out = correlate(out, k, mode="reflect")[::2, ::2]
    return out
