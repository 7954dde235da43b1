"""Are kernels trained on a GPU as accurate as kernels trained on the CPU?

A sanity check of the CUDA path, not a byte comparison (training is chaotic: another device
gives other kernels within tens of iterations, so compare distributions). Trains the
development set's x2 LR images ``--images`` (seed 0, the default config, 3000 iterations)
as one batch on ``--device``, scores the saved kernels (aligned kernel PSNR against the true
kernel) and prints them next to the committed CPU runs of the same images and seed
(``bench/data/kgengine_n50.json``: the default config, one run), on one canvas per image.

Usage::

    python bench/check_gpu_accuracy.py --device cuda --devset bench_out/devset --images 5-12
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from kgengine.api import estimate_kernels
from kgengine.kernel import common_size
from kgengine.metrics import aligned_kernel_psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_postprocess import _gt  # noqa: E402

CPU_RUNS = Path(__file__).resolve().parent / "data" / "kgengine_n50.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--devset", type=Path, default=Path("bench_out/devset"))
    ap.add_argument("--images", default="5-12", help="image numbers A-B of the development set")
    ap.add_argument("--iters", type=int, default=3000)
    args = ap.parse_args(argv)
    first, last = (int(v) for v in args.images.split("-"))
    names = [f"im_{i}" for i in range(first, last + 1)]
    cpu = json.loads(CPU_RUNS.read_text())["runs"]
    t0 = time.perf_counter()
    results = estimate_kernels([args.devset / "lr_x2" / f"{n}.png" for n in names],
                               seeds=[0] * len(names), iters=args.iters, device=args.device)
    wall = time.perf_counter() - t0
    print(f"{len(names)} images as one batch on {args.device}, {args.iters} iterations: "
          f"{wall:.1f} s")
    print("| image | CPU (committed) dB | this device dB |")
    print("|---|---:|---:|")
    rows = []
    for name, res in zip(names, results, strict=True):
        gt = _gt(args.devset, 2, name)
        k_cpu = np.asarray(cpu[f"x2/{name}/s0"]["kernel"], dtype=np.float64)
        if isinstance(res, Exception):
            print(f"| {name} | | failed: {res} |")
            continue
        size = common_size(gt, k_cpu, res.kernel_x2)
        p_cpu = aligned_kernel_psnr(k_cpu, gt, size=size).psnr
        p_dev = aligned_kernel_psnr(res.kernel_x2, gt, size=size).psnr
        rows.append((p_cpu, p_dev))
        print(f"| {name} | {p_cpu:.2f} | {p_dev:.2f} |")
    if rows:
        diffs = [d - c for c, d in rows]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        print(f"| mean | {statistics.mean(c for c, _ in rows):.2f} | "
              f"{statistics.mean(d for _, d in rows):.2f} |")
        print(f"this device - CPU: {statistics.mean(diffs):+.2f} ± {se:.2f} dB (paired, ± SE)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
