"""The ``numba`` backend: Numba CPU kernels (``njit(parallel=True)``) of the ops.

Imported lazily through the table of :mod:`kgengine.ops.backend` (never at import of
:mod:`kgengine`); the kernels compile then (``cache=True`` keeps the machine code on disk).
The ops have the public ops' signatures; inputs reach the kernels as NumPy views of the CPU
tensors (no copy; any strides).
"""

from __future__ import annotations

import functools
import os
import threading

import numba
import numpy as np
import torch
from numba import njit, prange

import kgengine.ops._custom as _custom
from kgengine.numba_util import lazy_njit, serial_twin
from kgengine.ops._spec import PatchBatch, make_crop_origin, source_index
from kgengine.ops.backend import serial_only
from kgengine.ops.rng import (
    INV_2_32,
    STREAM_D_NOISE,
    STREAM_D_POS,
    STREAM_G_POS,
    make_scalar_rng,
)

# Numba's default "omp" threading layer shares the OpenMP runtime with PyTorch's CPU pool:
# interleaving the two (the trainer calls a Numba op and then torch ops every iteration)
# made each iteration ~8x slower on a 2-core machine (154 vs 19 ms/iteration, measured).
# The "workqueue" layer has its own threads and no such interference. A user's explicit
# NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

# Compiled into the cached kernels below. Numba's disk cache hashes this file's text only, so
# ``COMPILED_IN_DIGEST`` records what they take from other modules (a test compares it with
# ``compiled_in_digest(*COMPILED_IN)``; updating it refreshes the cache).
COMPILED_IN = (make_scalar_rng, make_crop_origin, STREAM_G_POS, STREAM_D_POS, STREAM_D_NOISE,
               INV_2_32)
COMPILED_IN_DIGEST = "ac26979beff2"
_hash32, _uniform, _normal = make_scalar_rng(njit)
_crop_origin = make_crop_origin(njit, _uniform)

# Explicit signatures with any-layout ("A") inputs: one compile per dtype instead of one per
# (dtype, contiguity); compiled on a kernel's first call (``lazy_njit``: training calls the
# serial twins only) and cached on disk by Numba.
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
#: the kernel's serial twin (:func:`kgengine.numba_util.serial_twin`): waking the thread pool
#: costs more than it saves, and far more on a busy machine (G on one 64x64 crop, 343k
#: multiply-adds: 132 vs 98 us for the correlation, 62 vs 10 us for the poly-phase copy, on
#: 2 cores).
SERIAL_WORK = 500_000


#: Held while a parallel kernel runs: Numba's ``workqueue`` threading layer aborts the whole
#: process when two threads enter it at once (API calls from several threads of a service:
#: 0.9.27's review), so a call that finds it held runs the serial twin (the same bits).
_PARALLEL = threading.Lock()


def _pick(parallel, serial, work: int):  # noqa: ANN001, ANN202
    """``parallel`` for at least :data:`SERIAL_WORK` outside :func:`serial_ops`, else
    ``serial``; the parallel one only while no other thread runs one (:data:`_PARALLEL`)."""
    if work < SERIAL_WORK or serial_only():
        return serial
    return functools.partial(_one_parallel, parallel, serial)


def _one_parallel(parallel, serial, *args: object) -> None:  # noqa: ANN001
    """``parallel(*args)``, or ``serial(*args)`` where another thread holds the pool."""
    if not _PARALLEL.acquire(blocking=False):
        return serial(*args)
    try:
        return parallel(*args)
    finally:
        _PARALLEL.release()


# ------------------------------------------------------------------------------- patches
@lazy_njit(_PATCH_SIGS, parallel=True, cache=True)
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


_sample_patches_serial = serial_twin(_sample_patches, _PATCH_SIGS, nogil=True)


def _patches_fill(
    images: torch.Tensor, cdf: torch.Tensor, sizes: torch.Tensor, seeds: torch.Tensor,
    iteration: int, noise_std: float, outs: PatchBatch,
) -> PatchBatch:  # fmt: skip
    """``PatchesFill`` (:mod:`kgengine.ops._custom`): :func:`_sample_patches` into ``outs``."""
    bsz, chans = images.shape[:2]
    g_size, d_size = outs.g_crops.shape[-1], outs.d_crops.shape[-1]
    work = bsz * chans * (g_size**2 + 21 * d_size**2)
    _pick(_sample_patches, _sample_patches_serial, work)(
        images.numpy(), cdf.numpy(), sizes.numpy(), seeds.numpy(), iteration, noise_std,
        *(t.numpy() for t in outs),
    )  # fmt: skip
    return outs


def sample_patches(
    images: torch.Tensor, cdf: torch.Tensor, sizes_hw: torch.Tensor, seeds: torch.Tensor,
    iteration: int, g_size: int, d_size: int, noise_std: float,
) -> PatchBatch:  # fmt: skip
    """Numba CPU :func:`kgengine.ops.sample_patches` (same arguments, CPU tensors): the
    origins image by image, then one parallel task per (image, channel, crop row)."""
    return _custom.sample_patches(
        _patches_fill, images, cdf, sizes_hw, seeds, iteration, g_size, d_size, noise_std
    )


