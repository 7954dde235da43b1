"""Benchmark: KernelGAN accuracy on a seeded synthetic DIV2KRK-like set, next to two baselines.

1. Builds the synthetic set (:func:`kgengine.accuracy.make_div2krk_like`, DIV2KRK recipe,
   ``--n`` HR images evenly spread over ``../shared/data/hr``, set seed ``--set-seed``) into
   ``OUT/data`` and reports how long that takes.
2. Warms the estimator up (2 iterations on the first image; not timed in the table).
3. Runs the ``kgengine eval`` job at x2 and x4 with ``--seeds`` (3 by default), with
   kgengine's defaults (the authors' defects 1-3 kept, since 0.2) and, with
   ``--fix-defects``, also with defects 1-3 fixed, each into ``OUT/x{s}_{method}``
   (resumable: finished runs are kept).
4. Prints one table: kernel PSNR mean / Δ vs the isotropic σ = 1.3 baseline / median /
   worst, aligned kernel PSNR, LR re-synthesis PSNR (with the true-kernel ceiling), std
   across seeds, how many images KernelGAN loses to the isotropic baseline, wall time; and
   the machine. The same table is written to ``OUT/summary.md``.

Run (full benchmark, hours on a CPU): ``python bench/bench_accuracy.py --fix-defects``.
Quick check: ``python bench/bench_accuracy.py --n 2 --iters 20 --seeds 0 --out /tmp/acc``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kgengine.accuracy import EvalSettings, make_div2krk_like, run_eval, summary_table
from kgengine.atomic import save_text
from kgengine.progress import progress_hooks
from kgengine.sysinfo import machine_line

HR_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/hr"
EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20, help="images in the synthetic set (default 20)")
    p.add_argument("--iters", type=int, default=None, help="iterations (default: config, 3000)")
    p.add_argument("--seeds", default="0,1,2", help="estimator seeds (default 0,1,2)")
    p.add_argument("--scales", default="2,4", help="scales to evaluate (default 2,4)")
    p.add_argument("--set-seed", type=int, default=0, help="seed of the synthetic set")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--batch", type=int, default=8,
                   help="(image, seed) runs trained at once (same results, faster)")
    p.add_argument("--fix-defects", action="store_true",
                   help="also run with defects 1-3 fixed (kgengine 0.1's default)")
    p.add_argument("--hr", type=Path, default=HR_DIR, help=f"HR folder (default {HR_DIR})")
    p.add_argument("--out", type=Path, default=Path("bench_out/accuracy"), help="output folder")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    scales = tuple(int(s) for s in args.scales.split(",") if s.strip())
    paths = sorted(p for p in args.hr.iterdir() if p.suffix.lower() in EXTS)
    if not paths:
        print(f"error: no HR images in {args.hr}", file=sys.stderr)
        return 1
    print(f"machine: {machine_line(args.device)}")

    data = args.out / "data"
    t0 = time.perf_counter()
    manifest = make_div2krk_like(paths, data, seed=args.set_seed, n=args.n)
    build_s = time.perf_counter() - t0
    print(f"built {len(manifest)} images (set seed {args.set_seed}) in {build_s:.1f} s -> {data}")

    from kgengine.api import estimate_kernel

    t0 = time.perf_counter()
    estimate_kernel(str(data / "lr_x2" / "im_1.png"), iters=2, seed=0, device=args.device)
    print(f"warm-up (2 iterations): {time.perf_counter() - t0:.1f} s")

    variants = [False, True] if args.fix_defects else [False]
    results = []
    t_all = time.perf_counter()
    for scale in scales:
        for fixed in variants:
            settings = EvalSettings(scale=scale, seeds=seeds, iters=args.iters,
                                    device=args.device, fix_defects=fixed)
            out = args.out / f"x{scale}_{settings.method}"
            with progress_hooks(f"x{scale} {settings.method}") as hooks:
                results.append(run_eval(data, out, settings, hooks=hooks, batch=args.batch))
    total_s = time.perf_counter() - t_all

    iters = results[0]["settings"]["config"]["iters"]
    head = [
        f"# Accuracy on the synthetic DIV2KRK-like set ({len(manifest)} images, "
        f"set seed {args.set_seed}, estimator seeds {', '.join(map(str, seeds))}, "
        f"{iters} iterations)",
        "",
        f"Machine: {machine_line(args.device)}. Building the set: {build_s:.1f} s. "
        f"Evaluation (estimation + scoring, all rows): {total_s:.1f} s "
        "(resumed runs count with their original wall time in the table).",
        "",
    ]
    text = "\n".join(head) + "\n" + summary_table(results) + "\n"
    save_text(args.out / "summary.md", text)
    print()
    print(text)
    for res in results:
        folder = f"x{res['settings']['scale']}_{res['settings']['method']}"
        print(f"report: {args.out / folder / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
