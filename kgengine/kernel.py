"""Kernel math: the kgengine kernel convention and pure functions on SR kernels.

The kernel convention (used by estimation, ``degrade``, export and the benchmark alike)
---------------------------------------------------------------------------------------
A kernel ``k`` is a 2-D array of shape (h, w) that sums to 1. Degradation by scale ``s`` is
a *correlation* (no flip) followed by sub-sampling with phase 0::

    c_y, c_x = h // 2, w // 2
    LR[i, j] = sum_{u, v} k[u, v] * HR[s*i + u - c_y, s*j + v - c_x]

so LR pixel (i, j) is centred on HR pixel (s*i, s*j) when the kernel's centre of mass sits at
index (h // 2, w // 2). Out-of-image HR pixels are read with whole-sample reflection
(``d c b | a b c d | c b a``: NumPy/PyTorch/ONNX ``reflect``, SciPy ``mirror``). The LR size
is ``ceil(H / s) x ceil(W / s)``. Estimated kernels are saved centred this way (odd size,
centre of mass at the middle pixel), which is also the DIV2KRK convention (SciPy
``correlate`` with the kernel centred at ``size // 2``, then ``[::2, ::2]``; DIV2KRK reads
borders half-sample symmetric, kgengine whole-sample, which changes only border pixels).

All functions here take and return float64 NumPy arrays unless stated otherwise.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage

from kgengine.errors import BadKernelError, KGEngineError

KERNEL_CONVENTION = (
    "correlation, centre index size//2, LR[i,j]=sum k[u,v]*HR[s*i+u-c,s*j+v-c], "
    "phase 0, whole-sample reflect borders"
)


def center_of_mass(k: np.ndarray) -> tuple[float, float]:
    """Centre of mass ``(row, col)`` of ``k``: ``sum_u u * sum_v k[u, v] / sum k``.

    Args:
        k: (h, w) kernel; its sum must not be 0.
    """
    k = np.asarray(k, dtype=np.float64)
    total = k.sum()
    rows = np.arange(k.shape[0]) @ k.sum(axis=1) / total
    cols = np.arange(k.shape[1]) @ k.sum(axis=0) / total
    return float(rows), float(cols)


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Isotropic Gaussian ``k[u, v] ∝ exp(-((u-c)^2 + (v-c)^2) / (2 sigma^2))``, c = size//2.

    Returns:
        (size, size) kernel summing to 1.
    """
    return anisotropic_gaussian(size, sigma**2, sigma**2, 0.0)


def anisotropic_gaussian(
    size: int, var1: float, var2: float, theta: float, noise: np.ndarray | None = None
) -> np.ndarray:
    """Anisotropic Gaussian ``k(x) ∝ exp(-½ xᵀ Σ⁻¹ x)`` with ``Σ = R(θ) diag(var1, var2) R(θ)ᵀ``.

    ``x = (col - c, row - c)`` with ``c = size // 2``: ``var1`` is the variance along the
    direction at angle ``theta`` (radians, from the column axis toward the row axis: with
    row 0 drawn at the top, as images are, a positive angle turns clockwise). With
    ``noise`` (same shape, multiplicative, e.g. ``U(1-0.25, 1+0.25)``) the kernel is
    ``k * noise`` renormalised, as in the DIV2KRK recipe.

    Returns:
        (size, size) kernel summing to 1.
    """
    c = size // 2
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cov = rot @ np.diag([var1, var2]) @ rot.T
    inv = np.linalg.inv(cov)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - c
    pts = np.stack([xx, yy], axis=-1)  # (size, size, 2) as (x, y)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, inv, pts))
    if noise is not None:
        k = k * noise
    return k / k.sum()


def principal_axes(k: np.ndarray) -> tuple[float, float, float]:
    """Second-moment axes of a kernel: ``(var1, var2, theta)`` with ``var1 >= var2``.

    With ``p = max(k, 0) / sum max(k, 0)`` and ``x = (col - m_col, row - m_row)`` about the
    centre of mass, ``Σ = sum p·x xᵀ = R(θ) diag(var1, var2) R(θ)ᵀ``: the inverse of
    :func:`anisotropic_gaussian` (up to truncation by the canvas), with ``theta`` in
    ``[0, π)`` (an axis has no sign).

    Args:
        k: (h, w) kernel with a positive entry.
    """
    p = np.clip(np.asarray(k, np.float64), 0.0, None)
    if p.sum() <= 0:
        raise ValueError("kernel has no positive entries")
    p = p / p.sum()
    my, mx = center_of_mass(p)
    yy, xx = np.mgrid[0:p.shape[0], 0:p.shape[1]].astype(np.float64)
    dx, dy = xx - mx, yy - my
    cov = np.array([[(p * dx * dx).sum(), (p * dx * dy).sum()],
                    [(p * dx * dy).sum(), (p * dy * dy).sum()]])
    vals, vecs = np.linalg.eigh(cov)  # ascending
    theta = float(np.arctan2(vecs[1, 1], vecs[0, 1]) % np.pi)
    return float(vals[1]), float(vals[0]), theta


