"""Accuracy metrics for estimated SR kernels (docs/ALGORITHM.md section 9).

- :func:`kernel_psnr`: kernel PSNR as in FKP (Liang et al., CVPR 2021).
- :func:`aligned_kernel_psnr`: the same, maximised over sub-pixel translations of the
  estimate (a translation of the kernel is not identifiable from one image).
- :func:`lr_resynthesis_psnr`: degrade the HR image with a kernel and compare with the true LR
  image at the best sub-sampling phase.

Common conventions
------------------
- Kernels are normalised to sum 1 before comparison and placed on a common zero canvas by
  :func:`pad_to`, which puts index ``h // 2`` of an ``h``-row kernel at index ``S // 2`` of
  the ``S``-row canvas (same for columns). That is the placement under which
  ``degrade(x, pad_to(k, S), s) == degrade(x, k, s)``, so two kernels that degrade alike pad
  alike. An even kernel (e.g. the 8×8 x2 bicubic, whose centre of mass is at 3.5) therefore
  sits half a pixel up-left of the canvas centre, exactly as ``degrade`` uses it; the
  aligned metric undoes that offset, the plain one does not.
- The "common size" ``S`` is by default the largest height/width of the two kernels, made
  odd; a caller comparing several methods on one image passes one ``size`` for all of them
  (``kgengine eval`` uses the largest kernel of the comparison: 13 at x2, 37 at x4), since
  the PSNR of a pair depends on ``S`` (``+20·log10(S'/S)`` dB for a larger canvas). The MSE
  is the sum of squared differences divided by ``S²``; padding with more zeros changes
  nothing else, so the aligned metric (computed on a wider canvas so that no mass leaves it)
  equals the plain one at zero shift.
- PSNRs are capped at :data:`PSNR_CAP` dB (reached when the MSE is below ``1e-10``,
  identical inputs included), so means and JSON files stay finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, signal

from kgengine.kernel import check_kernel, common_size, pad_to

#: Largest PSNR reported (dB); identical kernels or images score exactly this.
PSNR_CAP = 100.0


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """``min(20·log10(peak / sqrt(mse)), PSNR_CAP)``; ``mse == 0`` gives ``PSNR_CAP``.

    Raises:
        ValueError: ``mse`` is NaN or infinite (a NaN input upstream).
    """
    if not math.isfinite(mse):
        raise ValueError(f"psnr_from_mse: the MSE is {mse} (NaN or inf in an input?)")
    if mse <= 0.0:
        return PSNR_CAP
    return min(20.0 * math.log10(peak / math.sqrt(mse)), PSNR_CAP)


def kernel_psnr(est: np.ndarray, gt: np.ndarray, size: int | None = None) -> float:
    """Kernel PSNR: ``20·log10(1 / sqrt(MSE))`` of the sum-1 kernels on a common canvas.

    ``MSE = (1/S²) Σ (pad(est/Σest) − pad(gt/Σgt))²`` with ``S = size`` or by default
    ``common_size(est, gt)``, and ``pad`` = :func:`pad_to`. Capped at :data:`PSNR_CAP`
    (identical kernels).

    Args:
        est: (h1, w1) estimated kernel.
        gt: (h2, w2) true kernel.
        size: canvas size ``S`` (must hold both kernels); default: their common size.
    Returns:
        PSNR in dB (float).
    """
    est = check_kernel(est, "estimate")
    gt = check_kernel(gt, "ground truth")
    size = _canvas(size, est, gt)
    diff = pad_to(est, size) - pad_to(gt, size)
    return psnr_from_mse(float(np.sum(diff**2)) / size**2)


@dataclass(frozen=True)
class AlignedPSNR:
    """Result of :func:`aligned_kernel_psnr`: the PSNR and the best shift ``(dy, dx)`` (px)."""

    psnr: float
    shift: tuple[float, float]


def aligned_kernel_psnr(
    est: np.ndarray,
    gt: np.ndarray,
    max_shift: float = 1.5,
    step: float = 0.25,
    size: int | None = None,
) -> AlignedPSNR:
    """Kernel PSNR maximised over translations ``t`` of the estimate, ``|t_i| ≤ max_shift``.

    ``PSNR_al = max_t 20·log10(1 / sqrt(MSE_t))``, ``MSE_t = (1/S²) Σ (T_t est − gt)²`` with
    ``S`` as in :func:`kernel_psnr` (``size`` or the common size) and ``T_t`` a cubic-spline
    translation (:func:`scipy.ndimage.shift`, order 3) on a canvas wide enough that no mass
    leaves it. Search: a grid of step ``step`` over ``[-max_shift, max_shift]²`` (which
    contains ``t = 0``, so ``PSNR_al ≥ kernel_psnr``), then a Nelder-Mead refinement from the
    best grid point, clipped to the box. Integer shifts are exact; sub-pixel spline
    translations are accurate to roughly 60-80 dB on smooth kernels.

    Args:
        est: (h1, w1) estimated kernel.
        gt: (h2, w2) true kernel.
        max_shift: largest translation per axis (px).
        step: grid step of the coarse search (px).
        size: canvas size ``S`` as in :func:`kernel_psnr`.
    Returns:
        :class:`AlignedPSNR` with the PSNR (dB) and the shift ``(dy, dx)`` applied to ``est``.
    """
    if not (0.0 <= max_shift < math.inf and 0.0 < step < math.inf):
        raise ValueError(f"aligned_kernel_psnr: expected max_shift >= 0 and step > 0, got "
                         f"max_shift={max_shift}, step={step}")
    est = check_kernel(est, "estimate")
    gt = check_kernel(gt, "ground truth")
    size = _canvas(size, est, gt)
    wide = size + 2 * (math.ceil(max_shift) + 2)
    est_w, gt_w = pad_to(est, wide), pad_to(gt, wide)

    def mse(t: np.ndarray) -> float:
        t = np.clip(t, -max_shift, max_shift)
        if not t.any():
            moved = est_w
        else:
            moved = ndimage.shift(est_w, (float(t[0]), float(t[1])), order=3, mode="constant")
        return float(np.sum((moved - gt_w) ** 2)) / size**2

    n = int(round(max_shift / step))
    grid = np.clip(np.arange(-n, n + 1) * step, -max_shift, max_shift)  # |t| <= max_shift
    best_t, best = np.zeros(2), mse(np.zeros(2))
    for dy in grid:
        for dx in grid:
            val = mse(np.array([dy, dx]))
            if val < best:
                best_t, best = np.array([dy, dx]), val
    if best > 0.0:
        res = optimize.minimize(
            mse,
            best_t,
            method="Nelder-Mead",
            options={"xatol": 1e-3, "fatol": 1e-14, "initial_simplex": _simplex(best_t, step / 2)},
        )
        if res.fun < best:
            best_t, best = np.clip(res.x, -max_shift, max_shift), float(res.fun)
    return AlignedPSNR(psnr_from_mse(best), (float(best_t[0]), float(best_t[1])))


def _canvas(size: int | None, *kernels: np.ndarray) -> int:
    need = common_size(*kernels)
    if size is None:
        return need
    if size < need:
        raise ValueError(f"canvas size {size} cannot hold kernels of shapes "
                         f"{[np.shape(k) for k in kernels]} (needs {need})")
    return int(size)


def _simplex(x0: np.ndarray, h: float) -> np.ndarray:
    return np.array([x0, x0 + [h, 0.0], x0 + [0.0, h]])


def blur_reflect(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Stride-1 correlation in the kgengine convention, by FFT: equals ``degrade(img, k, 1)``.

    ``B[i, j] = Σ_{u,v} k[u, v] · X[i + u − h//2, j + v − w//2]`` with whole-sample reflection
    outside the image (``numpy.pad(mode="reflect")``), computed as an FFT convolution with the
    flipped kernel over the padded image. Much faster than a direct float64 depthwise
    convolution for the 37×37 x4 kernels.

    Args:
        img: (H, W) or (H, W, C) image.
        kernel: (h, w) kernel.
    Returns:
        float64 array of the same shape as ``img``.
    """
    img = np.asarray(img, dtype=np.float64)
    k = np.asarray(kernel, dtype=np.float64)
    h, w = k.shape
    cy, cx = h // 2, w // 2
    pads = [(cy, h - 1 - cy), (cx, w - 1 - cx)] + [(0, 0)] * (img.ndim - 2)
    padded = np.pad(img, pads, mode="reflect")
    flipped = k[::-1, ::-1].reshape(k.shape + (1,) * (img.ndim - 2))
    return signal.fftconvolve(padded, flipped, mode="valid", axes=(0, 1))


