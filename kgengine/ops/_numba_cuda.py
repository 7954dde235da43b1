"""The ``numba_cuda`` backend: Numba CUDA kernels of the ops, with the public ops' signatures.

Imported lazily through the table of :mod:`kgengine.ops.backend`. The launch geometry is
the CuPy backend's (:mod:`kgengine.ops._launch`).

CUDA tensors are handed over zero-copy (``numba.cuda.as_cuda_array`` reads
``__cuda_array_interface__``) and the kernels run on PyTorch's current stream. Host (CPU)
tensors are accepted too, copied to the device and back: that path exists for the CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), which is how the kernels are tested without a GPU.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from numba import cuda

import kgengine.ops._custom as _custom
from kgengine.ops._launch import patches_geometry, pixel_geometry
from kgengine.ops._spec import PatchBatch, make_crop_origin
from kgengine.ops.rng import STREAM_D_NOISE, make_scalar_rng

_hash32, _uniform, _normal = make_scalar_rng(cuda.jit(device=True))
_crop_origin = make_crop_origin(cuda.jit(device=True), _uniform)

_NP_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}


def compile_probe() -> None:
    """Compile a one-line kernel now; raises if this Numba CUDA cannot compile at all.

    Seen on a GPU machine: numba-cuda 0.x under NumPy 2.5 fails at its first compilation
    (``np.row_stack`` is gone), after ``numba.cuda.is_available()`` said yes.
    """

    def copy(src, dst):  # noqa: ANN001, ANN202
        i = cuda.grid(1)
        if i < dst.size:
            dst[i] = src[i]

    cuda.jit("void(float32[:], float32[:])")(copy)


@cuda.jit(device=True)
def _reflect(t, n):
    """Whole-sample reflection of index ``t`` into ``[0, n)`` (repeated, any ``t``)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    t = t % period
    if t < 0:
        t += period
    return period - t if t >= n else t


