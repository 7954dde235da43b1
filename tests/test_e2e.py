"""End to end: recover a known, clearly anisotropic kernel from an LR image alone.

The bundled HR crop (Urban100 urban_010, 320x320) is degraded x2 with an anisotropic
Gaussian (axis variances 5.0 and 0.6, long axis vertical) and 8-bit quantised; KernelGAN,
trained on the LR image only, must beat the fixed isotropic σ = 1.3 Gaussian on aligned
kernel PSNR. Three seeds train as one batch; the *median* must win by a margin, so the test
does not hinge on one run (KernelGAN's run-to-run variance is its best-known weakness).
1500 iterations (half the paper's schedule) keep the test near a minute on 2 cores; on this
image the estimates then score 43.9 / 42.0 / 42.5 dB (seeds 0-2, kgengine 0.9.3's trainer on
an AVX2 host) against the isotropic baseline's 41.5 dB: the median clears the margin only
just.
"""

from __future__ import annotations

import numpy as np
import pytest

from kgengine.api import estimate_kernels
from kgengine.config import KernelGANConfig
from kgengine.degrade import degrade
from kgengine.kernel import anisotropic_gaussian, center_of_mass, gaussian_kernel
from kgengine.metrics import aligned_kernel_psnr


@pytest.mark.slow
def test_recovers_anisotropic_kernel_better_than_isotropic(sample_hr):
    k_true = anisotropic_gaussian(13, 5.0, 0.6, np.pi / 2)
    lr = (np.round(degrade(sample_hr, k_true, 2) * 255) / 255).astype(np.float32)
    # KernelGAN's own recovery, so the width calibration and the spectral mix are off (on this
    # small image, 160 px, and very elongated kernel, 8.3:1, the calibration widens the
    # kernels and loses 1.2-3.0 dB: README, limits)
    results = estimate_kernels([lr] * 3, seeds=[0, 1, 2], iters=1500, device="cpu",
                               config=KernelGANConfig(width_calibration=False, spectral_mix=0.0))
    iso = aligned_kernel_psnr(gaussian_kernel(13, 1.3), k_true).psnr
    scores = [aligned_kernel_psnr(r.kernel_x2, k_true).psnr for r in results]
    assert np.median(scores) > iso + 1.0, (scores, iso)
    for r in results:
        k = r.kernel_x2
        assert k.shape == (13, 13) and k.sum() == pytest.approx(1.0) and (k >= 0).all()
        assert center_of_mass(k) == pytest.approx((6.0, 6.0), abs=0.05)
    # the long axis is recovered: the mean estimate spreads more along rows than columns
    mean_k = np.mean([r.kernel_x2 for r in results], axis=0)
    offsets = np.arange(13) - 6.0
    var_rows = float(mean_k.sum(axis=1) @ offsets**2)
    var_cols = float(mean_k.sum(axis=0) @ offsets**2)
    assert var_rows > 1.5 * var_cols, (var_rows, var_cols)
