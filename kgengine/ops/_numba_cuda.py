"""Numba CUDA kernels of the ops; imported lazily by the ops.

CUDA tensors are handed over zero-copy (``numba.cuda.as_cuda_array`` reads
``__cuda_array_interface__``) and the kernels run on PyTorch's current stream. Host (CPU)
tensors are accepted too, copied to the device and back: that path exists for the CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``), which is how the kernels are tested without a GPU.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from numba import cuda

from kgengine.ops.rng import STREAM_D_NOISE, STREAM_D_POS, STREAM_G_POS, make_scalar_rng

_hash32, _uniform, _normal = make_scalar_rng(cuda.jit(device=True))

THREADS = 256
_NP_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}


def _threads(work: int) -> int:
    """Threads per block: 256, or fewer (a multiple of 32) for tiny launches (simulator)."""
    return min(THREADS, max(32, 32 * math.ceil(work / 32)))


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
        n = cdf.shape[2]
        stream = STREAM_G_POS if kind == 0 else STREAM_D_POS
        target = _uniform(seed, stream, iteration, 0) * cdf[b, kind, n - 1]
        lo = 0
        hi = n
        while lo < hi:  # first index with cdf > target
            mid = (lo + hi) // 2
            if cdf[b, kind, mid] > target:
                hi = mid
            else:
                lo = mid + 1
        flat = min(lo, n - 1)
        width = images.shape[3]
        row = flat // width
        col = flat - row * width
        top = min(max(0, row - size // 2), sizes[b, 0] - size)
        left = min(max(0, col - size // 2), sizes[b, 1] - size)
        origin[0] = top - top % 2
        origin[1] = left - left % 2
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
    """Numba CUDA ``sample_patches`` on validated tensors; see :mod:`kgengine.ops.patches`."""
    bsz, chans = images.shape[:2]
    dev = images.device
    outs = [
        torch.empty((bsz, chans, g_size, g_size), dtype=images.dtype, device=dev),
        torch.empty((bsz, chans, d_size, d_size), dtype=images.dtype, device=dev),
        torch.empty((bsz, 2), dtype=torch.int64, device=dev),
        torch.empty((bsz, 2), dtype=torch.int64, device=dev),
    ]
    douts = [_dev(t) for t in outs]
    work = chans * max(g_size, d_size) ** 2
    tpb = _threads(work)
    grid = (math.ceil(work / tpb), 2, bsz)
    with _device_ctx(images):
        _patches_kernel[grid, tpb, _stream(images)](
            _dev(images),
            _dev(cdf),
            _dev(sizes_hw),
            _dev(seeds),
            int(iteration),
            float(noise_std),
            *douts,
        )
    return tuple(_host(d, images, t) for d, t in zip(douts, outs, strict=True))


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


def downscale(
    x: torch.Tensor, k: torch.Tensor, scale: int, reflect: bool, out_h: int, out_w: int
) -> torch.Tensor:
    """Numba CUDA strided correlation; ``k`` is (1 or B, kh, kw) in x's dtype/device."""
    bsz, chans = x.shape[:2]
    out = torch.empty((bsz, chans, out_h, out_w), dtype=x.dtype, device=x.device)
    dout = _dev(out)
    work = out.numel()
    tpb = _threads(work)
    with _device_ctx(x):
        kernel = _downscale_kernel(_NP_DTYPE[x.dtype])
        kernel[math.ceil(work / tpb), tpb, _stream(x)](
            _dev(x), _dev(k), int(scale), bool(reflect), dout
        )
    return _host(dout, x, out)
