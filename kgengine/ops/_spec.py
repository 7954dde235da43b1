"""What every backend of the ops shares: argument checks, output shapes, index tables.

Each backend module (:mod:`kgengine.ops.backend` lists them) implements an op with the
public op's signature and starts with the check here, so the messages, the accepted
arguments and the output shapes are the same in every backend. No Numba or CuPy here.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from kgengine.ops.rng import STREAM_D_POS, STREAM_G_POS

#: ``border`` of :func:`kgengine.ops.downscale`.
BORDERS = ("reflect", "valid")
#: ``scale`` of :func:`kgengine.ops.downscale`.
SCALES = (1, 2, 3, 4)
#: dtypes the custom backends compute in; others (e.g. float16) use the torch reference.
FAST_DTYPES = (torch.float32, torch.float64)


def device_of(name: str, t: object) -> torch.device:
    """The device of the (B,C,H,W) tensor argument ``name``; ValueError if not a tensor."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a (B,C,H,W) tensor, got {type(t).__name__}")
    return t.device


# ---------------------------------------------------------------------------- downscale
def reflect_index(n: int, before: int, after: int) -> np.ndarray:
    """Indices into ``[0, n)`` of a whole-sample reflected extension by ``before``/``after``.

    Works for any pad (repeated reflection), including ``n == 1``. Returns an int64 array of
    length ``before + n + after``; e.g. ``n=3, before=2`` starts ``[2, 1, 0, 1, 2, ...]``.
    """
    idx = np.arange(-before, n + after)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx).astype(np.int64)


