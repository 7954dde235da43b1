"""The ``cupy`` backend: the CUDA C kernels of ``kernels/*.cu`` compiled by ``cupy.RawModule``.

The sources ship in the wheel as package data of ``kgengine._cuda`` (mapped from the
top-level ``kernels/`` folder); in a source checkout they are read from ``kernels/``.
Tensors are handed over zero-copy with DLPack (``cupy.from_dlpack``) and the kernels run on
PyTorch's current stream (``cupy.cuda.ExternalStream``). Imported lazily, through the table
of :mod:`kgengine.ops.backend`; the ops here have the public ops' signatures.
"""

from __future__ import annotations

import functools

import cupy
import torch

import kgengine.ops._custom as _custom
from kgengine.ops._launch import CTYPE, Launch, downscale_launch, kernel_source, patches_launch
from kgengine.ops._spec import PatchBatch

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


def _launch(launch: Launch, like: torch.Tensor) -> None:
    """Run a launch configuration with CuPy on ``like``'s GPU and current stream."""
    name, grid, block, args = launch
    module = "patches" if name.startswith("kg_sample_patches") else "downscale"
    kern = load_modules()[module].get_function(name)
    with _on_torch_stream(like):
        kern(grid, block, tuple(_cp(a) if isinstance(a, torch.Tensor) else a for a in args))


def _patches_fill(
    images: torch.Tensor, cdf: torch.Tensor, sizes: torch.Tensor, seeds: torch.Tensor,
    iteration: int, noise_std: float, outs: PatchBatch,
) -> PatchBatch:  # fmt: skip
    """``PatchesFill`` (:mod:`kgengine.ops._custom`): ``kg_sample_patches<T>`` into ``outs``."""
    args = (images, cdf, sizes.contiguous(), seeds.contiguous(), iteration, noise_std, *outs)
    _launch(patches_launch(*args), images)
    return outs


def _downscale_fill(
    x: torch.Tensor, k: torch.Tensor, scale: int, border: str, out: torch.Tensor
) -> torch.Tensor:
    """``DownscaleFill`` (:mod:`kgengine.ops._custom`): ``kg_downscale<T>`` into ``out``."""
    _launch(downscale_launch(x, k, scale, border, out), x)
    return out


def sample_patches(
    images: torch.Tensor, cdf: torch.Tensor, sizes_hw: torch.Tensor, seeds: torch.Tensor,
    iteration: int, g_size: int, d_size: int, noise_std: float,
) -> PatchBatch:  # fmt: skip
    """CuPy :func:`kgengine.ops.sample_patches` (same arguments, CUDA tensors): one block
    per (chunk, kind, image) of ``kernels/patches.cu``."""
    return _custom.sample_patches(
        _patches_fill, images, cdf, sizes_hw, seeds, iteration, g_size, d_size, noise_std
    )


def downscale(
    x: torch.Tensor, kernel: torch.Tensor, scale: int, border: str = "reflect"
) -> torch.Tensor:
    """CuPy :func:`kgengine.ops.downscale` (same arguments, CUDA tensors): one thread per
    output pixel of ``kernels/downscale.cu``, accumulating in x's dtype."""
    return _custom.downscale(_downscale_fill, x, kernel, scale, border)