# ----------------------------------------------------------------------------- downscale
@lazy_njit(_POLY_SIGS, parallel=True, cache=True)
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


@lazy_njit(_CORR_SIGS, parallel=True, fastmath=True, cache=True)
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


@lazy_njit(_GRADK_SIGS, parallel=True, fastmath=True, cache=True)
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


_polyphase_serial = serial_twin(_polyphase, _POLY_SIGS, nogil=True)
_strided_corr_serial = serial_twin(_strided_corr, _CORR_SIGS, fastmath=True,
                                   nogil=True)
_kernel_grad_serial = serial_twin(_kernel_grad, _GRADK_SIGS, fastmath=True,
                                  nogil=True)


def _poly(x: torch.Tensor, scale: int, cols: np.ndarray, work: int) -> np.ndarray:
    """The poly-phase copy ``(B, C, s, H, ceil(len(cols)/s))`` of ``x`` (see _polyphase)."""
    bsz, chans, height, _ = x.shape
    xn = x.detach().numpy()
    poly = np.empty((bsz, chans, scale, height, -(-cols.shape[0] // scale)), dtype=xn.dtype)
    _pick(_polyphase, _polyphase_serial, work)(xn, cols, scale, poly)
    return poly


def _tables(
    x: torch.Tensor, kh: int, kw: int, scale: int, border: str, out_h: int, out_w: int
) -> tuple[np.ndarray, np.ndarray]:
    """The source-row and source-column tables of x's (H, W) (``_spec.source_index``)."""
    rows = source_index(x.shape[2], kh, scale, out_h, border)
    cols = source_index(x.shape[3], kw, scale, out_w, border)
    return rows, cols


def _downscale_fill(
    x: torch.Tensor, k: torch.Tensor, scale: int, border: str, out: torch.Tensor
) -> torch.Tensor:
    """``DownscaleFill`` (:mod:`kgengine.ops._custom`): poly-phase copy of x, then
    ``out[b,c,i,j] = sum_{u,v} k[u,v] * x[b, c, rows[s*i+u], cols[s*j+v]]``."""
    kh, kw = k.shape[-2:]
    rows, cols = _tables(x, kh, kw, scale, border, *out.shape[-2:])
    work = out.numel() * kh * kw
    poly = _poly(x, scale, cols, work)
    _pick(_strided_corr, _strided_corr_serial, work)(
        poly, k.contiguous().numpy(), rows, scale, out.numpy())
    return out


def _kernel_grad_fill(
    x: torch.Tensor, grad_out: torch.Tensor, scale: int, border: str, kh: int, kw: int
) -> torch.Tensor:
    """``KernelGrad`` (:mod:`kgengine.ops._custom`): (B, kh, kw) float64

    ``dL/dk[b,u,v] = sum_{c,i,j} dL/dy[b,c,i,j] * x[b, c, rows[s*i+u], cols[s*j+v]]``
    with the forward's tables, accumulated in float64.
    """
    g = grad_out.to(x.dtype).contiguous()
    rows, cols = _tables(x, kh, kw, scale, border, *g.shape[-2:])
    out = torch.empty((x.shape[0], kh, kw), dtype=torch.float64)
    work = g.numel() * kh * kw
    _pick(_kernel_grad, _kernel_grad_serial, work)(
        _poly(x, scale, cols, work), g.numpy(), rows, scale, out.numpy())
    return out


def downscale(
    x: torch.Tensor, kernel: torch.Tensor, scale: int, border: str = "reflect"
) -> torch.Tensor:
    """Numba CPU :func:`kgengine.ops.downscale` (same arguments, CPU tensors).

    Splits the columns into ``s`` poly-phase planes, then sums contiguous row segments
    (SIMD over output columns); the kernel gradient of the backward runs here too.
    """
    return _custom.downscale(
        _downscale_fill, x, kernel, scale, border, kernel_grad=_kernel_grad_fill
    )


@njit(cache=True)
def _hash_grid(seeds, stream, start, out):
    """``out[b, c, j] = hash32(seeds[b], stream, start + c, j)``: out (B, C, J) int64."""
    for b in range(out.shape[0]):
        for c in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[b, c, j] = _hash32(seeds[b], stream, start + c, j)


def uniform_grid(seeds: torch.Tensor, stream: int, start: int, count: int, n: int
                 ) -> torch.Tensor:
    """``rng.uniform(seeds[b], stream, start + c, j)`` for counters c < count and indices
    j < n, (B, count, n) float64, the same values (the hashes are exact integers, computed
    here; their conversion to uniforms is PyTorch's, as in :func:`kgengine.ops.rng.uniform`)."""
    out = torch.empty((seeds.shape[0], count, n), dtype=torch.int64)
    _hash_grid(seeds.numpy(), int(stream), int(start), out.numpy())
    return out.to(torch.float64) * INV_2_32
