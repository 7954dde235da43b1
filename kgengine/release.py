"""Settings tuned on wide kernels, released where the LR spectrum looks sharp.

kgengine's defaults were chosen on the benchmark's kernels (variances 0.6-5 px² at x2), and
two of them hold a sharp kernel (0.2-0.8 px², the regime of real photos) too wide
(``bench/study_sharp.py``): the width calibration's pull toward KernelGAN's own width
(``width_prior``) and the clean-up's n (``n_filtering``, ``restart_n_filtering``: a sharp
kernel has few entries above the raw kernel's noise floor, and keeping 50-70 of them keeps a
skirt of that floor). The LR spectrum's own Gaussian fit
(:func:`kgengine.spectral.spectral_covariance`) tells the two regimes apart fairly well: its
area ``a = sqrt(det Σ)`` has a median of 0.67 px² on the sharp set and about 2.7 px² on the
development and check sets. Each setting is kept in full where ``a`` is large, released where
it is small, linearly between two thresholds (:func:`release_fraction`):

- since 0.9.10, ``width_release``: the pull ``λ' = λ·t`` (:func:`released_prior`);
- since 0.9.11, ``clean_release``: the clean-up's ``n' = n·(f + (1 − f)·t)``
  (:func:`released_clean_n`).

How the thresholds were chosen, and what they cost on noisy images: ``bench/study_release.py``
and ``bench/study_clean_release.py`` (docs/HISTORY.md).
"""

from __future__ import annotations

import numpy as np

#: The prior's release (``width_release``, since 0.9.10): the full pull λ where the LR
#: spectrum's Gaussian fit has an area sqrt(det Σ) of at least RELEASE[1] px², none at
#: RELEASE[0] or less, linear between (:func:`released_prior`).
RELEASE: tuple[float, float] = (0.4, 1.0)
#: The clean-up's release (``clean_release``, since 0.9.11): the clean-up keeps about n
#: entries where the fit's area is at least CLEAN_RELEASE[1] px², CLEAN_FLOOR·n at
#: CLEAN_RELEASE[0] or less, linear between (:func:`released_clean_n`).
CLEAN_RELEASE: tuple[float, float] = (0.4, 0.8)
CLEAN_FLOOR: float = 0.2


def release_fraction(cov: np.ndarray | None, release: tuple[float, float] = RELEASE) -> float:
    """How much of a setting tuned on wide kernels is kept where the LR spectrum's Gaussian
    fit has covariance Σ::

        t = clip((a − a₀) / (a₁ − a₀), 0, 1),    a = sqrt(det Σ)

    with ``(a₀, a₁)`` = ``release`` (px², the x2 kernel's: at x4 Σ is the fit of the x2
    kernel from which the x4 one is derived). Without a fit (None) t = 1.

    Args:
        cov: (2, 2) Σ in (row, col) px², or None. release: (a₀, a₁), 0 ≤ a₀ < a₁.
    Returns:
        t, float in [0, 1].
    """
    a0, a1 = release
    if not 0 <= a0 < a1:
        raise ValueError(f"release must be 0 <= a0 < a1, got {release}")
    if cov is None:
        return 1.0
    area = float(np.sqrt(max(np.linalg.det(np.asarray(cov, np.float64)), 0.0)))
    return float(np.clip((area - a0) / (a1 - a0), 0.0, 1.0))


def released_prior(prior: float, cov: np.ndarray | None,
                   release: tuple[float, float] = RELEASE) -> float:
    """The calibration's pull ``λ' = λ · t`` where the LR spectrum's Gaussian fit has
    covariance Σ (``t``: :func:`release_fraction`; without a fit λ' = λ).

    Args:
        prior: λ ≥ 0 (``width_prior``). cov: (2, 2) Σ in (row, col) px², or None.
        release: (a₀, a₁), 0 ≤ a₀ < a₁.
    Returns:
        λ', float in [0, λ].
    """
    if not prior >= 0:  # NaN too
        raise ValueError(f"prior must be >= 0, got {prior}")
    return float(prior * release_fraction(cov, release))


def released_clean_n(n: int, cov: np.ndarray | None, floor: float = CLEAN_FLOOR,
                     release: tuple[float, float] = CLEAN_RELEASE) -> int:
    """The clean-up's n (:func:`kgengine.kernel.clean_kernel`) where the LR spectrum's
    Gaussian fit has covariance Σ (``clean_release``, since 0.9.11)::

        n' = max(1, round(n · (f + (1 − f) · t)))

    ``t`` = :func:`release_fraction` (Σ, ``release``), ``f`` = ``floor``: n where the fit is
    wide, ``f·n`` where it is sharp. A sharp kernel has few entries above the raw kernel's
    noise floor, and the clean-up's n keeps about n of them (without a fit n' = n).

    Args:
        n: n ≥ 1 (``n_filtering`` or ``restart_n_filtering``). cov: (2, 2) Σ in (row, col)
            px², or None. floor: f in (0, 1]. release: (a₀, a₁), 0 ≤ a₀ < a₁.
    Returns:
        n', int in [1, n].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    t = release_fraction(cov, release)
    return max(1, int(round(n * (floor + (1 - floor) * t))))
