"""Width calibration: choose the scale of a kernel's second moments from the LR image alone.

KernelGAN finds a kernel's shape but not its width: on the development set the area of the
saved kernel has Spearman ρ ≈ 0 with the true kernel's, for kgengine and for the authors'
code alike (``bench/study_width.py``). The width is in the LR image's spectrum, though.

The model. With ``LR = (HR ∗ k)↓2`` and a scale-invariant HR power spectrum
``P_HR(f/2) = c·P_HR(f)`` (natural images: ``P ∝ |f|^-α``), downscaling the LR image once
more with the same kernel, ``D = (LR ∗ k)↓2``, gives (aliasing left out; ``f`` in cycles per
pixel of each image's own grid, ``K`` the kernel's Fourier transform on its own grid):

    P_LR(f) = |K(f/2)|² · P_HR(f/2)
    P_D(f)  = |K(f/2)|² · P_LR(f/2) = c · |K(f/4)|² · P_LR(f)

so ``r(f) = log P_D(f) − log P_LR(f) − log |K(f/4)|²`` is a constant for the true kernel.
A kernel too wide makes ``D`` too smooth at high ``f`` (``r`` falls with ``|f|``), one too
narrow the opposite. At x4 (``LR = ((HR ∗ k)↓2 ∗ k)↓2``, kgengine's analytic x4) the same
steps give ``|K(f/8)|²`` in place of ``|K(f/4)|²``.

The calibration. For the scales ``s`` of :data:`SCALES` the kernel is widened or narrowed,
``k_s(x) ∝ k(c + (x − c)/√s)`` (second moments × s, :func:`scale_kernel`), and the one with
the smallest ``J(s) = log var_f r_s(f) + λ·(log2 s)²`` is kept: ``var_f`` over polar bins
of ``|f|`` and its angle (so a wrong axis shows too; the HR's own anisotropy cancels in the
ratio) within :data:`BAND`, ``λ`` a pull toward ``s = 1`` (``width_prior``). Since 0.9.8
(``width_refine``) the chosen ``s`` is refined between the grid's points
(:func:`refine_scale`): each step of the grid scales the second moments by 2^(1/6) ≈ 1.12,
and a choice that jumps between two points made much of the restarts' spread across seeds
(``bench/study_image_bias.py``).

Noise. The model has none, but an LR image's finest frequencies are often noise (sensor,
JPEG), which makes ``D`` look too smooth and the kernel be chosen too narrow. A bin is used
only where the LR image's power is at least :data:`NOISE_MARGIN` times its noise floor,
the median periodogram at ``|f| > 0.45`` (where a blurred image has almost no signal left).

The prior's release (since 0.9.10, ``width_release``). The pull toward ``s = 1`` is a pull
toward KernelGAN's own width, which is right on average for the benchmark's kernels
(variances 0.6-5 px² at x2) and far too wide for sharp ones (0.2-0.8 px²: 3.7× the true
area, ``bench/study_sharp.py``), the regime of real photos. Where the LR spectrum's own
Gaussian fit (:func:`kgengine.spectral.spectral_covariance`) says the kernel is sharp, the
pull is weakened (:func:`kgengine.release.released_prior`), so that the criterion alone sizes
the kernel.

The elongation (since 0.9.5). The saved kernel's elongation is shrunk toward isotropy
(``elongation_power`` β = 0.4, :func:`kgengine.kernel.shrink_elongation`) because
KernelGAN's axis is often wrong. Where the image's spectrum supports KernelGAN's own
elongation, it is kept: :func:`choose_elongation` calibrates both the shrunk and the
unshrunk (β = 1) kernel and keeps the unshrunk one when its smallest ``J`` is lower by more
than :data:`ELONGATION_MARGIN` (the polar bins see the axis: a wrong one fits worse).

Why, and what it costs: see :class:`kgengine.config.KernelGANConfig` and the README
(``bench/study_width.py``: aligned kernel PSNR with and without the calibration on the same
kernels, also with noise and JPEG added to the LR image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from kgengine.kernel import center_kernel, center_of_mass
from kgengine.ops.backend import resolve

#: Candidate scales of the second moments: 2^(-1.5 .. 1.5), 19 steps of 1/6 octave.
SCALES: np.ndarray = 2.0 ** np.linspace(-1.5, 1.5, 19)
#: Polar bins of the spectra: radii in cycles/pixel, angles of the frequency in [0, π).
R_EDGES: np.ndarray = np.linspace(0.02, 0.5, 25)
A_EDGES: np.ndarray = np.linspace(0.0, np.pi, 13)
#: Radii compared: below, the window's leakage; above, the aliasing of both images.
BAND: tuple[float, float] = (0.05, 0.35)
#: A bin is used where the LR image's power is at least this many times its noise floor.
NOISE_MARGIN: float = 10.0
#: The noise floor is the median periodogram beyond this radius (cycles/pixel).
FLOOR_RADIUS: float = 0.45
#: The unshrunk kernel is kept when its smallest J is below the shrunk one's by more than
#: this (log variance; chosen on the development set alone, ``bench/study_width.py``).
ELONGATION_MARGIN: float = 0.05
#: Smallest LR image side the calibration reads (smaller images keep the kernel's width).
MIN_SIDE: int = 32
#: Larger images are read through their central MAX_SIDE × MAX_SIDE crop (time and memory:
#: 19 downscaled copies per kernel are held at once, 38 with the elongation choice; the
#: benchmark images are at most 640 px a side).
MAX_SIDE: int = 1024
#: The bins' centres: radius (cycles/pixel) and angle.
R_MID: np.ndarray = 0.5 * (R_EDGES[1:] + R_EDGES[:-1])
A_MID: np.ndarray = 0.5 * (A_EDGES[1:] + A_EDGES[:-1])


@dataclass(frozen=True)
class WidthFit:
    """A calibration's result.

    Attributes:
        kernel: (h, w) float64, sum 1: the input kernel with second moments × ``scale``.
        scale: the chosen ``s`` (a point of :data:`SCALES`, or between two with ``refine``).
        scores: ``J(s)`` for every ``s`` of :data:`SCALES`.
    """

    kernel: np.ndarray
    scale: float
    scores: np.ndarray


def scale_kernel(k: np.ndarray, s: float) -> np.ndarray:
    """Scale a kernel's second moments by ``s`` about its centre of mass ``c``.

    ``k_s(x) ∝ k⁺(c + (x − c)/√s)`` with ``k⁺ = max(k, 0)`` (cubic spline, zeros outside the
    canvas), negatives clipped, renormalised and centred (:func:`center_kernel`). ``s = 1``
    returns ``k`` unchanged; a widened kernel keeps its canvas (its tails may be cut).

    Args:
        k: (h, w) kernel with a positive entry. s: the factor, > 0.
    Returns:
        (h, w) float64 kernel, sum 1.
    """
    if not s > 0:
        raise ValueError(f"scale must be > 0, got {s}")
    k = np.asarray(k, np.float64)
    if s == 1.0:
        return k
    p = np.clip(k, 0.0, None)
    if p.sum() <= 0:
        raise ValueError("kernel has no positive entries")
    c = np.array(center_of_mass(p))
    m = np.eye(2) / np.sqrt(s)
    out = ndimage.affine_transform(p / p.sum(), m, offset=c - m @ c, order=3,
                                   mode="grid-constant")
    out = np.clip(out, 0.0, None)
    if out.sum() <= 0:  # narrowed below one pixel: the nearest sample keeps it a delta
        out = np.zeros_like(p)
        out[tuple(np.round(c).astype(int))] = 1.0
    return center_kernel(out / out.sum())


def polar_log_power(imgs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hann-windowed periodograms of (N, H, W) float64 images, averaged in polar bins.

    Returns:
        (log power (N, nr, na), bin counts (nr, na), log noise floor (N,): the log of the
        median periodogram at ``|f| >`` :data:`FLOOR_RADIUS`); an empty bin has log power 0
        and count 0.
    """
    n, h, w = imgs.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    x = (imgs - imgs.mean(axis=(1, 2), keepdims=True)) * win
    p = np.abs(np.fft.fft2(x)).reshape(n, -1) ** 2
    fy = np.fft.fftfreq(h)[:, None] * np.ones((1, w))
    fx = np.fft.fftfreq(w)[None, :] * np.ones((h, 1))
    ri = np.digitize(np.hypot(fy, fx).ravel(), R_EDGES) - 1
    ai = np.minimum(np.digitize(np.mod(np.arctan2(fy, fx), np.pi).ravel(), A_EDGES) - 1,
                    len(A_MID) - 1)
    keep = (ri >= 0) & (ri < len(R_MID))
    idx = ri[keep] * len(A_MID) + ai[keep]
    nb = len(R_MID) * len(A_MID)
    count = np.bincount(idx, minlength=nb)
    sums = np.stack([np.bincount(idx, row[keep], minlength=nb) for row in p])
    logp = np.where(count > 0, np.log(np.maximum(sums, 1e-300) / np.maximum(count, 1)), 0.0)
    far = np.hypot(fy, fx).ravel() > FLOOR_RADIUS
    floor = np.log(np.maximum(np.median(p[:, far], axis=1), 1e-300))
    return (logp.reshape(n, len(R_MID), len(A_MID)),
            count.reshape(len(R_MID), len(A_MID)), floor)


