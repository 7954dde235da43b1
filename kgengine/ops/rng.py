"""Counter-based random numbers: every draw is a pure function of (seed, stream, counter, index).

The same formula runs in every backend (PyTorch here, Numba CPU and Numba CUDA through
:func:`make_scalar_rng`, CUDA C for CuPy in ``kernels/rng.cu``; the tests add a NumPy twin,
``tests/rng_numpy.py``), so a per-image random stream does not depend on the backend nor on
how images are batched. All arithmetic is on 32-bit words (``M = 0xFFFFFFFF``):

``fmix32`` (murmur3's finaliser, a bijection on 32-bit words)::

    h ^= h >> 16;  h = (h * 0x85EBCA6B) & M;  h ^= h >> 13;  h = (h * 0xC2B2AE35) & M;  h ^= h >> 16

``hash32(seed, stream, counter, index)`` with ``seed`` a signed 64-bit integer split into
``lo = seed & M`` and ``hi = (seed >> 32) & M`` (two's complement), and ``stream``,
``counter``, ``index`` taken modulo 2^32::

    key = 0x243F6A88
    key = fmix32(key ^ lo); key = fmix32(key ^ hi); key = fmix32(key ^ stream)
    key = fmix32(key ^ counter)
    hash32 = fmix32((fmix32(key ^ index) + key) & M)

(the last line adds the key once more so that two keys never give index-permuted copies of
the same sequence).

``uniform = hash32 * 2^-32``: all 32 bits, a float64 in ``[0, 1 - 2^-32]``.

``normal`` (Box-Muller on the uniforms at indices ``2 * index`` and ``2 * index + 1`` of the
same stream, so ``index < 2^31``)::

    u1 = uniform(seed, stream, counter, 2 * index)
    u2 = uniform(seed, stream, counter, 2 * index + 1)
    normal = sqrt(-2 log(1 - u1)) * cos(2 pi u2)

In PyTorch the words live in int64 tensors; a 32x32-bit product would overflow int64, so the
multiplier is split into 16-bit halves (every intermediate stays below 2^49).

Broadcasting: ``seed`` and a tensor ``counter`` of shape (B,) are aligned with the *leading*
dimension of ``index`` (e.g. (B, N)), i.e. reshaped to (B, 1, ..., 1).
"""

from __future__ import annotations

import math

import torch

#: Streams of the KernelGAN data path (one per use, so draws never collide).
STREAM_G_POS = 0
STREAM_D_POS = 1
STREAM_D_NOISE = 2
STREAM_G_NOISE = 3

MASK32 = 0xFFFFFFFF
KEY0 = 0x243F6A88
MUL1 = 0x85EBCA6B
MUL2 = 0xC2B2AE35
INV_2_32 = 2.0**-32
TWO_PI = 2.0 * math.pi

IntLike = int | torch.Tensor


# ---------------------------------------------------------------------------------- torch
def _mul32_torch(a: torch.Tensor, m: int) -> torch.Tensor:
    """``(a * m) & M`` for 32-bit ``a`` and constant ``m``, without int64 overflow."""
    lo, hi = m & 0xFFFF, m >> 16
    return (a * lo + (((a * hi) & 0xFFFF) << 16)) & MASK32


def fmix32_torch(h: torch.Tensor) -> torch.Tensor:
    """murmur3 ``fmix32`` on an int64 tensor of 32-bit words (see the module docstring)."""
    h = h ^ (h >> 16)
    h = _mul32_torch(h, MUL1)
    h = h ^ (h >> 13)
    h = _mul32_torch(h, MUL2)
    return h ^ (h >> 16)


def _lead(t: IntLike, ndim: int, device: torch.device) -> torch.Tensor:
    """An int64 tensor of ``t`` reshaped to (B, 1, ..., 1) with ``ndim`` dims (if needed)."""
    t = torch.as_tensor(t, dtype=torch.int64, device=device)
    if 0 < t.dim() < ndim:
        t = t.reshape(t.shape + (1,) * (ndim - t.dim()))
    return t


