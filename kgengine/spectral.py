"""The LR spectrum's own Gaussian kernel, in closed form, mixed into KernelGAN's.

The model of :mod:`kgengine.width` (a scale-invariant HR power spectrum) without aliasing:
``P_D(f) = |K(f/2)|² P_LR(f/2)`` for ``D = (LR ∗ k)↓2``, so its criterion needs no
downscaled copies. With ``s(f) = log P_LR(f/2) − log P_LR(f)`` and a Gaussian kernel of
covariance Σ (HR pixels²), ``log |K(ν)|² = −4π² νᵀΣν``, the model says::

    s(f) = c + 4π² (1/4 − 1/16) · fᵀΣf          (x2;  x4: 1/4 − 1/64)

which is linear in (Σ_yy, Σ_xy, Σ_xx): a least-squares fit of ``s`` over the calibration's
polar bins (its band and noise mask) gives Σ with no training and no search
(:func:`spectral_covariance`). The noise power (the median periodogram beyond 0.45
cycles/pixel, divided by ln 2: the median of an exponential variable is ln 2 times its
mean) is subtracted from the spectrum first.

The fit has errors of its own, not KernelGAN's, so the saved kernel is the mean
``(1 − w)·k + w·g`` of KernelGAN's (finished, calibrated) kernel ``k`` and the fitted
Gaussian ``g`` (``spectral_mix`` = w). Noise in the LR image bends the fit toward too narrow
a kernel; where its area and ``k``'s differ by more than :data:`MAX_AREA_RATIO` (either
way) the two disagree about the width, and ``k`` is kept unmixed.

Measured in ``bench/study_spectral.py`` (README).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kgengine.kernel import anisotropic_gaussian, principal_axes
from kgengine.width import A_MID, BAND, NOISE_MARGIN, R_MID, polar_log_power, read_crop

#: The fitted covariance's eigenvalues are clipped to this range (px²).
VAR_RANGE: tuple[float, float] = (0.2, 8.0)
#: Fewer usable bins than this: no fit.
MIN_BINS: int = 8
#: KernelGAN's kernel is kept unmixed where sqrt(det Σ) of the two differ by more than this.
MAX_AREA_RATIO: float = 2.0


def spectral_bins(lr_gray: np.ndarray, *, subtract_floor: bool = True,
                  band: tuple[float, float] = BAND) -> tuple[np.ndarray, ...] | None:
    """The data of the fit: ``s(f) = log P_LR(f/2) − log P_LR(f)`` at the polar bins used.

    A bin is used where it is within ``band`` and above the noise mask (module docstring).

    Args:
        lr_gray, subtract_floor, band: as :func:`spectral_covariance`.
    Returns:
        ``(s, fy, fx, angle)``, 1-D float64 arrays over the used bins (``angle``: the bin's
        index in :data:`kgengine.width.A_MID`, int); None when fewer than :data:`MIN_BINS`
        bins are used.
    """
    lp, count, floor = polar_log_power(read_crop(lr_gray)[None])
    lp, floor = lp[0], floor[0]
    use = ((count > 0) & ((R_MID > band[0]) & (R_MID < band[1]))[:, None]
           & (lp >= floor + np.log(NOISE_MARGIN)))
    if use.sum() < MIN_BINS:
        return None
    clean = (np.log(np.maximum(np.exp(lp) - np.exp(floor) / np.log(2.0), 1e-300))
             if subtract_floor else lp)
    half = _at_half_radius(clean, count)
    use &= np.isfinite(half)
    if use.sum() < MIN_BINS:
        return None
    fy = (R_MID[:, None] * np.sin(A_MID)[None, :])[use]
    fx = (R_MID[:, None] * np.cos(A_MID)[None, :])[use]
    angle = np.broadcast_to(np.arange(len(A_MID))[None, :], use.shape)[use]
    return (half - clean)[use], fy, fx, angle


def _at_half_radius(clean: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``clean`` (nr, na) read at half each bin's radius: per angle, linear in the radius
    between the bins that hold frequencies (``count > 0``; an empty bin's value is no
    data). NaN for an angle without such a bin. Below about 112 px an LR grid leaves the
    innermost bins empty for some angles; reading them as data biased the fit (0.9.27)."""
    half = np.full(clean.shape, np.nan)
    for a in range(len(A_MID)):
        held = count[:, a] > 0
        if held.any():
            half[:, a] = np.interp(R_MID / 2, R_MID[held], clean[held, a])
    return half


def covariance_of_quadratic(q: np.ndarray, scale: int) -> np.ndarray:
    """Σ from the fitted coefficients ``q = (q_yy, q_xy, q_xx)`` of ``fy², 2·fx·fy, fx²``:
    ``Σ = Q / (4π² (1/4 − 1/16))`` (x4: ``1/4 − 1/64``), eigenvalues clipped to
    :data:`VAR_RANGE`; (2, 2) float64, (row, col) px²."""
    c = 4 * np.pi**2 * (1 / 4 - (1 / 16 if scale == 2 else 1 / 64))
    w, v = np.linalg.eigh(np.array([[q[0], q[1]], [q[1], q[2]]]) / c)
    return v @ np.diag(np.clip(w, *VAR_RANGE)) @ v.T