# ------------------------------------------------------------------------------- patches
@cuda.jit
def _patches_kernel(images, cdf, sizes, seeds, iteration, noise_std, g_out, d_out, g_tl, d_tl):
    """Grid (chunks, 2, B): block (x, t, b) gathers a chunk of crop ``t`` of image ``b``."""
    origin = cuda.shared.array(2, dtype=np.int64)
    kind = cuda.blockIdx.y
    b = cuda.blockIdx.z
    seed = int(seeds[b])
    size = g_out.shape[2] if kind == 0 else d_out.shape[2]
    if cuda.threadIdx.x == 0:
        top, left = _crop_origin(
            cdf, b, kind, iteration, seed, sizes[b, 0], sizes[b, 1], images.shape[3], size
        )
        origin[0] = top
        origin[1] = left
        if cuda.blockIdx.x == 0:
            tl = g_tl if kind == 0 else d_tl
            tl[b, 0] = origin[0]
            tl[b, 1] = origin[1]
    cuda.syncthreads()
    p = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    if p >= images.shape[1] * size * size:
        return
    c = p // (size * size)
    y = (p // size) % size
    x = p % size
    v = images[b, c, origin[0] + y, origin[1] + x]
    if kind == 0:
        g_out[b, c, y, x] = v
    else:
        z = _normal(seed, STREAM_D_NOISE, iteration, p)
        d_out[b, c, y, x] = float(v) + noise_std * z  # in float64, rounded once


def _dev(t: torch.Tensor):  # noqa: ANN202 - a numba device array
    """Zero-copy device view of a CUDA tensor, or a device copy of a host tensor."""
    if t.is_cuda:  # no stream sync needed: the kernels run on PyTorch's current stream
        return cuda.as_cuda_array(t.detach(), sync=False)
    return cuda.to_device(np.ascontiguousarray(t.detach().numpy()))


def _stream(t: torch.Tensor):  # noqa: ANN202 - a numba stream
    if t.is_cuda:
        return cuda.external_stream(torch.cuda.current_stream(t.device).cuda_stream)
    return 0  # the default stream


def _host(dev, like: torch.Tensor, out: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """``out`` itself on CUDA (written in place), else the device array copied to the host."""
    if like.is_cuda:
        return out
    return torch.from_numpy(dev.copy_to_host())


def _patches_fill(
    images: torch.Tensor, cdf: torch.Tensor, sizes: torch.Tensor, seeds: torch.Tensor,
    iteration: int, noise_std: float, outs: PatchBatch,
) -> PatchBatch:  # fmt: skip
    """``PatchesFill`` (:mod:`kgengine.ops._custom`): :func:`_patches_kernel` into ``outs``
    (CUDA tensors), or into device copies that come back as new host tensors."""
    bsz, chans = images.shape[:2]
    grid, block = patches_geometry(bsz, chans, outs.g_crops.shape[-1], outs.d_crops.shape[-1])
    douts = [_dev(t) for t in outs]
    with _device_ctx(images):
        _patches_kernel[grid, block, _stream(images)](
            _dev(images), _dev(cdf), _dev(sizes), _dev(seeds), iteration, noise_std, *douts
        )
    return PatchBatch(*(_host(d, images, t) for d, t in zip(douts, outs, strict=True)))


def sample_patches(
    images: torch.Tensor, cdf: torch.Tensor, sizes_hw: torch.Tensor, seeds: torch.Tensor,
    iteration: int, g_size: int, d_size: int, noise_std: float,
) -> PatchBatch:  # fmt: skip
    """Numba CUDA :func:`kgengine.ops.sample_patches` (same arguments; CUDA tensors, or host
    tensors under the simulator): one block per (chunk, kind, image)."""
    return _custom.sample_patches(
        _patches_fill, images, cdf, sizes_hw, seeds, iteration, g_size, d_size, noise_std
    )


# ----------------------------------------------------------------------------- downscale
@functools.cache
def _downscale_kernel(dtype: type):  # noqa: ANN202 - a numba CUDA kernel
    """The kernel for one dtype (so the accumulator has the input's precision)."""
    zero = dtype(0)

    @cuda.jit
    def kernel(x, k, scale, reflect, out):
        """One thread per output pixel ``(b, c, i, j)`` (see :mod:`kgengine.ops.downscale`)."""
        bsz, chans, out_h, out_w = out.shape
        p = cuda.grid(1)
        if p >= bsz * chans * out_h * out_w:
            return
        j = p % out_w
        i = (p // out_w) % out_h
        c = (p // (out_w * out_h)) % chans
        b = p // (out_w * out_h * chans)
        height = x.shape[2]
        width = x.shape[3]
        kh = k.shape[1]
        kw = k.shape[2]
        kb = b if k.shape[0] > 1 else 0
        r0 = scale * i
        c0 = scale * j
        if reflect:
            r0 -= kh // 2
            c0 -= kw // 2
        inside = r0 >= 0 and c0 >= 0 and r0 + kh <= height and c0 + kw <= width
        acc = zero
        for u in range(kh):
            r = r0 + u if inside else _reflect(r0 + u, height)
            for v in range(kw):
                col = c0 + v if inside else _reflect(c0 + v, width)
                acc += k[kb, u, v] * x[b, c, r, col]
        out[b, c, i, j] = acc

    return kernel


class _device_ctx:  # noqa: N801 - used like a function
    """Select the tensor's GPU for the launch (no-op for host tensors / the simulator)."""

    def __init__(self, t: torch.Tensor) -> None:
        self.ctx = cuda.gpus[t.device.index] if t.is_cuda else None

    def __enter__(self) -> None:
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def _downscale_fill(
    x: torch.Tensor, k: torch.Tensor, scale: int, border: str, out: torch.Tensor
) -> torch.Tensor:
    """``DownscaleFill`` (:mod:`kgengine.ops._custom`): one thread per pixel of ``out``."""
    dout = _dev(out)
    grid, block = pixel_geometry(out.numel())
    with _device_ctx(x):
        kernel = _downscale_kernel(_NP_DTYPE[x.dtype])
        kernel[grid, block, _stream(x)](_dev(x), _dev(k), int(scale), border == "reflect", dout)
    return _host(dout, x, out)


def downscale(
    x: torch.Tensor, kernel: torch.Tensor, scale: int, border: str = "reflect"
) -> torch.Tensor:
    """Numba CUDA :func:`kgengine.ops.downscale` (same arguments; CUDA tensors, or host
    tensors under the simulator): one thread per output pixel, accumulating in x's dtype."""
    return _custom.downscale(_downscale_fill, x, kernel, scale, border)