@dataclass(frozen=True)
class ResynthPSNR:
    """Result of :func:`lr_resynthesis_psnr`: PSNR (dB) and the best HR offset ``(dy, dx)``."""

    psnr: float
    offset: tuple[int, int]


def lr_resynthesis_psnr(
    hr: np.ndarray, lr_true: np.ndarray, kernel: np.ndarray, scale: int, shave: int = 8
) -> ResynthPSNR:
    """PSNR between ``lr_true`` and ``hr`` re-degraded with ``kernel``, at the best phase.

    ``B = hr ⋆ k`` (:func:`blur_reflect`: ``degrade(hr, k, 1)``, ``k`` normalised to sum 1);
    for every integer HR offset ``(dy, dx) ∈ [-s, s]²`` (all ``s×s`` sub-sampling phases,
    each with LR offsets of -1, 0 and +1) the candidate is ``L[i, j] = B[s·i + dy, s·j + dx]``,
    compared with ``lr_true`` over LR pixels ``shave ≤ i < H_lr − shave`` (same for ``j``),
    all channels: ``PSNR = max 10·log10(1 / MSE)`` (peak 1, images in ``[0, 1]``, capped at
    :data:`PSNR_CAP`). The shave removes the border, where conventions for out-of-image
    pixels differ (8 LR px clears kernels up to ``16·s + 1`` HR px wide).
    Calling it with the true kernel gives the ceiling: the score of a perfect estimate, below
    :data:`PSNR_CAP` only through quantisation of ``lr_true`` (8-bit PNG, about 59 dB).

    Args:
        hr: (H, W[, C]) HR image in [0, 1].
        lr_true: (h, w[, C]) LR image in [0, 1]; ``h ≤ ceil(H / s)``, ``w ≤ ceil(W / s)``.
        kernel: (kh, kw) kernel in the kgengine convention.
        scale: the sub-sampling factor s.
        shave: LR pixels ignored at each border.
    Returns:
        :class:`ResynthPSNR` with the PSNR and the best offset.
    """
    hr = np.asarray(hr, dtype=np.float64)
    lr_true = np.asarray(lr_true, dtype=np.float64)
    for name, img in (("hr", hr), ("lr", lr_true)):
        if not np.isfinite(img).all():
            raise ValueError(f"lr_resynthesis_psnr: {name} has NaN or inf pixels")
    if hr.ndim != lr_true.ndim or hr.shape[2:] != lr_true.shape[2:]:
        raise ValueError(f"hr {hr.shape} and lr {lr_true.shape} have different layouts")
    h_lr, w_lr = lr_true.shape[:2]
    if h_lr > -(-hr.shape[0] // scale) or w_lr > -(-hr.shape[1] // scale):
        raise ValueError(f"lr {lr_true.shape} is larger than hr {hr.shape} / {scale}")
    shave = max(1, shave)
    if h_lr <= 2 * shave or w_lr <= 2 * shave:
        raise ValueError(f"lr {lr_true.shape} is too small for a {shave}-pixel shave")
    blurred = blur_reflect(hr, check_kernel(kernel))
    ref = lr_true[shave : h_lr - shave, shave : w_lr - shave]
    best, best_off = math.inf, (0, 0)
    for dy in range(-scale, scale + 1):
        for dx in range(-scale, scale + 1):
            rows = slice(scale * shave + dy, scale * (h_lr - shave - 1) + dy + 1, scale)
            cols = slice(scale * shave + dx, scale * (w_lr - shave - 1) + dx + 1, scale)
            cand = blurred[rows, cols]
            mse = float(np.mean((cand - ref) ** 2))
            if mse < best:
                best, best_off = mse, (dy, dx)
    return ResynthPSNR(psnr_from_mse(best), best_off)