def hash32_torch(seed: IntLike, stream: int, counter: IntLike, index: IntLike) -> torch.Tensor:
    """``hash32`` (module docstring) as an int64 tensor with values in ``[0, 2^32)``.

    Args:
        seed: int or int64 tensor (B,). stream: int. counter: int or int64 tensor (B,).
        index: int or int64 tensor whose leading dim is B (e.g. (B, N)).
    Returns:
        int64 tensor of the broadcast shape.
    """
    index = torch.as_tensor(index, dtype=torch.int64)
    device = index.device
    nd = max(index.dim(), 1)
    seed_t = _lead(seed, nd, device)
    ctr = _lead(counter, nd, device)
    key = torch.full((), KEY0, dtype=torch.int64, device=device)
    key = fmix32_torch(key ^ (seed_t & MASK32))
    key = fmix32_torch(key ^ ((seed_t >> 32) & MASK32))
    key = fmix32_torch(key ^ (int(stream) & MASK32))
    key = fmix32_torch(key ^ (ctr & MASK32))
    h = fmix32_torch(key ^ (index & MASK32))
    return fmix32_torch((h + key) & MASK32)


def uniform(seed: IntLike, stream: int, counter: IntLike, index: IntLike) -> torch.Tensor:
    """Uniform draws ``hash32 * 2^-32`` in ``[0, 1)``, float64 tensor (shape of ``hash32``)."""
    return hash32_torch(seed, stream, counter, index).to(torch.float64) * INV_2_32


def normal(seed: IntLike, stream: int, counter: IntLike, index: IntLike) -> torch.Tensor:
    """Standard normal draws by Box-Muller (module docstring), float64 tensor."""
    index = torch.as_tensor(index, dtype=torch.int64)
    u1 = uniform(seed, stream, counter, 2 * index)
    u2 = uniform(seed, stream, counter, 2 * index + 1)
    return box_muller(u1, u2)


def box_muller(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """``sqrt(-2 log(1 - u1)) * cos(2 pi u2)``: :func:`normal` from its two uniforms (the
    same PyTorch operations, so the same bits for the same contiguous float64 inputs)."""
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(TWO_PI * u2)


# ------------------------------------------------------------------- scalar (Numba) factory
def make_scalar_rng(jit):
    """Build scalar ``(hash32, uniform, normal)`` functions compiled by ``jit``.

    ``jit`` is ``numba.njit`` (CPU) or ``numba.cuda.jit(device=True)``. They work on int64
    scalars with masks (an int64 product that wraps keeps the right low 32 bits); arguments
    are ``(seed, stream, counter, index)`` as in the module docstring.
    """

    @jit
    def fmix32(h):
        h = h ^ (h >> 16)
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h = h ^ (h >> 13)
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    @jit
    def hash32(seed, stream, counter, index):
        key = fmix32(0x243F6A88 ^ (seed & 0xFFFFFFFF))
        key = fmix32(key ^ ((seed >> 32) & 0xFFFFFFFF))
        key = fmix32(key ^ (stream & 0xFFFFFFFF))
        key = fmix32(key ^ (counter & 0xFFFFFFFF))
        h = fmix32(key ^ (index & 0xFFFFFFFF))
        return fmix32((h + key) & 0xFFFFFFFF)

    @jit
    def uniform_s(seed, stream, counter, index):
        return hash32(seed, stream, counter, index) * 2.3283064365386963e-10

    @jit
    def normal_s(seed, stream, counter, index):
        u1 = uniform_s(seed, stream, counter, 2 * index)
        u2 = uniform_s(seed, stream, counter, 2 * index + 1)
        return math.sqrt(-2.0 * math.log1p(-u1)) * math.cos(6.283185307179586 * u2)

    return hash32, uniform_s, normal_s
