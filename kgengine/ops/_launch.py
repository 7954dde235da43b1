"""Launch configurations of the CUDA C kernels in ``kernels/*.cu`` (no CuPy needed).

Each function returns ``(name, grid, block, args)``: the template instance to call, the
grid and block shapes, and the argument list in the kernel's order, with tensors for the
pointers and NumPy scalars (``int64`` = ``long long``, ``int32`` = ``int``, ``float64`` =
``double``) for the rest. :mod:`kgengine.ops._cupy` launches them with CuPy; the tests run
the same sources and arguments on the CPU (host-compiled) to check them without a GPU.
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

Launch = tuple[str, tuple[int, int, int], tuple[int, int, int], list[object]]


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
    work = chans * max(g_size, d_size) ** 2
    grid = (math.ceil(work / THREADS), 2, bsz)
    args: list[object] = [
        images, *map(_i, images.stride()),
        cdf, *map(_i, cdf.stride()),
        sizes, seeds,
        _i(chans), _i(width), _i(cdf.shape[2]), _i(iteration), np.float64(noise_std),
        _i(g_size), _i(d_size),
        g_out, d_out, g_tl, d_tl,
    ]  # fmt: skip
    return f"kg_sample_patches<{CTYPE[images.dtype]}>", grid, (THREADS, 1, 1), args


def downscale_launch(
    x: torch.Tensor, k: torch.Tensor, scale: int, reflect: bool, out: torch.Tensor
) -> Launch:
    """``kg_downscale<T>``: 1-D grid over the (contiguous) output; ``k`` (1 or B, kh, kw)."""
    _, chans, height, width = x.shape
    kh, kw = k.shape[-2:]
    out_h, out_w = out.shape[-2:]
    total = out.numel()
    k_sb = k.stride(0) if k.shape[0] > 1 else 0
    blocks = max(1, min(math.ceil(total / THREADS), MAX_BLOCKS))
    args: list[object] = [
        x, *map(_i, x.stride()),
        k, _i(k_sb), _i(k.stride(1)), _i(k.stride(2)),
        _i(chans), _i(height), _i(width), _i(kh), _i(kw), _i(scale),
        np.int32(1 if reflect else 0), _i(out_h), _i(out_w), _i(total),
        out,
    ]  # fmt: skip
    return f"kg_downscale<{CTYPE[x.dtype]}>", (blocks, 1, 1), (THREADS, 1, 1), args
