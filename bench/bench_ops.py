"""Benchmark of the custom ops against their library baselines, side by side in one run.

    python bench/bench_ops.py [--repeats 7] [--dtype float32|float64]

1. Strided conv-downscale of a 2040x1356 RGB image (reflect borders, the kgengine
   convention), 13x13 kernel at x2 and 25x25 kernel at x4: PyTorch ``F.conv2d`` with stride
   (the reference, ratio 1.00), SciPy ``ndimage.correlate`` + sub-sampling, Numba CPU, and on
   a CUDA machine PyTorch CUDA, CuPy and Numba CUDA.
2. Patch sampling per iteration (G crop 64, D crop 26, noise 1/255) from a padded batch of
   1020x678 RGB images, B = 1 and B = 16: the PyTorch reference vs Numba CPU (and the GPU
   backends on a CUDA machine).
3. The trainer's use of the op: G as a valid 13x13 strided correlation on B 64x64 RGB crops,
   forward + backward to the per-image kernels.

Seeded inputs, warm-up runs (which also pay any JIT compile), then the median and the 20/80
percentiles of ``--repeats`` timed runs; every result is checked against the reference first.
Prints the machine and a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from scipy import ndimage

from kgengine.ops import downscale, downscale_ref, sample_patches, sample_patches_ref
from kgengine.ops.backend import availability
from kgengine.sysinfo import cpu_name


def machine() -> str:
    """CPU model, cores, library versions and GPU (if any), on one line."""
    cpu = cpu_name()
    import numba
    import scipy

    parts = [
        cpu,
        f"{os.cpu_count()} cores",
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        f"numba {numba.__version__} ({numba.get_num_threads()} threads)",
        f"scipy {scipy.__version__}",
    ]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name()}")
    return ", ".join(parts)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, float, float]:
    """(median, p20, p80) seconds of ``fn`` after ``warmup`` calls (CUDA synchronised)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    q = np.quantile(times, [0.2, 0.8])
    return statistics.median(times), float(q[0]), float(q[1])


def scipy_downscale(x: np.ndarray, k: np.ndarray, scale: int) -> np.ndarray:
    """SciPy baseline: full-resolution correlation ('mirror' = whole-sample reflect), then
    keep every ``scale``-th pixel. x: (C, H, W)."""
    return np.stack([ndimage.correlate(ch, k, mode="mirror")[::scale, ::scale] for ch in x])


def _on_gpu(label: str) -> bool:
    return "CUDA" in label or label in ("cupy", "numba_cuda")


def _fmt(t: tuple[float, float, float]) -> str:
    return f"{t[0] * 1e3:.1f} ({t[1] * 1e3:.1f}-{t[2] * 1e3:.1f})"


def bench_downscale(repeats: int, dtype: torch.dtype) -> list[list[str]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 1356, 2040, generator=g, dtype=dtype)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    rows = []
    for size, scale in ((13, 2), (25, 4)):
        k = torch.rand(size, size, generator=g, dtype=dtype)
        k /= k.sum()
        ref = downscale_ref(x, k, scale)
        xn, kn = x[0].numpy(), k.numpy()
        assert np.abs(scipy_downscale(xn, kn, scale) - ref[0].numpy()).max() < tol
        runs: list[tuple[str, Callable[[], object], int]] = [
            ("torch F.conv2d stride (reference)", partial(downscale_ref, x, k, scale), repeats),
            ("scipy correlate + subsample", partial(scipy_downscale, xn, kn, scale), 3),
        ]
        if availability("numba")[0]:
            fn = partial(downscale, x, k, scale, backend="numba")
            assert (fn() - ref).abs().max() < tol, "numba disagrees"
            runs.append(("numba CPU", fn, repeats))
        if torch.cuda.is_available():
            xc, kc = x.cuda(), k.cuda()
            runs.append(("torch CUDA F.conv2d", partial(downscale_ref, xc, kc, scale), repeats))
            for name in ("cupy", "numba_cuda"):
                if availability(name)[0]:
                    fn = partial(downscale, xc, kc, scale, backend=name)
                    assert (fn().cpu() - ref).abs().max() < tol, f"{name} disagrees"
                    runs.append((name, fn, repeats))
        base: dict[bool, float] = {}
        for label, fn, reps in runs:
            t = timed(fn, reps, warmup=1 if "scipy" in label else 2)
            ratio = base.setdefault(_on_gpu(label), t[0]) / t[0]
            rows.append([f"downscale {size}x{size} x{scale}", label, _fmt(t), f"{ratio:.2f}"])
    return rows


def _fwd_bwd(x: torch.Tensor, k: torch.Tensor, backend: str) -> None:
    downscale(x, k, 2, "valid", backend=backend).sum().backward()


