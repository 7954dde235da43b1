"""Launch configurations of the CUDA C kernels in ``kernels/*.cu`` (no CuPy needed).

The launch geometry (threads per block, grids) is shared with the Numba CUDA backend
(:func:`patches_geometry`, :func:`pixel_geometry`), so both GPU backends split the work the
same way.

``*_launch`` functions return ``(name, grid, block, args)``: the template instance to call,
the grid and block shapes, and the argument list in the kernel's order, with tensors for the
pointers and NumPy scalars (``int64`` = ``long long``, ``int32`` = ``int``, ``float64`` =
``double``) for the rest. :mod:`kgengine.ops._cupy` launches them with CuPy; the tests
(``tests/cuda_host.py``) run the same sources and arguments on the CPU, host-compiled, to
check them without a GPU.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch

THREADS = 256
MAX_BLOCKS = 65535 * 16  # downscale: a grid-stride loop covers any remainder
CTYPE = {torch.float32: "float", torch.float64: "double"}

Dim3 = tuple[int, int, int]
Launch = tuple[str, Dim3, Dim3, list[object]]


def kernel_source(name: str) -> str:
    """Text of ``kernels/<name>``: the installed package data (``kgengine._cuda``), else the
    ``kernels/`` folder of a source checkout."""
    try:
        return resources.files("kgengine._cuda").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        path = Path(__file__).resolve().parents[2] / "kernels" / name
        return path.read_text(encoding="utf-8")


def _i(v: int) -> np.int64:
    return np.int64(v)


def block_threads(work: int) -> int:
    """Threads per block: :data:`THREADS`, or fewer (a multiple of the 32-thread warp) when
    the whole launch has less ``work`` (threads' worth of elements) than that."""
    return min(THREADS, max(32, 32 * math.ceil(work / 32)))


def patches_geometry(bsz: int, chans: int, g_size: int, d_size: int) -> tuple[Dim3, Dim3]:
    """``(grid, block)`` of the patch kernels: grid (chunks, 2 kinds, B), one thread per
    element of the larger crop, ``chunks * threads >= C * max(g_size, d_size)**2``."""
    work = chans * max(g_size, d_size) ** 2
    threads = block_threads(work)
    return (math.ceil(work / threads), 2, bsz), (threads, 1, 1)


def pixel_geometry(total: int, max_blocks: int | None = None) -> tuple[Dim3, Dim3]:
    """``(grid, block)`` of a 1-D launch with one thread per output element (``total``);
    with ``max_blocks`` the grid is capped and the kernel loops (grid-stride) over the rest."""
    threads = block_threads(total)
    blocks = max(1, math.ceil(total / threads))
    if max_blocks is not None:
        blocks = min(blocks, max_blocks)
    return (blocks, 1, 1), (threads, 1, 1)


def patches_launch(
    images: torch.Tensor,
    cdf: torch.Tensor,
    sizes: torch.Tensor,
    seeds: torch.Tensor,
    iteration: int,
    noise_std: float,
    g_out: torch.Tensor,
    d_out: torch.Tensor,
    g_tl: torch.Tensor,
    d_tl: torch.Tensor,
) -> Launch:
    """``kg_sample_patches<T>``: grid (chunks, 2, B); ``sizes``, ``seeds`` and the outputs
    must be contiguous, ``images`` and ``cdf`` may have any strides."""
    bsz, chans, _, width = images.shape
    g_size, d_size = g_out.shape[-1], d_out.shape[-1]
    grid, block = patches_geometry(bsz, chans, g_size, d_size)
    args: list[object] = [
        images, *map(_i, images.stride()),
        cdf, *map(_i, cdf.stride()),
        sizes, seeds,
        _i(chans), _i(width), _i(cdf.shape[2]), _i(iteration), np.float64(noise_std),
        _i(g_size), _i(d_size),
        g_out, d_out, g_tl, d_tl,
    ]  # fmt: skip
    return f"kg_sample_patches<{CTYPE[images.dtype]}>", grid, block, args


def downscale_launch(
    x: torch.Tensor, k: torch.Tensor, scale: int, border: str, out: torch.Tensor
) -> Launch:
    """``kg_downscale<T>``: 1-D grid over the (contiguous) (B, C, out_h, out_w) ``out``;
    ``x`` (B, C, H, W) and ``k`` (1 or B, kh, kw) of the same dtype, any strides."""
    _, chans, height, width = x.shape
    kh, kw = k.shape[-2:]
    out_h, out_w = out.shape[-2:]
    total = out.numel()
    k_sb = k.stride(0) if k.shape[0] > 1 else 0
    grid, block = pixel_geometry(total, MAX_BLOCKS)
    args: list[object] = [
        x, *map(_i, x.stride()),
        k, _i(k_sb), _i(k.stride(1)), _i(k.stride(2)),
        _i(chans), _i(height), _i(width), _i(kh), _i(kw), _i(scale),
        np.int32(1 if border == "reflect" else 0), _i(out_h), _i(out_w), _i(total),
        out,
    ]  # fmt: skip
    return f"kg_downscale<{CTYPE[x.dtype]}>", grid, block, args
