"""Counter-based RNG: one formula in every backend, uniform/normal, independent streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rng_numpy as rnp
import torch
from scipy import stats

from kgengine.ops import rng

M = 0xFFFFFFFF
N = 100_000
P_MIN = 1e-3  # fixed seeds: deterministic, so not flaky


def _fmix32_py(h: int) -> int:
    """The module docstring's formula, on Python ints (an oracle independent of the code)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M
    return h ^ (h >> 16)


def _hash_py(seed: int, stream: int, counter: int, index: int) -> int:
    key = _fmix32_py(0x243F6A88 ^ (seed & M))
    key = _fmix32_py(key ^ ((seed >> 32) & M))
    key = _fmix32_py(key ^ (stream & M))
    key = _fmix32_py(key ^ (counter & M))
    return _fmix32_py((_fmix32_py(key ^ (index & M)) + key) & M)


SEEDS = [0, 1, 7, -1, -(2**40) - 3, 2**40 + 5, 2**63 - 1, -(2**63)]
COUNTERS = [0, 1, 2999, 2**32 + 5]


def test_mul32_torch_never_overflows_and_is_exact() -> None:
    a = torch.tensor([0, 1, 0xFFFF, 0x10000, 0xDEADBEEF, M], dtype=torch.int64)
    for m in (rng.MUL1, rng.MUL2, M):
        got = rng._mul32_torch(a, m).tolist()
        assert got == [(int(v) * m) & M for v in a.tolist()]


def test_hash_matches_python_formula_for_edge_inputs() -> None:
    idx = [0, 1, 2, 12345, 2**31 - 1, 2**32 - 1]
    for seed in SEEDS:
        for stream in range(4):
            for counter in COUNTERS:
                expected = [_hash_py(seed, stream, counter, i) for i in idx]
                got_t = rng.hash32_torch(seed, stream, counter, torch.tensor(idx)).tolist()
                got_n = rnp.hash32_np(seed, stream, counter, np.array(idx)).tolist()
                assert got_t == expected
                assert got_n == expected


def test_hash_pinned_values() -> None:
    # Reproducibility across versions: changing the formula must be a deliberate decision.
    assert rnp.hash32_np(0, 0, 0, np.arange(3)).tolist() == [2580873953, 3797714874, 1205618000]
    assert rng.hash32_torch(123, 2, 7, torch.tensor([42])).tolist() == [977794602]
    assert rnp.uniform_np(2024, 1, 3000, 0)[0] == pytest.approx(0.17453519417904317, abs=1e-16)
    assert rnp.normal_np(2024, 2, 3000, 5)[0] == pytest.approx(0.09438279832355843, abs=1e-14)


def test_scalar_factory_matches_vectorised_in_python_and_numba() -> None:
    from numba import njit

    plain = rng.make_scalar_rng(lambda f: f)  # the Numba/CUDA source run as Python
    jitted = rng.make_scalar_rng(njit)  # compiled: int64 products wrap
    cases = [
        (s, st, c, i) for s in SEEDS for st in (0, 2) for c in (0, 2999) for i in (0, 5, 2**31 - 1)
    ]
    seeds = np.array([c[0] for c in cases])
    streams = [c[1] for c in cases]
    for k, (s, st, c, i) in enumerate(cases):
        want_h = _hash_py(s, st, c, i)
        want_u = rnp.uniform_np(seeds[k], streams[k], c, i)[0]
        want_z = rnp.normal_np(seeds[k], streams[k], c, min(i, 2**30))[0]
        for h32, uni, nor in (plain, jitted):
            assert int(h32(int(s), st, c, i)) == want_h
            assert uni(int(s), st, c, i) == want_u
            assert math.isclose(
                nor(int(s), st, c, min(i, 2**30)), want_z, rel_tol=1e-13, abs_tol=1e-13
            )