def bench_g_step(repeats: int, dtype: torch.dtype) -> list[list[str]]:
    """KernelGAN's G on D's crops: valid 13x13 x2 on (B, 3, 64, 64), forward + backward to
    the per-image kernels (the trainer's use of the op)."""
    rows = []
    for bsz in (1, 16):
        g = torch.Generator().manual_seed(2)
        x = torch.rand(bsz, 3, 64, 64, generator=g, dtype=dtype)
        k = torch.rand(bsz, 13, 13, generator=g, dtype=dtype).requires_grad_(True)
        runs = [("torch (reference autograd)", partial(_fwd_bwd, x, k, "torch"))]
        if availability("numba")[0]:
            runs.append(("numba CPU (+ numba kernel grad)", partial(_fwd_bwd, x, k, "numba")))
        if torch.cuda.is_available():
            xc, kc = x.cuda(), k.detach().cuda().requires_grad_(True)
            runs.append(("torch CUDA (reference autograd)", partial(_fwd_bwd, xc, kc, "torch")))
            for name in ("cupy", "numba_cuda"):
                if availability(name)[0]:
                    runs.append((name, partial(_fwd_bwd, xc, kc, name)))
        base: dict[bool, float] = {}
        for label, fn in runs:
            t = timed(fn, repeats * 3, warmup=3)
            ratio = base.setdefault(_on_gpu(label), t[0]) / t[0]
            rows.append(
                [f"G fwd+bwd valid 13x13 x2, B={bsz}x3x64x64", label, _fmt(t), f"{ratio:.2f}"]
            )
    return rows


class _Iterations:
    """Calls ``op(*args, iteration, 64, 26, 1/255, **kw)`` with a new iteration each call."""

    def __init__(self, op: Callable[..., object], args: tuple, **kw: object) -> None:
        self.op, self.args, self.kw, self.it = op, args, kw, 0

    def __call__(self) -> object:
        self.it += 1
        return self.op(*self.args, self.it, 64, 26, 1 / 255, **self.kw)


def bench_patches(repeats: int, dtype: torch.dtype) -> list[list[str]]:
    rows = []
    h, w = 678, 1020
    for bsz in (1, 16):
        g = torch.Generator().manual_seed(1)
        images = torch.rand(bsz, 3, h, w, generator=g, dtype=dtype)
        cdf = torch.rand(bsz, 2, h * w, generator=g, dtype=torch.float64).cumsum(-1)
        args = (images, cdf, torch.tensor([[h, w]] * bsz), torch.arange(bsz) + 100)
        want = sample_patches_ref(*args, 5, 64, 26, 1 / 255)
        runs: list[tuple[str, Callable[[], object]]] = [
            ("torch (reference)", _Iterations(sample_patches_ref, args))
        ]
        if availability("numba")[0]:
            got = sample_patches(*args, 5, 64, 26, 1 / 255, backend="numba")
            assert torch.equal(got.g_topleft, want.g_topleft), "numba disagrees"
            runs.append(("numba CPU", _Iterations(sample_patches, args, backend="numba")))
        if torch.cuda.is_available():
            cargs = tuple(t.cuda() for t in args)
            runs.append(("torch CUDA (reference)", _Iterations(sample_patches_ref, cargs)))
            for name in ("cupy", "numba_cuda"):
                if availability(name)[0]:
                    got = sample_patches(*cargs, 5, 64, 26, 1 / 255, backend=name)
                    assert torch.equal(got.g_topleft.cpu(), want.g_topleft), f"{name} disagrees"
                    runs.append((name, _Iterations(sample_patches, cargs, backend=name)))
        base: dict[bool, float] = {}
        for label, fn in runs:
            t = timed(fn, repeats * 5, warmup=3)
            ratio = base.setdefault(_on_gpu(label), t[0]) / t[0]
            rows.append([f"patches B={bsz} (G 64, D 26)", label, _fmt(t), f"{ratio:.2f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per method")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(f"Machine: {machine()}")
    for name in ("numba", "numba_cuda", "cupy"):
        ok, why = availability(name)
        print(f"backend {name}: {'yes' if ok else 'no'} ({why})")
    print(
        f"dtype: {args.dtype}; times in ms: median (p20-p80); speed-up vs the torch reference "
        "on the same device (CPU rows vs torch CPU, GPU rows vs torch CUDA)\n"
    )
    rows = bench_downscale(args.repeats, dtype) + bench_patches(args.repeats, dtype)
    rows += bench_g_step(args.repeats, dtype)
    print("| op | method | time ms | speed-up |")
    print("| --- | --- | ---: | ---: |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