def axis_difference(theta_a: float, theta_b: float) -> float:
    """Angle between two axes (radians, sign-free): ``min(|a - b| mod π, π - |a - b| mod π)``,
    in ``[0, π/2]``."""
    d = abs(theta_a - theta_b) % np.pi
    return float(min(d, np.pi - d))


def shift_kernel(k: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Translate ``k`` by ``(dy, dx)`` pixels (cubic spline, zeros outside), same shape."""
    # grid-constant: zeros outside, and the spline is still evaluated for samples that fall
    # a hair outside the array ("constant" zeroes them, wiping a kernel's outer ring)
    return ndimage.shift(np.asarray(k, np.float64), (dy, dx), order=3, mode="grid-constant")


#: The sums a trained raw kernel has. The sum-to-one prior holds it near 1: 0.90-1.77 on
#: every stored benchmark training that ran to its end (0.66-3.0 at 750-1250 iterations of
#: a restart). At initialisation G's composed kernel sums to about 0, and it takes G 60-1000
#: iterations to grow one (development set: 8 of 10 images by 300, all by 1000). Some
#: trainings collapse back: on the development and check sets 5 of 192 one runs at 3000
#: iterations and 11 of 768 restarts at 1500, every tap near 0 (|sum| <= 0.35, max |k| <=
#: 0.043; ``bench/data/collapse_study.md``, 0.9.29). Nothing lay between.
RAW_SUM_RANGE: tuple[float, float] = (0.5, 10.0)


def collapsed(k: np.ndarray) -> bool:
    """Whether G's composed (raw) kernel ``k`` (K, K) is no trained kernel: its sum ``Σ k``
    lies outside :data:`RAW_SUM_RANGE` (it collapsed to about 0, was not trained long enough
    to grow, or exploded). Such a run is saved with confidence 0 and ``collapsed: true``."""
    return not RAW_SUM_RANGE[0] <= float(np.sum(k)) <= RAW_SUM_RANGE[1]


def clean_kernel(k: np.ndarray, n: int = 40) -> np.ndarray:
    """Zero the negligible entries: ``k' = max(k - 0.75 * k_(n+1), 0) / sum(...)``.

    ``k_(n+1)`` is the (n+1)-th largest entry (the authors' ``n_filtering = 40``). If that
    leaves nothing positive, the positive part of ``k`` is kept instead.
    """
    k = np.asarray(k, np.float64)
    flat = np.sort(k.ravel())
    pivot = flat[-n - 1] if flat.size > n else flat[0]
    out = np.clip(k - 0.75 * pivot, 0.0, None)
    if out.sum() <= 0:
        out = np.clip(k, 0.0, None)
    if out.sum() <= 0:
        raise ValueError("kernel has no positive entries")
    return out / out.sum()


def center_kernel(k: np.ndarray, tol: float = 1e-9, max_passes: int = 10) -> np.ndarray:
    """Shift ``k`` so that its centre of mass is at ``(h//2, w//2)`` (the convention).

    Sub-pixel shift by cubic spline within the same (h, w) support, then negatives are
    clipped and the kernel renormalised to sum 1; repeated (clipping moves the centre of mass
    slightly) until the centre is within ``tol`` px or after ``max_passes``. A kernel
    already centred is clipped and renormalised too (before 0.9.27 it came back as given).
    Returns the (h, w) centred kernel, non-negative, sum 1.

    Raises:
        BadKernelError: NaN/inf entries, or no positive mass left to centre.
    """
    k = np.asarray(k, np.float64)
    if not np.isfinite(k).all():
        raise BadKernelError("center_kernel: the kernel has NaN or inf entries")
    target = (k.shape[0] // 2, k.shape[1] // 2)
    for _ in range(max_passes):
        cy, cy_x = center_of_mass(k)
        if abs(target[0] - cy) < tol and abs(target[1] - cy_x) < tol:
            break
        k = np.clip(shift_kernel(k, target[0] - cy, target[1] - cy_x), 0.0, None)
        if not k.sum() > 0:
            raise BadKernelError("center_kernel: no positive mass left after the shift")
        k = k / k.sum()
    if k.min() < 0.0 or abs(k.sum() - 1.0) > 1e-12:  # centred as given: not yet clipped
        k = np.clip(k, 0.0, None)
        if not k.sum() > 0:
            raise BadKernelError("center_kernel: the kernel has no positive entries")
        k = k / k.sum()
    return k


def analytic_x4(k2: np.ndarray) -> np.ndarray:
    """The x4 kernel from the x2 one: ``k4 = k2 ⊛ (k2 dilated by 2)``, size ``3n - 2``.

    ``k4[t] = sum_{2v + u = t} k2[v] k2[u]`` (per axis), so that in the kgengine convention
    ``degrade(degrade(x, k2, 2), k2, 2) == degrade(x, k4, 4)`` away from the borders.
    For odd ``n`` the centre index of ``k4`` is ``3 (n // 2) = (3n - 2) // 2``. An even side
    is first padded with a zero row/column at its end (the same centre index ``n // 2``,
    now odd: ``n + 1``), so the identity holds for it too (since 0.9.26; before, its k4 was
    one HR pixel off).

    Args:
        k2: (n0, n1) x2 kernel.
    Returns:
        (3m0-2, 3m1-2) kernel, ``mi`` = ``ni`` rounded up to odd, with the same sum squared
        as ``k2`` (1 for a normalised k2).
    """
    k2 = np.asarray(k2, np.float64)
    k2 = np.pad(k2, [(0, 1 - n % 2) for n in k2.shape])
    n0, n1 = k2.shape
    out = np.zeros((3 * n0 - 2, 3 * n1 - 2))
    for r in range(n0):
        for c in range(n1):
            out[2 * r : 2 * r + n0, 2 * c : 2 * c + n1] += k2[r, c] * k2
    return out


def shrink_elongation(k: np.ndarray, power: float) -> np.ndarray:
    """Pull a kernel's elongation toward isotropy, keeping its axes, area and centre.

    With ``Σ = R diag(λ1, λ2) Rᵀ`` the kernel's second moments (:func:`principal_axes`)
    and ``g = sqrt(λ1 λ2)``, the result has ``Σ' = R diag(λ1', λ2') Rᵀ`` with
    ``λi' = g^(1 − β) · λi^β`` (β = ``power``): the same axes and ``det Σ`` (area), and the
    log-elongation ``log(λ1'/λ2') = β · log(λ1/λ2)``. It is a linear warp about the centre of
    mass ``c``: ``k'(x) ∝ k(c + M (x − c))``, ``M = R diag(sqrt(λi / λi')) Rᵀ`` (cubic spline,
    zeros outside), negatives clipped, renormalised and centred (:func:`center_kernel`).
    β = 1 returns ``k`` unchanged; β = 0 gives an isotropic kernel of the same area.

    Why: KernelGAN's estimated axis is often wrong (README, "kgengine vs the authors' code"),
    and shrinking the elongation of its kernels measured better on average than keeping it.

    Args:
        k: (h, w) kernel with a positive entry; a kernel whose short axis has (numerically)
            no width is returned as it is.
        power: β in [0, 1].
    Returns:
        (h, w) float64 kernel, sum 1.
    """
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"power must be in [0, 1], got {power}")
    k = np.asarray(k, np.float64)
    var1, var2, theta = principal_axes(k)
    if power == 1.0 or var2 <= 1e-9 or var1 - var2 <= 1e-12 * var1:
        return k
    g = np.sqrt(var1 * var2)
    s = np.array([(var1 / g) ** ((1.0 - power) / 2), (var2 / g) ** ((1.0 - power) / 2)])
    # long-axis direction in (row, col) coordinates: theta is counter-clockwise from the
    # column axis, as in principal_axes
    u = np.array([np.sin(theta), np.cos(theta)])
    v = np.array([u[1], -u[0]])
    m = s[0] * np.outer(u, u) + s[1] * np.outer(v, v)
    p = np.clip(k, 0.0, None)  # the positive part, whose moments principal_axes took
    c = np.array(center_of_mass(p))
    out = ndimage.affine_transform(p / p.sum(), m, offset=c - m @ c, order=3,
                                   mode="grid-constant")
    out = np.clip(out, 0.0, None)
    return center_kernel(out / out.sum())


def bicubic_taps(scale: int) -> np.ndarray:
    """The ``4·scale`` taps of MATLAB's antialiased bicubic downscaler by ``scale``.

    ``w[i] = cubic(x_i / s) / s`` with ``x_i = i − (2s − ½)``, ``i = 0 … 4s−1`` and Keys'
    cubic (a = −0.5); the taps sum to 1. The 2-D kernel is ``outer(w, w)`` (4s × 4s), whose
    centre lies between pixels ``2s − 1`` and ``2s``.
    """
    x = (np.arange(4 * scale) - (2 * scale - 0.5)) / scale
    a = -0.5
    ax = np.abs(x)
    w = np.where(
        ax <= 1,
        (a + 2) * ax**3 - (a + 3) * ax**2 + 1,
        np.where(ax < 2, a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a, 0.0),
    )
    return w / scale


def bicubic_taps_x2() -> np.ndarray:
    """The 8 taps of MATLAB's antialiased x2 bicubic downscaler: :func:`bicubic_taps` (2)."""
    return bicubic_taps(2)


def boundary_mask(size: int, penalty: float = 30.0, sigma: float = 0.0) -> np.ndarray:
    """The authors' boundary-penalty mask ``m`` (0 inside, ``penalty·(1 − g/max g)`` outside).

    ``g[u, v] = exp(−(z_u² + z_v²) / (2σ²))`` on ``z = −size//2+1 … size//2`` with the
    authors' ``σ = size`` (``sigma=0``; kgengine 0.1 used ``size//2 + size%2``); only the outer
    ring of width ``(size − c)//2 − 1``, ``c = size//2 + size%2``, keeps its penalty (the
    outer 2 pixels for size 13). Corner value for size 13: ``30·(1 − exp(−72/338)) ≈ 5.76``.
    """
    center_size = size // 2 + size % 2
    # below ~1e-154 σ² underflows and the centre's 0/0 made the mask NaN (0.9.29); the
    # floor changes no normal σ, and any σ below it masks the same (all but the centre)
    sigma = max(float(sigma), 1e-100) if sigma > 0 else float(size)
    z = np.arange(-size // 2 + 1, size // 2 + 1, dtype=np.float64)
    g1 = np.exp(-(z**2) / (2 * sigma**2))
    g = np.outer(g1, g1)
    mask = 1.0 - g / g.max()
    margin = (size - center_size) // 2 - 1
    if margin > 0:
        mask[margin:-margin, margin:-margin] = 0.0
    return penalty * mask


# -------------------------------------------------------------------------------- canvases
def check_kernel(k: object, where: str = "kernel") -> np.ndarray:
    """Validate one kernel and renormalise it: ``k / Σk`` as float64.

    Args:
        k: array-like; must be 2-D, non-empty, finite, with a finite positive sum (and
            finite divided by it).
        where: the file, row or role named in the error message.
    Raises:
        BadKernelError: ``"<where>: <problem>"`` (a :class:`KGEngineError` and a ``ValueError``).
    """
    if np.iscomplexobj(k):
        raise BadKernelError(f"{where}: kernel has complex values, expected real numbers")
    try:
        arr = np.asarray(k, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadKernelError(f"{where}: kernel is not a numeric array") from None
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise BadKernelError(f"{where}: kernel must be a 2-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise BadKernelError(f"{where}: kernel contains NaN or inf values")
    with np.errstate(over="ignore", invalid="ignore"):  # the checks below say it in one line
        total = arr.sum()
        if not np.isfinite(total):
            raise BadKernelError(f"{where}: kernel sum is not finite (values up to "
                                 f"{np.abs(arr).max():.3g})")
        if not total > 0:
            raise BadKernelError(f"{where}: kernel sum is {total:.3g}, must be > 0")
        out = arr / total
    if not np.isfinite(out).all():  # huge values of opposite signs cancelling to a tiny sum
        raise BadKernelError(f"{where}: kernel values are not finite divided by its sum "
                             f"{total:.3g}")
    return out


def check_scale(scale: object, where: str = "kernel pool") -> int:
    """``scale`` as an int if it is a whole number >= 1, else :class:`KGEngineError`."""
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool) and scale >= 1 and (
            float(scale).is_integer()):
        return int(scale)
    raise KGEngineError(f"{where}: scale must be an integer >= 1, got {scale!r}")


def common_size(*kernels: np.ndarray) -> int:
    """The odd canvas size ``S`` holding every kernel placed by :func:`pad_to`.

    ``S = 2·max(c, h − 1 − c) + 1`` over all kernel dims ``h`` with ``c = h // 2``; for odd
    sizes this is simply the largest size.
    """
    half = 0
    for k in kernels:
        for h in np.shape(k)[:2]:
            half = max(half, h // 2, h - 1 - h // 2)
    return 2 * half + 1


def pad_to(k: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``k`` (h, w) to (size, size), index ``(h//2, w//2)`` landing on ``size//2``.

    ``degrade(x, pad_to(k, S), s) == degrade(x, k, s)``: the padding only adds zero taps
    around the same centre. Returns float64; raises ``ValueError`` if ``k`` does not fit.
    """
    k = np.asarray(k, dtype=np.float64)
    h, w = k.shape
    top, left = size // 2 - h // 2, size // 2 - w // 2
    if top < 0 or left < 0 or top + h > size or left + w > size:
        raise ValueError(f"kernel of shape {k.shape} does not fit a {size}x{size} canvas")
    out = np.zeros((size, size))
    out[top : top + h, left : left + w] = k
    return out