def downscale_each(img: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """``(img ∗ k)↓2`` for each kernel: ``D[n, i, j] = Σ_{u,v} k_n[u, v] · P[2i + u, 2j + v]``
    with ``P`` the image reflect-padded by ``(h//2, w//2)`` (kgengine's convention: a
    correlation, centre ``size//2``, phase 0).

    By the package's Numba CPU strided downscale (:func:`kgengine.ops.downscale`,
    ``border="reflect"``), which computes only the kept pixels: each output pixel's sum is
    made by one thread in one order, so the bytes do not depend on thread counts (torch's
    convolution's did, in the last bits; the choice of the calibration must not).

    Args:
        img: (H, W) float64. kernels: (N, h, w) float64, odd sizes.
    Returns:
        (N, ceil(H/2), ceil(W/2)) float64.
    """
    fn = resolve("downscale", "cpu", "numba")
    x = torch.from_numpy(np.ascontiguousarray(img, np.float64))[None, None]
    with torch.no_grad():
        return np.stack([fn(x, torch.from_numpy(np.ascontiguousarray(k, np.float64)), 2)[0, 0]
                         .numpy() for k in kernels])


def kernel_power(k: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """``|K(f)|²`` of a (h, w) kernel at frequencies ``(fy, fx)`` (cycles/pixel, any shape),
    ``K(f) = Σ_x k(x) e^{-2πi f·x}``: the discrete-time Fourier transform, exact."""
    h, w = k.shape
    yy, xx = np.mgrid[0:h, 0:w]
    phase = np.exp(-2j * np.pi * (fy[..., None, None] * yy + fx[..., None, None] * xx))
    return np.abs((phase * k).sum(axis=(-2, -1))) ** 2


def residual_spread(lr_gray: np.ndarray, kernels: list[np.ndarray], scale: int = 2,
                    noise_margin: float = NOISE_MARGIN) -> np.ndarray:
    """``var_f r(f)`` of each kernel (module docstring) for one LR image.

    Args:
        lr_gray: (H, W) image, any range (a gain cancels). kernels: (h, w) x2 kernels, odd
        sizes, each summing to 1. scale: 2 (``LR = (HR ∗ k)↓2``) or 4 (kgengine's x4).
        noise_margin: bins whose LR power is below ``noise_margin`` × the noise floor are
        left out (0: none).
    Returns:
        (len(kernels),) float64.
    """
    if scale not in (2, 4):
        raise ValueError(f"scale must be 2 or 4, got {scale}")
    img = np.asarray(lr_gray, np.float64)
    down = downscale_each(img, np.stack([np.asarray(k, np.float64) for k in kernels]))
    lp_lr, n_lr, floor = polar_log_power(img[None])
    lp_d, n_d, _ = polar_log_power(down)
    use = (n_lr > 0) & (n_d > 0) & ((R_MID > BAND[0]) & (R_MID < BAND[1]))[:, None]
    if noise_margin > 0:
        use &= lp_lr[0] >= floor[0] + np.log(noise_margin)
    if use.sum() < 3:  # noise everywhere: no width can be read; no choice (J flat)
        return np.ones(len(kernels))
    div = 2.0 * scale  # |K(f/4)|² at x2, |K(f/8)|² at x4
    fy = R_MID[:, None] * np.sin(A_MID)[None, :] / div
    fx = R_MID[:, None] * np.cos(A_MID)[None, :] / div
    out = []
    for i, k in enumerate(kernels):
        r = lp_d[i] - lp_lr[0] - np.log(np.maximum(kernel_power(np.asarray(k), fy, fx), 1e-300))
        out.append(float(np.var(r[use])))
    return np.asarray(out)


def refine_scale(scores: np.ndarray) -> float:
    """The minimum of the parabola through ``J`` at the grid's minimum and its two neighbours,
    in ``log2 s``.

    With ``i = argmin J``, ``a, b, c = J[i−1], J[i], J[i+1]`` and the grid step
    ``Δ = log2 SCALES[1] − log2 SCALES[0]`` (1/6 octave)::

        log2 s = log2 SCALES[i] + Δ · (a − c) / (2 (a − 2b + c)),

    the offset in [−Δ/2, Δ/2] because ``b`` is the smallest of the three (two equal minima
    give the point half-way between them). At either end of the grid, or where ``J`` is not
    finite, ``s = SCALES[i]``. Exact for a ``J`` quadratic in ``log2 s``.

    Args:
        scores: (len(SCALES),) ``J`` on :data:`SCALES` (:attr:`WidthFit.scores`).
    Returns:
        The refined ``s``, float.
    """
    j = np.asarray(scores, np.float64)
    if j.shape != SCALES.shape:
        raise ValueError(f"expected {SCALES.shape[0]} scores, got shape {j.shape}")
    i = int(np.argmin(j))
    if i == 0 or i == len(j) - 1:
        return float(SCALES[i])
    a, b, c = j[i - 1], j[i], j[i + 1]
    curvature = a - 2.0 * b + c
    if not (np.isfinite([a, b, c]).all() and curvature > 0):
        return float(SCALES[i])
    step = float(np.log2(SCALES[1]) - np.log2(SCALES[0]))
    return float(2.0 ** (np.log2(SCALES[i]) + step * (a - c) / (2.0 * curvature)))


def calibrate_width(lr_gray: np.ndarray, k: np.ndarray, scale: int = 2,
                    prior: float = 0.3, refine: bool = False) -> WidthFit:
    """The kernel of :data:`SCALES` ``{scale_kernel(k, s)}`` that minimises
    ``J(s) = log var_f r_s(f) + prior·(log2 s)²`` on ``lr_gray`` (module docstring).

    Args:
        lr_gray: (H, W) LR image (the image KernelGAN trained on, any range); at least
            32×32 pixels; only the central :data:`MAX_SIDE` × :data:`MAX_SIDE` crop is read.
            k: (h, w) x2 kernel, sum 1. scale: 2 or 4, the image's scale
            (x4: ``k`` is the x2 kernel from which the x4 one is derived). prior: λ ≥ 0.
            refine: ``s`` refined between the grid's points (:func:`refine_scale`; the
            config's ``width_refine``), and the kernel ``scale_kernel(k, s)``.
    Returns:
        :class:`WidthFit`.
    """
    return _fits(lr_gray, [k], scale, prior, refine)[0]


def choose_elongation(lr_gray: np.ndarray, shrunk: np.ndarray, unshrunk: np.ndarray,
                      scale: int = 2, prior: float = 0.3,
                      margin: float = ELONGATION_MARGIN,
                      refine: bool = False) -> tuple[WidthFit, bool]:
    """Calibrate the width of both kernels (:func:`calibrate_width`) and keep the unshrunk
    one iff ``min_s J_unshrunk(s) + margin < min_s J_shrunk(s)``.

    Args:
        lr_gray, scale, prior, refine: as :func:`calibrate_width` (the choice compares the
            grid's minima either way). shrunk: (h, w) the kernel with its
            elongation shrunk (:func:`kgengine.kernel.shrink_elongation`). unshrunk: (h, w)
            the same kernel before the shrink. margin: ≥ 0, in units of ``J``.
    Returns:
        (the kept kernel's :class:`WidthFit`, True when it is the unshrunk one). Each fit
        equals :func:`calibrate_width`'s of its kernel (one shared spectrum of the image).
    """
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    fit_s, fit_u = _fits(lr_gray, [shrunk, unshrunk], scale, prior, refine)
    if fit_u.scores.min() + margin < fit_s.scores.min():
        return fit_u, True
    return fit_s, False


def read_crop(lr_gray: np.ndarray) -> np.ndarray:
    """The part of an LR image the spectra are taken from: its central :data:`MAX_SIDE` ×
    :data:`MAX_SIDE` crop as float64.

    Raises:
        ValueError: not an (H, W) image of at least :data:`MIN_SIDE` pixels a side.
    """
    img = np.asarray(lr_gray, np.float64)
    if img.ndim != 2 or min(img.shape) < MIN_SIDE:
        raise ValueError(f"expected an (H, W) image of at least {MIN_SIDE}x{MIN_SIDE}, "
                         f"got {img.shape}")
    top, left = ((n - min(n, MAX_SIDE)) // 2 for n in img.shape)
    return img[top : top + MAX_SIDE, left : left + MAX_SIDE]


def _fits(lr_gray: np.ndarray, kernels: list[np.ndarray], scale: int,
          prior: float, refine: bool = False) -> list[WidthFit]:
    """:func:`calibrate_width` of each kernel; the image is read once (the spectra of every
    candidate come from one :func:`residual_spread` call: the same bytes as one per kernel)."""
    if not prior >= 0:  # NaN too
        raise ValueError(f"prior must be >= 0, got {prior}")
    lr_gray = read_crop(lr_gray)
    cands = [[scale_kernel(k, float(s)) for s in SCALES] for k in kernels]
    spread = residual_spread(lr_gray, [c for cs in cands for c in cs], scale)
    out = []
    for i, cs in enumerate(cands):
        scores = (np.log(np.maximum(spread[i * len(SCALES) : (i + 1) * len(SCALES)], 1e-300))
                  + prior * np.log2(SCALES) ** 2)
        best = int(np.argmin(scores))
        s = refine_scale(scores) if refine else float(SCALES[best])
        kernel = cs[best] if s == SCALES[best] else scale_kernel(kernels[i], s)
        out.append(WidthFit(kernel, s, scores))
    return out
