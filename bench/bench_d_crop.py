"""Benchmark: how close one crop's discriminator forward is to the BLAS it is made of.

Why. #11 asks ``--restarts 4`` for at most 2× one run's wall time; on one thread it takes
2.3-2.5× (docs/PERFORMANCE.md, 0.9.20), and a profile puts 62 % of a batched step in D's
compiled forward and backward. This says how much of a crop's forward is matrix products and
how fast those run against the same BLAS on a large product, i.e. what a faster D could
still win without changing its arithmetic.

What. On one thread (set the BLAS and Numba thread counts to 1 before running): the package's
compiled D forward (:func:`kgengine.discriminator_kernels._forward`) on one 26×26 crop with
the default D (7×7 first layer, 5 blocks of 64 channels, P = 400 positions), seeded random
weights; the same crop's matrix products alone (``np.dot`` from Numba, the calls the forward
makes); its im2col alone; and a 1024×1024 float32 product from Numba as the BLAS's reach.
Medians of ``--rounds`` rounds of ``--repeats`` calls.

Run: ``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python bench/bench_d_crop.py`` (about
20 s) -> ``bench/data/d_crop.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numba import njit

from kgengine import discriminator_kernels as dk
from kgengine.atomic import save_text
from kgengine.sysinfo import machine_line

OUT = Path(__file__).resolve().parent / "data" / "d_crop.md"
#: The default D: crop side, first kernel, channels, blocks.
SIDE, K, C, BLOCKS = 26, 7, 64, 5
P = (SIDE - K + 1) ** 2


@njit(cache=True)
def _products(w0s, cols, wms, hs, wfs):  # noqa: ANN001, ANN202
    """The forward's matrix products of one crop, nothing else."""
    h = np.dot(w0s, cols)
    for m in range(wms.shape[0]):
        h = np.dot(wms[m], hs[m])
    return np.dot(wfs, hs[wms.shape[0]]), h


@njit(cache=True)
def _im2col(x, k, cols):  # noqa: ANN001, ANN202
    dk._im2col(x, k, cols)


@njit(cache=True)
def _big(a, b):  # noqa: ANN001, ANN202
    return np.dot(a, b)


def _median_ms(fn: Callable[[], object], repeats: int, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        times.append((time.perf_counter() - t) / repeats * 1e3)
    return statistics.median(times)


def crop_args() -> tuple:
    """Seeded inputs and buffers of :func:`kgengine.discriminator_kernels._forward` for
    B = 1 image and N = 1 crop, float32."""
    rng = np.random.default_rng(0)
    f = np.float32
    x = rng.random((1, 1, 3, SIDE, SIDE)).astype(f)
    w0s = (rng.standard_normal((1, C, 3 * K * K)) * 0.05).astype(f)
    wms = (rng.standard_normal((1, BLOCKS, C, C)) * 0.1).astype(f)
    wfs = (rng.standard_normal((1, 1, C)) * 0.1).astype(f)
    zeros = np.zeros((1, BLOCKS, C), f)
    return (x, K, w0s, np.zeros((1, C), f), wms, zeros, np.ones((1, BLOCKS, C), f), zeros,
            wfs, np.zeros((1, 1), f), np.empty((1, 1, 3 * K * K, P), f),
            np.empty((1, 1, BLOCKS + 1, C, P), f), np.empty((1, 1, BLOCKS, C, P), f),
            np.empty((1, 1, BLOCKS, C), f), np.empty((1, 1, P), f))


def report(repeats: int, rounds: int) -> str:
    args = crop_args()
    x, w0s, wms, wfs, cols, hs = args[0], args[2], args[4], args[8], args[10], args[11]
    fwd = _median_ms(lambda: dk._forward(0, 1, *args), repeats, rounds)
    prods = _median_ms(lambda: _products(w0s[0], cols[0, 0], wms[0], hs[0, 0], wfs[0]),
                       repeats, rounds)
    im2col = _median_ms(lambda: _im2col(x[0, 0], K, cols[0, 0]), repeats, rounds)
    a = np.random.default_rng(1).random((1024, 1024)).astype(np.float32)
    big = _median_ms(lambda: _big(a, a), 5, rounds)
    flop = 2 * P * (C * 3 * K * K + BLOCKS * C * C + C)
    rate, reach = flop / prods / 1e6, 2 * 1024**3 / big / 1e6
    rows = [
        ("D forward, one crop (`_forward`)", fwd, flop / fwd / 1e6),
        ("its matrix products alone", prods, rate),
        ("its im2col alone", im2col, None),
        ("a 1024×1024 float32 product (the BLAS's reach)", big, reach),
    ]
    lines = ["| what | ms | GFLOP/s |", "|---|---:|---:|"]
    lines += [f"| {w} | {ms:.3f} | {'–' if g is None else f'{g:.1f}'} |" for w, ms, g in rows]
    return "\n".join([
        "# One crop's discriminator forward against its BLAS", "",
        "`OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python bench/bench_d_crop.py` (module "
        f"docstring). {machine_line()}. One thread; "
        f"the default D on a {SIDE}×{SIDE} crop ({P} positions, {flop / 1e6:.1f} MFLOP); "
        f"medians of {rounds} rounds of {repeats} calls.", "", *lines, "",
        f"The products are {prods / fwd:.0%} of the forward and run at {rate / reach:.0%} of "
        "the large product's rate.", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    text = report(a.repeats, a.rounds)
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