def spectral_covariance(lr_gray: np.ndarray, scale: int = 2, *, subtract_floor: bool = True,
                        band: tuple[float, float] = BAND) -> np.ndarray | None:
    """Σ of the Gaussian kernel the LR spectrum fits (module docstring): ordinary least
    squares of :func:`spectral_bins`' ``s`` on ``[1, fy², 2·fx·fy, fx²]``.

    Args:
        lr_gray: (H, W) LR image, any range, at least 32×32 (its central 1024×1024 crop is
            read). scale: 2 or 4 (x4: Σ of the x2 kernel from which the x4 one is derived).
        subtract_floor: subtract the noise power first (False: the first version, measured
            in ``bench/study_spectral.py``). band: the radii fitted, cycles/pixel (the
            calibration's :data:`kgengine.width.BAND`; others measured in
            ``bench/study_image_bias.py``; other regressions in
            ``bench/study_fit_models.py``).
    Returns:
        (2, 2) float64 covariance in (row, col) pixels², eigenvalues in :data:`VAR_RANGE`;
        None when fewer than :data:`MIN_BINS` bins are above the noise mask.
    """
    if scale not in (2, 4):
        raise ValueError(f"scale must be 2 or 4, got {scale}")
    data = spectral_bins(lr_gray, subtract_floor=subtract_floor, band=band)
    if data is None:
        return None
    s, fy, fx, _ = data
    design = np.stack([np.ones_like(fy), fy**2, 2 * fx * fy, fx**2], 1)
    beta = np.linalg.lstsq(design, s, rcond=None)[0]
    return covariance_of_quadratic(beta[1:], scale)


def gaussian_of(cov: np.ndarray, size: int = 13) -> np.ndarray:
    """The (size, size) sampled Gaussian kernel of covariance ``cov`` ((row, col) px²)."""
    w, v = np.linalg.eigh(cov)
    # long axis v[:, 1] = (row, col) as anisotropic_gaussian's angle (from the column axis)
    return anisotropic_gaussian(size, w[1], w[0], float(np.arctan2(v[0, 1], v[1, 1])))


def mix_spectral(lr_gray: np.ndarray, k: np.ndarray, scale: int = 2, weight: float = 0.5
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """``(1 − weight)·k + weight·g`` with ``g`` the spectrum's Gaussian (module docstring):
    :func:`mix_covariance` of :func:`spectral_covariance` ``(lr_gray, scale)``.

    Args:
        lr_gray, scale: as :func:`spectral_covariance`. k, weight: as :func:`mix_covariance`.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    return mix_covariance(k, spectral_covariance(lr_gray, scale), weight)


def mix_covariance(k: np.ndarray, cov: np.ndarray | None, weight: float = 0.5
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """``(1 − weight)·k + weight·g`` with ``g`` = :func:`gaussian_of` ``(cov)``, unless their
    areas ``sqrt(det Σ)`` differ by more than :data:`MAX_AREA_RATIO`.

    Args:
        k: (n, n) x2 kernel, sum 1, n odd. cov: (2, 2) the spectrum's fit, or None (no
            fit). weight: w in [0, 1].
    Returns:
        (the kernel, (n, n) float64, sum 1; the report: ``weight``; ``var_long``,
        ``var_short``, ``theta_deg``: the second moments of the fit's Gaussian sampled on
        ``k``'s canvas (:func:`kgengine.kernel.principal_axes`); ``fit_var_long``,
        ``fit_var_short``: the fitted Σ's eigenvalues (since 0.9.27; the releases' area is
        their product's root); all None where there was no fit; ``at_floor``: True
        where the fit's smaller variance is at :data:`VAR_RANGE`'s lower end, i.e. the image
        looks sharper than the fit can represent (most sharp photos at x2,
        ``bench/study_real.py``; the confidence is then low by construction), None without
        a fit; and ``mixed``: False where there was no fit or the two areas disagree (then
        the kernel is ``k``)).
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    k = np.asarray(k, np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"mix_covariance: expected a square (n, n) kernel, got {k.shape}")
    info: dict[str, Any] = {"weight": weight, "var_long": None, "var_short": None,
                            "theta_deg": None, "fit_var_long": None, "fit_var_short": None,
                            "at_floor": None, "mixed": False}
    if cov is None:
        return k, info
    g = gaussian_of(cov, k.shape[0])
    v1, v2, theta = principal_axes(g)
    fit = np.linalg.eigvalsh(cov)  # ascending
    info.update(var_long=v1, var_short=v2, theta_deg=float(np.degrees(theta)),
                fit_var_long=float(fit[1]), fit_var_short=float(fit[0]),
                at_floor=bool(fit[0] <= VAR_RANGE[0] * (1 + 1e-9)))
    k1, k2, _ = principal_axes(k)
    ratio = np.sqrt(np.linalg.det(cov)) / max(np.sqrt(k1 * k2), 1e-12)
    if not 1 / MAX_AREA_RATIO <= ratio <= MAX_AREA_RATIO or weight == 0.0:
        return k, info
    info["mixed"] = True
    out = (1.0 - weight) * k + weight * g
    return out / out.sum(), info
