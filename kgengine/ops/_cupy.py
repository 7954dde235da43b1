"""CuPy backend: the CUDA C kernels of ``kernels/*.cu`` compiled by ``cupy.RawModule``.

The sources ship in the wheel as package data of ``kgengine._cuda`` (mapped from the
top-level ``kernels/`` folder); in a source checkout they are read from ``kernels/``.
Tensors are handed over zero-copy with DLPack (``cupy.from_dlpack``) and the kernels run on
PyTorch's current stream (``cupy.cuda.ExternalStream``). Imported lazily by the ops.
"""

from __future__ import annotations

import functools

import cupy
import torch

from kgengine.ops import _launch as _launch_mod
from kgengine.ops._launch import CTYPE, kernel_source

_OPTIONS = ("--std=c++14",)


@functools.cache
def load_modules() -> dict[str, cupy.RawModule]:
    """Compile (once; CuPy also caches on disk) the two modules; raises if they don't build."""
    rng = kernel_source("rng.cu")
    mods = {
        "patches": cupy.RawModule(
            code=rng + "\n" + kernel_source("patches.cu"),
            options=_OPTIONS,
            name_expressions=[f"kg_sample_patches<{t}>" for t in CTYPE.values()],
        ),
        "downscale": cupy.RawModule(
            code=kernel_source("downscale.cu"),
            options=_OPTIONS,
            name_expressions=[f"kg_downscale<{t}>" for t in CTYPE.values()],
        ),
    }
    for t in CTYPE.values():  # compile now, so that failures surface here
        mods["patches"].get_function(f"kg_sample_patches<{t}>")
        mods["downscale"].get_function(f"kg_downscale<{t}>")
    return mods


class _on_torch_stream:  # noqa: N801 - used like a function
    """Run CuPy work on the tensor's GPU and PyTorch's current stream there."""

    def __init__(self, t: torch.Tensor) -> None:
        if not t.is_cuda:
            raise ValueError(f"the cupy backend needs CUDA tensors, got device {t.device}")
        self.device = cupy.cuda.Device(t.device.index)
        ptr = torch.cuda.current_stream(t.device).cuda_stream
        self.stream = cupy.cuda.ExternalStream(ptr, t.device.index)

    def __enter__(self) -> None:
        self.device.__enter__()
        self.stream.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.stream.__exit__(*exc)
        self.device.__exit__(*exc)


def _cp(t: torch.Tensor) -> cupy.ndarray:
    """Zero-copy CuPy view of a CUDA tensor (DLPack; keeps the tensor's strides)."""
    return cupy.from_dlpack(t.detach())


def _launch(launch: _launch_mod.Launch, like: torch.Tensor) -> None:
    """Run a launch configuration with CuPy on ``like``'s GPU and current stream."""
    name, grid, block, args = launch
    module = "patches" if name.startswith("kg_sample_patches") else "downscale"
    kern = load_modules()[module].get_function(name)
    with _on_torch_stream(like):
        kern(grid, block, tuple(_cp(a) if isinstance(a, torch.Tensor) else a for a in args))


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
    """CuPy ``sample_patches`` on validated CUDA tensors; see :mod:`kgengine.ops.patches`."""
    bsz, chans = images.shape[:2]
    dev = images.device
    g_out = torch.empty((bsz, chans, g_size, g_size), dtype=images.dtype, device=dev)
    d_out = torch.empty((bsz, chans, d_size, d_size), dtype=images.dtype, device=dev)
    g_tl = torch.empty((bsz, 2), dtype=torch.int64, device=dev)
    d_tl = torch.empty((bsz, 2), dtype=torch.int64, device=dev)
    launch = _launch_mod.patches_launch(
        images, cdf, sizes_hw.contiguous(), seeds.contiguous(), iteration, noise_std,
        g_out, d_out, g_tl, d_tl,
    )  # fmt: skip
    _launch(launch, images)
    return g_out, d_out, g_tl, d_tl


def downscale(
    x: torch.Tensor, k: torch.Tensor, scale: int, reflect: bool, out_h: int, out_w: int
) -> torch.Tensor:
    """CuPy strided correlation; ``k`` is (1 or B, kh, kw) in x's dtype/device."""
    bsz, chans = x.shape[:2]
    out = torch.empty((bsz, chans, out_h, out_w), dtype=x.dtype, device=x.device)
    _launch(_launch_mod.downscale_launch(x, k, scale, reflect, out), x)
    return out
