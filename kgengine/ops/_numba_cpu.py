"""Numba CPU kernels (``njit(parallel=True)``) of the ops; imported lazily by the ops.

Compiled on first call (``cache=True`` keeps the machine code on disk), never at import of
:mod:`kgengine`. Inputs are NumPy views of CPU tensors (no copy; any strides).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numba
import numpy as np
import torch
from numba import njit, prange

from kgengine.ops.rng import STREAM_D_NOISE, STREAM_D_POS, STREAM_G_POS, make_scalar_rng

# Numba's default "omp" threading layer shares the OpenMP runtime with PyTorch's CPU pool:
# interleaving the two (the trainer calls a Numba op and then torch ops every iteration)
# made each iteration ~8x slower on a 2-core machine (154 vs 19 ms/iteration, measured).
# The "workqueue" layer has its own threads and no such interference. A user's explicit
# NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

_hash32, _uniform, _normal = make_scalar_rng(njit)

# Explicit signatures with any-layout ("A") inputs: one compile per dtype instead of one per
# (dtype, contiguity); compiled when this module is first imported (first use of a CPU op),
# and cached on disk by Numba.
_FLOATS = ("float32", "float64")
_PATCH_SIGS = [
    f"void({t}[:,:,:,:], float64[:,:,:], int64[:,:], int64[:], int64, float64, "
    f"{t}[:,:,:,::1], {t}[:,:,:,::1], int64[:,::1], int64[:,::1])"
    for t in _FLOATS
]
_POLY_SIGS = [f"void({t}[:,:,:,:], int64[::1], int64, {t}[:,:,:,:,::1])" for t in _FLOATS]
_CORR_SIGS = [
    f"void({t}[:,:,:,:,::1], {t}[:,:,::1], int64[::1], int64, {t}[:,:,:,::1])" for t in _FLOATS
]
_GRADK_SIGS = [
    f"void({t}[:,:,:,:,::1], {t}[:,:,:,::1], int64[::1], int64, float64[:,:,::1])" for t in _FLOATS
]


#: Below this much work (multiply-adds or copied pixels, a normal draw counting 20) a call runs
#: on one thread: waking the pool costs more than it saves, and far more on a busy machine.
SERIAL_WORK = 200_000


@contextlib.contextmanager
def _threads_for(work: int) -> Iterator[None]:
    """Run the enclosed parallel kernels on one thread when ``work`` is small."""
    if work >= SERIAL_WORK:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


# ------------------------------------------------------------------------------- patches
@njit(cache=True)
def _crop_origin(cdf, b, t, iteration, seed, h, w, width, size):
    """Top-left (even) of the crop of kind ``t`` for image ``b`` (see ``sample_patches``)."""
    stream = STREAM_G_POS if t == 0 else STREAM_D_POS
    n = cdf.shape[2]
    target = _uniform(seed, stream, iteration, 0) * cdf[b, t, n - 1]
    lo, hi = 0, n  # first index with cdf > target (searchsorted right)
    while lo < hi:
        mid = (lo + hi) // 2
        if cdf[b, t, mid] > target:
            hi = mid
        else:
            lo = mid + 1
    flat = min(lo, n - 1)
    row = flat // width
    col = flat - row * width
    top = min(max(0, row - size // 2), h - size)
    left = min(max(0, col - size // 2), w - size)
    return top - top % 2, left - left % 2


@njit(_PATCH_SIGS, parallel=True, cache=True)
def _sample_patches(images, cdf, sizes, seeds, iteration, noise_std, g_out, d_out, g_tl, d_tl):
    bsz, chans, _, width = images.shape
    g_size = g_out.shape[2]
    d_size = d_out.shape[2]
    for b in range(bsz):
        seed = seeds[b]
        g_tl[b, 0], g_tl[b, 1] = _crop_origin(
            cdf, b, 0, iteration, seed, sizes[b, 0], sizes[b, 1], width, g_size
        )
        d_tl[b, 0], d_tl[b, 1] = _crop_origin(
            cdf, b, 1, iteration, seed, sizes[b, 0], sizes[b, 1], width, d_size
        )
    rows = g_size + d_size
    for task in prange(bsz * chans * rows):
        bc = task // rows
        y = task - bc * rows
        b = bc // chans
        c = bc - b * chans
        if y < g_size:
            src = images[b, c, g_tl[b, 0] + y]
            left = g_tl[b, 1]
            for x in range(g_size):
                g_out[b, c, y, x] = src[left + x]
        else:
            y -= g_size
            src = images[b, c, d_tl[b, 0] + y]
            left = d_tl[b, 1]
            seed = seeds[b]
            base = (c * d_size + y) * d_size
            for x in range(d_size):
                if noise_std == 0.0:  # x + 0 * z == x: skip the draws
                    d_out[b, c, y, x] = src[left + x]
                else:
                    z = _normal(seed, STREAM_D_NOISE, iteration, base + x)
                    d_out[b, c, y, x] = src[left + x] + noise_std * z


def sample_patches(
    images: torch.Tensor,
    cdf: torch.Tensor,
    sizes_hw: torch.Tensor,
    seeds: torch.Tensor,
    iteration: int,
    g_size: int,
    d_size: int,
    noise_std: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Numba CPU ``sample_patches`` on validated CPU tensors; see :mod:`kgengine.ops.patches`."""
    bsz, chans = images.shape[:2]
    g_out = torch.empty((bsz, chans, g_size, g_size), dtype=images.dtype)
    d_out = torch.empty((bsz, chans, d_size, d_size), dtype=images.dtype)
    g_tl = torch.empty((bsz, 2), dtype=torch.int64)
    d_tl = torch.empty((bsz, 2), dtype=torch.int64)
    work = bsz * chans * (g_size**2 + 21 * d_size**2)
    with _threads_for(work):
        _sample_patches(
            images.detach().numpy(),
            cdf.detach().numpy(),
            sizes_hw.numpy(),
            seeds.numpy(),
            int(iteration),
            float(noise_std),
            g_out.numpy(),
            d_out.numpy(),
            g_tl.numpy(),
            d_tl.numpy(),
        )
    return g_out, d_out, g_tl, d_tl


