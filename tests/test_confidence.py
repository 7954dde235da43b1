"""The confidence of 0.9.7 (:mod:`kgengine.confidence`): closed form and ordering on
constructed cases, and what ``estimate_kernels`` reports."""

from __future__ import annotations

import numpy as np
import pytest

from kgengine.api import estimate_kernels
from kgengine.confidence import (
    ELONGATION_EXPONENT,
    HALF_SCORE,
    agreement_score,
    confidence_of,
    spectral_confidence,
)
from kgengine.config import KernelGANConfig
from kgengine.kernel import anisotropic_gaussian, gaussian_kernel, pad_to
from kgengine.spectral import gaussian_of, spectral_covariance
from tests.synthetic import degrade, power_law_image


def test_closed_form():
    assert confidence_of(0.0, 1.0) == 1.0
    assert confidence_of(HALF_SCORE, 1.0) == pytest.approx(0.5, abs=1e-15)
    d, e = 0.07, 1.8
    assert confidence_of(d, e) == pytest.approx(1 / (1 + d * e**ELONGATION_EXPONENT / HALF_SCORE),
                                                rel=1e-15)
    # the same kernel on any canvas: distance 0, and a round kernel's elongation is 1
    g = gaussian_kernel(13, 1.3)
    dist, elong = agreement_score(g, pad_to(g, 17), g)
    assert dist == 0.0 and elong == pytest.approx(1.0, abs=1e-9)
    assert spectral_confidence(g, pad_to(g, 17), g) == pytest.approx(1.0, abs=1e-9)
    # the distance is the plain L2 norm on the common canvas
    h = gaussian_kernel(13, 1.6)
    assert agreement_score(h, g, g)[0] == pytest.approx(np.linalg.norm(h - g), rel=1e-12)


def test_ordering_on_constructed_cases():
    g = gaussian_kernel(13, 1.3)
    # the further KernelGAN's kernel is from the spectrum's Gaussian, the lower
    far = [spectral_confidence(gaussian_kernel(13, s), g, g) for s in (1.3, 1.4, 1.6, 2.0)]
    assert far[0] == pytest.approx(1.0) and all(a > b for a, b in zip(far, far[1:], strict=False))
    # at one distance, the more elongated the saved kernel, the lower
    k = gaussian_kernel(13, 1.5)
    saved = [anisotropic_gaussian(13, 1.7**2 * r, 1.7**2 / r, 0.3) for r in (1.0, 1.5, 2.5)]
    by_elong = [spectral_confidence(k, g, s) for s in saved]
    assert all(a > b for a, b in zip(by_elong, by_elong[1:], strict=False))
    # a kernel KernelGAN got wrong (another axis) scores below one it got right
    truth = anisotropic_gaussian(13, 3.0, 1.0, 0.5)
    wrong = anisotropic_gaussian(13, 3.0, 1.0, 0.5 + np.pi / 2)
    assert spectral_confidence(truth, truth, truth) > spectral_confidence(wrong, truth, truth)


def test_estimate_reports_the_spectral_confidence():
    # a power-law image blurred by a known Gaussian: the result's confidence is the formula
    # of its report's terms, the terms are those of KernelGAN's kernel before the mix and the
    # spectrum's Gaussian (recomputed here from the unmixed kernel of spectral_mix=0), and
    # spectral_confidence=False gives 0.9.6's: None for one run
    k_true = anisotropic_gaussian(13, 2.2, 0.9, 0.4)
    lr = degrade(power_law_image(260, seed=3), k_true, 2)
    rgb = np.repeat(lr[..., None], 3, axis=2).astype(np.float32)
    kw = {"seeds": [1], "iters": 300, "device": "cpu"}
    (res,) = estimate_kernels([rgb], **kw)
    assert not res.report["collapsed"]  # G's kernel has grown (at 60 iterations it had not)
    terms = res.report["confidence_terms"]
    assert res.confidence == res.report["confidence"] == confidence_of(
        terms["distance"], terms["elongation"])
    (unmixed,) = estimate_kernels([rgb], config=KernelGANConfig(spectral_mix=0.0), **kw)
    g = gaussian_of(spectral_covariance(rgb.mean(axis=2), 2), 13)
    assert unmixed.confidence == pytest.approx(
        spectral_confidence(unmixed.kernel_x2, g, res.kernel_x2), rel=1e-12)
    assert terms["distance"] == pytest.approx(agreement_score(unmixed.kernel_x2, g, g)[0],
                                              rel=1e-12)
    (old,) = estimate_kernels([rgb], config=KernelGANConfig(spectral_confidence=False), **kw)
    assert old.confidence is None and old.report["confidence_terms"] is None
    assert old.kernel_x2.tobytes() == res.kernel_x2.tobytes()  # the kernel is unchanged
    # an image too small for a spectrum (under width.MIN_SIDE) has no confidence
    (small,) = estimate_kernels([rgb[:30, :30]], config=KernelGANConfig(crop_size=28), **kw)
    assert small.confidence is None and small.report["confidence_terms"] is None
