"""NumPy twin of :mod:`kgengine.ops.rng` (the same formula on uint64 words), for the tests.

An oracle written independently of the PyTorch code: ``tests/test_ops_rng.py`` checks that
both agree, and ``tests/test_ops_patches.py`` builds its spec oracle on it.
"""

from __future__ import annotations

import numpy as np

from kgengine.ops.rng import INV_2_32, KEY0, MASK32, MUL1, MUL2, TWO_PI


def _mul32_np(a: np.ndarray, m: int) -> np.ndarray:
    return (a * np.uint64(m)) & np.uint64(MASK32)  # < 2^64: exact in uint64


def fmix32_np(h: np.ndarray) -> np.ndarray:
    """murmur3 ``fmix32`` on a uint64 array of 32-bit words."""
    h = h ^ (h >> np.uint64(16))
    h = _mul32_np(h, MUL1)
    h = h ^ (h >> np.uint64(13))
    h = _mul32_np(h, MUL2)
    return h ^ (h >> np.uint64(16))


def _lead_np(t: int | np.ndarray, ndim: int) -> np.ndarray:
    t = np.asarray(t, dtype=np.int64)
    if 0 < t.ndim < ndim:
        t = t.reshape(t.shape + (1,) * (ndim - t.ndim))
    return t


def _word(t: np.ndarray) -> np.ndarray:
    return (np.asarray(t, dtype=np.int64) & MASK32).astype(np.uint64)


def hash32_np(
    seed: int | np.ndarray, stream: int, counter: int | np.ndarray, index: int | np.ndarray
) -> np.ndarray:
    """NumPy twin of :func:`kgengine.ops.rng.hash32_torch`; int64 values in ``[0, 2^32)``.

    ``seed`` and ``counter`` (scalars or (B,)) align with the leading dim of ``index``.
    """
    index = np.atleast_1d(np.asarray(index, dtype=np.int64))
    nd = index.ndim
    seed_a = _lead_np(seed, nd)
    ctr = _lead_np(counter, nd)
    key = np.atleast_1d(np.uint64(KEY0))
    key = fmix32_np(key ^ _word(seed_a))
    key = fmix32_np(key ^ _word(seed_a >> 32))
    key = fmix32_np(key ^ np.uint64(int(stream) & MASK32))
    key = fmix32_np(key ^ _word(ctr))
    h = fmix32_np(key ^ _word(index))
    return fmix32_np((h + key) & np.uint64(MASK32)).astype(np.int64)


def uniform_np(
    seed: int | np.ndarray, stream: int, counter: int | np.ndarray, index: int | np.ndarray
) -> np.ndarray:
    """NumPy twin of :func:`kgengine.ops.rng.uniform`: ``hash32 * 2^-32``, float64 array."""
    return hash32_np(seed, stream, counter, index).astype(np.float64) * INV_2_32


def normal_np(
    seed: int | np.ndarray, stream: int, counter: int | np.ndarray, index: int | np.ndarray
) -> np.ndarray:
    """NumPy twin of :func:`kgengine.ops.rng.normal` (Box-Muller), float64 array."""
    index = np.asarray(index, dtype=np.int64)
    u1 = uniform_np(seed, stream, counter, 2 * index)
    u2 = uniform_np(seed, stream, counter, 2 * index + 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(TWO_PI * u2)