def output_size(h: int, w: int, kh: int, kw: int, scale: int, border: str) -> tuple[int, int]:
    """Output ``(out_h, out_w)``: ``ceil(n/s)`` for reflect, ``(n - k)//s + 1`` for valid."""
    if border == "reflect":
        return -(-h // scale), -(-w // scale)
    return (h - kh) // scale + 1, (w - kw) // scale + 1


def check_downscale(x: torch.Tensor, kernel: object, scale: int, border: str) -> torch.Tensor:
    """Validate the arguments of ``downscale``; return the kernel as (1 or B, kh, kw).

    Args:
        x: (B, C, H, W) floating-point tensor, non-empty.
        kernel: (kh, kw) or (B, kh, kw), tensor or array-like, kh, kw >= 1.
        scale: one of :data:`SCALES`. border: one of :data:`BORDERS`.
    Returns:
        The kernel as a (1 or B, kh, kw) tensor in x's dtype and on x's device.
    Raises:
        ValueError: "<argument>: expected ..., got ..." for the first bad argument.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a (B,C,H,W) tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point tensor, got {x.dtype}")
    if border not in BORDERS:
        raise ValueError(f"border: expected one of {BORDERS}, got {border!r}")
    # 2.0 and True compare equal to 2 and 1 but fail deep in a backend (0.9.29)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    b, _, h, w = x.shape
    if not isinstance(kernel, torch.Tensor):
        kernel = torch.as_tensor(np.asarray(kernel))
    k = kernel.to(dtype=x.dtype, device=x.device)
    if k.dim() == 2:
        k = k.unsqueeze(0)
    if k.dim() != 3 or k.shape[0] not in (1, b) or min(k.shape[-2:]) < 1:
        raise ValueError(
            f"kernel: expected (kh,kw) or ({b},kh,kw) with kh,kw >= 1, got {tuple(kernel.shape)}"
        )
    kh, kw = k.shape[-2:]
    if min(b, x.shape[1], h, w) < 1:
        raise ValueError(f"x: expected non-empty (B,C,H,W), got {tuple(x.shape)}")
    if border == "valid" and (h < kh or w < kw):
        raise ValueError(
            f"border='valid' needs the image ({h}x{w}) at least as large as the kernel ({kh}x{kw})"
        )
    return k


def source_index(n: int, k: int, scale: int, out: int, border: str) -> np.ndarray:
    """Source row (or column) read by tap ``t = s*i + u``, for ``t < (out-1)*s + k``.

    reflect: ``R_n(t - k//2)``; valid: ``t``. int64 array of length ``(out-1)*s + k``.
    """
    length = (out - 1) * scale + k
    if border == "valid":
        return np.arange(length, dtype=np.int64)
    before = k // 2
    return reflect_index(n, before, max(0, length - before - n))[:length]


def empty_downscale(x: torch.Tensor, k: torch.Tensor, scale: int, border: str) -> torch.Tensor:
    """The uninitialised (B, C, out_h, out_w) output of ``downscale``, x's dtype and device."""
    b, c, h, w = x.shape
    out_h, out_w = output_size(h, w, *k.shape[-2:], scale, border)
    return torch.empty((b, c, out_h, out_w), dtype=x.dtype, device=x.device)


# ------------------------------------------------------------------------ sample_patches
class PatchBatch(NamedTuple):
    """Crops of one iteration.

    g_crops: (B, C, g_size, g_size), d_crops: (B, C, d_size, d_size), contiguous, images'
    dtype; g_topleft, d_topleft: (B, 2) int64 ``(top, left)`` of each crop.
    """

    g_crops: torch.Tensor
    d_crops: torch.Tensor
    g_topleft: torch.Tensor
    d_topleft: torch.Tensor


def check_patches(
    images: torch.Tensor,
    cdf: torch.Tensor,
    sizes_hw: torch.Tensor,
    seeds: torch.Tensor,
    g_size: int,
    d_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the arguments of ``sample_patches``; return ``(sizes_hw, seeds)`` as int64
    tensors on the images' device ((B, 2) and (B,)).

    Reads ``sizes_hw`` on the host: a CPU tensor at every call; a GPU one (a device-to-host
    copy, i.e. a synchronisation) the first time it is seen, and again only if it was
    modified in place since: a trainer calling this every iteration with the same
    tensor never synchronises.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a (B,C,H,W) tensor, got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images: expected a floating-point tensor, got {images.dtype}")
    b, _, h, w = images.shape
    if tuple(cdf.shape) != (b, 2, h * w):
        raise ValueError(f"cdf: expected shape ({b}, 2, {h * w}), got {tuple(cdf.shape)}")
    if cdf.dtype != torch.float64:
        raise ValueError(f"cdf: expected float64, got {cdf.dtype}")
    if tuple(sizes_hw.shape) != (b, 2):
        raise ValueError(f"sizes_hw: expected shape ({b}, 2), got {tuple(sizes_hw.shape)}")
    if tuple(seeds.shape) != (b,):
        raise ValueError(f"seeds: expected shape ({b},), got {tuple(seeds.shape)}")
    if min(g_size, d_size) < 1:
        raise ValueError(f"crop sizes must be >= 1, got g_size={g_size}, d_size={d_size}")
    need = max(g_size, d_size)
    key = (h, w, need)
    stamp = (sizes_hw._version, key)  # the tensor's in-place version counter
    # On the CPU the check costs microseconds and a write through a NumPy alias leaves the
    # version counter as it was (the Numba kernels then read outside the batch, 0.9.29):
    # only a GPU tensor, whose check is a synchronisation, is checked once a version.
    if sizes_hw.device.type == "cpu" or getattr(sizes_hw, "_kgengine_checked", None) != stamp:
        _check_sizes(sizes_hw, h, w, need)
        sizes_hw._kgengine_checked = stamp
    dev = images.device
    return sizes_hw.to(dev, torch.int64), seeds.to(dev, torch.int64)


def _check_sizes(sizes_hw: torch.Tensor, h: int, w: int, need: int) -> None:
    """Every (h_b, w_b) fits the padded batch (h, w) and holds a ``need``-px crop."""
    for i, (hb, wb) in enumerate(sizes_hw.detach().cpu().tolist()):
        if hb > h or wb > w:
            raise ValueError(f"image {i}: size {hb}x{wb} exceeds the padded batch {h}x{w}")
        if hb < need or wb < need:
            raise ValueError(
                f"image {i} is {hb}x{wb} pixels, smaller than the {need}x{need} crop; "
                "use a larger image or a smaller crop size"
            )


def make_crop_origin(jit: Callable[[Any], Any], uniform: Callable[..., float]) -> Any:
    """The crop-origin formula of :mod:`kgengine.ops.patches` as a scalar function compiled
    by ``jit`` (``numba.njit`` or ``numba.cuda.jit(device=True)``), for both Numba backends.

    ``uniform`` is the same ``jit``'s scalar RNG (:func:`kgengine.ops.rng.make_scalar_rng`).
    The function ``crop_origin(cdf, b, kind, iteration, seed, h, w, width, size)`` takes
    ``cdf`` (B, 2, H*W) float64, the image's size ``h x w`` and the batch ``width`` W, and
    returns the even ``(top, left)``::

        flat = min{f : cdf[b, kind, f] > uniform(seed, stream, iteration, 0) * cdf[b, kind, -1]}
        top  = min(max(0, flat // W - size//2), h - size), rounded down to even; left alike.
    """

    @jit
    def crop_origin(cdf, b, kind, iteration, seed, h, w, width, size):  # noqa: ANN001, ANN202
        stream = STREAM_G_POS if kind == 0 else STREAM_D_POS
        n = cdf.shape[2]
        target = uniform(seed, stream, iteration, 0) * cdf[b, kind, n - 1]
        lo = 0
        hi = n
        while lo < hi:  # first index with cdf > target (searchsorted right)
            mid = (lo + hi) // 2
            if cdf[b, kind, mid] > target:
                hi = mid
            else:
                lo = mid + 1
        flat = min(lo, n - 1)
        row = flat // width
        col = flat - row * width
        top = min(max(0, row - size // 2), h - size)
        left = min(max(0, col - size // 2), w - size)
        return top - top % 2, left - left % 2

    return crop_origin


def empty_patches(images: torch.Tensor, g_size: int, d_size: int) -> PatchBatch:
    """Uninitialised contiguous outputs of ``sample_patches`` on the images' device."""
    bsz, chans = images.shape[:2]
    dev = images.device
    return PatchBatch(
        torch.empty((bsz, chans, g_size, g_size), dtype=images.dtype, device=dev),
        torch.empty((bsz, chans, d_size, d_size), dtype=images.dtype, device=dev),
        torch.empty((bsz, 2), dtype=torch.int64, device=dev),
        torch.empty((bsz, 2), dtype=torch.int64, device=dev),
    )