# ----------------------------------------------------------------------------- downscale
@njit(_POLY_SIGS, parallel=True, cache=True)
def _polyphase(x, cols, scale, out):
    """``out[b, c, p, r, m] = x[b, c, r, cols[s*m + p]]`` (0 past the end of ``cols``)."""
    bsz, chans, height, _ = x.shape
    ncols = cols.shape[0]
    mlen = out.shape[4]
    for task in prange(bsz * chans * height):
        bc = task // height
        r = task - bc * height
        b = bc // chans
        c = bc - b * chans
        for p in range(scale):
            for m in range(mlen):
                t = scale * m + p
                out[b, c, p, r, m] = x[b, c, r, cols[t]] if t < ncols else 0.0


@njit(_CORR_SIGS, parallel=True, fastmath=True, cache=True)
def _strided_corr(poly, kernel, rows, scale, out):
    """``out[b,c,i,j] = sum_{u,v} k[u,v] * poly[b, c, v%s, rows[s*i+u], j + v//s]``.

    One task per output row; the inner loop runs over contiguous outputs (SIMD).
    """
    bsz, chans, out_h, out_w = out.shape
    kh, kw = kernel.shape[1], kernel.shape[2]
    per_image = kernel.shape[0] > 1
    for task in prange(bsz * chans * out_h):
        bc = task // out_h
        i = task - bc * out_h
        b = bc // chans
        c = bc - b * chans
        kb = b if per_image else 0
        acc = np.zeros(out_w, dtype=out.dtype)
        for u in range(kh):
            r = rows[scale * i + u]
            for v in range(kw):
                kv = kernel[kb, u, v]
                q = v // scale
                src = poly[b, c, v - q * scale, r, q : q + out_w]
                for j in range(out_w):
                    acc[j] += kv * src[j]
        for j in range(out_w):
            out[b, c, i, j] = acc[j]


@njit(_GRADK_SIGS, parallel=True, fastmath=True, cache=True)
def _kernel_grad(poly, grad_out, rows, scale, out):
    """``out[b,u,v] = sum_{c,i,j} g[b,c,i,j] * poly[b, c, v%s, rows[s*i+u], j + v//s]``, the
    gradient of the strided correlation w.r.t. image b's kernel (accumulated in float64)."""
    bsz, chans, out_h, out_w = grad_out.shape
    kh, kw = out.shape[1], out.shape[2]
    for task in prange(bsz * kh):
        b = task // kh
        u = task - b * kh
        for v in range(kw):
            out[b, u, v] = 0.0
        for c in range(chans):
            for i in range(out_h):
                r = rows[scale * i + u]
                g = grad_out[b, c, i]
                for v in range(kw):
                    q = v // scale
                    src = poly[b, c, v - q * scale, r, q : q + out_w]
                    acc = 0.0
                    for j in range(out_w):
                        acc += g[j] * src[j]
                    out[b, u, v] += acc


def _poly(x: torch.Tensor, scale: int, cols: np.ndarray) -> np.ndarray:
    """The poly-phase copy ``(B, C, s, H, ceil(len(cols)/s))`` of ``x`` (see _polyphase)."""
    bsz, chans, height, _ = x.shape
    xn = x.detach().numpy()
    poly = np.empty((bsz, chans, scale, height, -(-cols.shape[0] // scale)), dtype=xn.dtype)
    _polyphase(xn, cols, scale, poly)
    return poly


def downscale(
    x: torch.Tensor, kernel: torch.Tensor, scale: int, rows: np.ndarray, cols: np.ndarray
) -> torch.Tensor:
    """Numba CPU strided correlation on a CPU tensor.

    Args:
        x: (B, C, H, W). kernel: (1 or B, kh, kw), dtype of x.
        rows, cols: int64 source-index tables of length ``(out-1)*s + k`` (reflect or valid).
    Returns:
        (B, C, out_h, out_w) with ``out = (len(table) - k) // s + 1``.
    """
    bsz, chans = x.shape[:2]
    kh, kw = kernel.shape[-2:]
    out_h = (rows.shape[0] - kh) // scale + 1
    out_w = (cols.shape[0] - kw) // scale + 1
    out = torch.empty((bsz, chans, out_h, out_w), dtype=x.dtype)
    with _threads_for(out.numel() * kh * kw):
        poly = _poly(x, scale, cols)
        _strided_corr(poly, kernel.detach().contiguous().numpy(), rows, scale, out.numpy())
    return out


def kernel_grad(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    scale: int,
    rows: np.ndarray,
    cols: np.ndarray,
    kh: int,
    kw: int,
) -> torch.Tensor:
    """Gradient of :func:`downscale` w.r.t. a per-image kernel: (B, kh, kw) float64.

    ``dL/dk[b,u,v] = sum_{c,i,j} dL/dy[b,c,i,j] * x[b, c, rows[s*i+u], cols[s*j+v]]``
    (sum over b for a shared kernel). Same tables as the forward.
    """
    g = grad_out.detach().to(x.dtype).contiguous()
    out = torch.empty((x.shape[0], kh, kw), dtype=torch.float64)
    with _threads_for(g.numel() * kh * kw):
        _kernel_grad(_poly(x, scale, cols), g.numpy(), rows, scale, out.numpy())
    return out