def test_torch_and_numpy_agree_with_batched_seeds() -> None:
    seeds = torch.tensor([3, -5, 2**40])
    counter = torch.tensor([0, 10, 2999])
    idx = torch.arange(600).reshape(3, 200)
    h_t = rng.hash32_torch(seeds, 2, counter, idx)
    h_n = rnp.hash32_np(seeds.numpy(), 2, counter.numpy(), idx.numpy())
    assert h_t.shape == (3, 200)
    np.testing.assert_array_equal(h_t.numpy(), h_n)
    np.testing.assert_array_equal(
        rng.uniform(seeds, 2, counter, idx).numpy(),
        rnp.uniform_np(seeds.numpy(), 2, counter.numpy(), idx.numpy()),
    )
    np.testing.assert_allclose(
        rng.normal(seeds, 2, counter, idx).numpy(),
        rnp.normal_np(seeds.numpy(), 2, counter.numpy(), idx.numpy()),
        rtol=1e-14, atol=1e-14,
    )  # fmt: skip
    # Row b of a batch is the stream of seed b alone: batching does not change draws.
    for b in range(3):
        alone = rng.hash32_torch(int(seeds[b]), 2, int(counter[b]), idx[b])
        assert torch.equal(alone, h_t[b])


def test_uniform_range_and_resolution() -> None:
    u = rnp.uniform_np(9, 0, 0, np.arange(N))
    assert u.dtype == np.float64
    assert u.min() >= 0.0 and u.max() < 1.0
    assert len(np.unique(u)) > N - 5  # 32 random bits: (almost) no ties


@pytest.mark.parametrize(
    "draw",
    [
        lambda: rnp.uniform_np(1234, rng.STREAM_G_POS, 0, np.arange(N)),  # along the index
        lambda: rnp.uniform_np(1234, rng.STREAM_D_POS, np.arange(N), 0),  # along iterations
        lambda: rnp.uniform_np(np.arange(N), rng.STREAM_G_POS, 17, 0),  # along seeds
    ],
    ids=["index", "counter", "seed"],
)
def test_uniform_ks(draw) -> None:  # noqa: ANN001
    assert stats.kstest(draw(), "uniform").pvalue > P_MIN


def test_normal_ks_and_moments() -> None:
    z = rng.normal(torch.tensor([77]), rng.STREAM_D_NOISE, 5, torch.arange(N)[None]).numpy()[0]
    assert stats.kstest(z, "norm").pvalue > P_MIN
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_streams_seeds_counters_uncorrelated() -> None:
    idx = np.arange(N)
    base = rnp.uniform_np(5, 0, 0, idx)
    others = {
        "stream": rnp.uniform_np(5, 1, 0, idx),
        "seed": rnp.uniform_np(6, 0, 0, idx),
        "seed_hi": rnp.uniform_np(5 + 2**32, 0, 0, idx),
        "counter": rnp.uniform_np(5, 0, 1, idx),
    }
    for name, other in others.items():
        assert abs(_corr(base, other)) < 0.015, name  # std of corr ~ 1/sqrt(N) = 0.003
        assert not np.array_equal(np.sort(base), np.sort(other)), name  # not a permutation
    assert abs(_corr(base[:-1], base[1:])) < 0.015  # lag-1 along the index
    z = rnp.normal_np(5, 2, 0, idx)
    assert abs(_corr(z[:-1], z[1:])) < 0.015


def test_numba_uniform_grid_and_box_muller_are_the_torch_draws() -> None:
    """The trainer's CPU noise: hashes compiled, uniforms and Box-Muller by PyTorch, bitwise
    the draws of ``rng.normal`` (seeds with high bits, a counter offset, odd n)."""
    pytest.importorskip("numba")
    from kgengine.ops import _numba_cpu

    seeds = torch.tensor([3, -5, 2**40])
    u = _numba_cpu.uniform_grid(seeds, rng.STREAM_G_NOISE, 700, 4, 2 * 37)
    want_u = rng.uniform(seeds.view(-1, 1, 1), rng.STREAM_G_NOISE,
                         torch.arange(700, 704).view(1, 4, 1), torch.arange(74).view(1, 1, 74))
    assert torch.equal(u, want_u)
    z = rng.box_muller(u[..., 0::2].contiguous(), u[..., 1::2].contiguous())
    want = rng.normal(seeds.view(-1, 1, 1), rng.STREAM_G_NOISE,
                      torch.arange(700, 704).view(1, 4, 1), torch.arange(37).view(1, 1, 37))
    assert torch.equal(z, want)
