"""The LR spectrum's closed-form Gaussian (kgengine.spectral): it recovers a known Gaussian
kernel from an image that follows the model, and the mix is the stated mean, kept out where
the two kernels disagree about the width or the image gives no fit."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import degrade, power_law_image

from kgengine.config import KernelGANConfig
from kgengine.kernel import anisotropic_gaussian, principal_axes
from kgengine.spectral import (
    MAX_AREA_RATIO,
    VAR_RANGE,
    gaussian_of,
    mix_spectral,
    spectral_covariance,
)


def _cov(var1: float, var2: float, theta: float) -> np.ndarray:
    """(row, col) covariance of anisotropic_gaussian(…, var1, var2, theta)."""
    d = np.array([np.sin(theta), np.cos(theta)])  # the long axis in (row, col)
    n = np.array([d[1], -d[0]])
    return var1 * np.outer(d, d) + var2 * np.outer(n, n)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("var1, var2, theta", [(3.0, 1.2, 0.5), (2.0, 2.0, 0.0),
                                               (4.0, 1.0, 2.2)])
def test_the_fit_recovers_a_known_gaussian(scale, var1, var2, theta):
    # an image that follows the model (power-law HR, no noise), degraded with a known
    # Gaussian: the closed-form fit finds its covariance to within 20 % (aliasing, left out
    # of the model, and the finite image), and its axis where it is elongated
    true = anisotropic_gaussian(13, var1, var2, theta)
    lr = degrade(power_law_image(1024 if scale == 4 else 512, 11), true, scale)
    cov = spectral_covariance(lr, scale)
    v = np.linalg.eigvalsh(cov)
    assert v[1] == pytest.approx(var1, rel=0.2) and v[0] == pytest.approx(var2, rel=0.2), v
    if var1 > var2:
        _, _, th = principal_axes(gaussian_of(cov))
        assert abs(np.sin(th - theta)) < 0.17, (th, theta)


def test_gaussian_of_is_the_kernel_of_its_covariance():
    # round trip: the covariance of anisotropic_gaussian(var1, var2, theta) gives that kernel
    for var1, var2, theta in ((3.0, 1.0, 0.4), (2.5, 0.8, 2.0), (1.5, 1.5, 0.0)):
        np.testing.assert_allclose(gaussian_of(_cov(var1, var2, theta)),
                                   anisotropic_gaussian(13, var1, var2, theta), atol=1e-12)


def test_mix_is_the_weighted_mean_and_is_kept_out_on_disagreement():
    true = anisotropic_gaussian(13, 2.5, 1.5, 0.7)
    lr = degrade(power_law_image(512, 12), true, 2)
    k = anisotropic_gaussian(13, 3.0, 1.0, 0.2)  # KernelGAN's, say: the same width roughly
    out, info = mix_spectral(lr, k, 2, 0.5)
    g = gaussian_of(spectral_covariance(lr, 2))
    assert info["mixed"] and info["weight"] == 0.5
    np.testing.assert_allclose(out, 0.5 * k + 0.5 * g, atol=1e-15)
    assert out.sum() == pytest.approx(1.0)
    assert (info["var_long"], info["var_short"]) == pytest.approx(principal_axes(g)[:2])
    # a kernel whose area is far from the fit's (sqrt det > MAX_AREA_RATIO apart): kept
    narrow = anisotropic_gaussian(13, 0.3, 0.3, 0.0)
    a = np.sqrt(np.linalg.det(spectral_covariance(lr, 2)))
    assert a / np.sqrt(np.prod(principal_axes(narrow)[:2])) > MAX_AREA_RATIO
    kept, info = mix_spectral(lr, narrow, 2, 0.5)
    assert kept.tobytes() == narrow.tobytes() and not info["mixed"]
    assert info["var_long"] is not None  # the fit is still reported
    # weight 0: k itself
    assert mix_spectral(lr, k, 2, 0.0)[0].tobytes() == k.tobytes()


def test_no_fit_on_noise_and_bad_input():
    # white noise: every bin is at the noise floor, so nothing is fitted and k is kept
    noise = np.random.default_rng(13).normal(size=(128, 128))
    assert spectral_covariance(noise, 2) is None
    k = anisotropic_gaussian(13, 2.0, 1.0, 0.3)
    out, info = mix_spectral(noise, k, 2, 0.5)
    assert out.tobytes() == k.tobytes() and info["var_long"] is None and not info["mixed"]
    with pytest.raises(ValueError, match="scale"):
        spectral_covariance(noise, 3)
    with pytest.raises(ValueError, match="32x32"):
        spectral_covariance(np.zeros((20, 64)), 2)
    with pytest.raises(ValueError, match="weight"):
        mix_spectral(noise, k, 2, 1.5)


def test_the_fit_is_clipped_to_the_variance_range():
    # a sharp (delta) kernel: the fit's short axis is clipped at VAR_RANGE[0]
    delta = np.zeros((13, 13))
    delta[6, 6] = 1.0
    lr = degrade(power_law_image(512, 14), delta, 2)
    v = np.linalg.eigvalsh(spectral_covariance(lr, 2))
    assert VAR_RANGE[0] - 1e-12 <= v[0] <= v[1] <= VAR_RANGE[1] + 1e-12
    # the report says so (at_floor), and not for a blurred image
    k = anisotropic_gaussian(13, 2.0, 1.0, 0.3)
    assert v[0] == pytest.approx(VAR_RANGE[0]) and mix_spectral(lr, k, 2, 0.5)[1]["at_floor"]
    blurred = degrade(power_law_image(512, 14), anisotropic_gaussian(13, 2.5, 1.5, 0.7), 2)
    assert mix_spectral(blurred, k, 2, 0.5)[1]["at_floor"] is False


def test_config_spectral_mix():
    cfg = KernelGANConfig()
    assert cfg.spectral_mix == 0.5 and KernelGANConfig.authors().spectral_mix == 0.0
    stored = cfg.to_dict()
    del stored["spectral_mix"]  # a config saved by 0.9.5
    assert KernelGANConfig.from_stored(stored).spectral_mix == 0.0
    with pytest.raises(ValueError, match="spectral_mix"):
        cfg.replace(spectral_mix=1.5)


def test_a_point_kernel_is_round_for_the_confidence() -> None:
    """A delta's variances are both 0: its elongation was 0, and its confidence 1.0."""
    from kgengine.confidence import agreement_score, spectral_confidence
    from kgengine.kernel import gaussian_kernel

    delta = np.zeros((13, 13))
    delta[6, 6] = 1.0
    g = gaussian_kernel(13, 1.3)
    dist, e = agreement_score(delta, g, delta)
    assert e == 1.0
    assert spectral_confidence(delta, g, delta) == pytest.approx(1 / (1 + dist / 0.12))
