"""Benchmark: a farm with ``--stop auto`` (the default since 0.9.12) against ``--stop full``.

0.9.12 kept a stopped image in its batch until the batch's last image stopped, so a farm
saved less than one image does; since 0.9.13 a stopped image leaves the batch
(``kgengine.batch_rows.drop``). This bench times the real farm
(:func:`kgengine.farm.runner.run_farm`, 3000 iterations) on the development set's first
``--images`` x2 LR images, ``--batch`` at a time, once with each setting (in that order,
fresh pool folders, one process), and scores both pools against the true kernels (aligned
kernel PSNR on the 17×17 canvas of ``bench/bench_vs_authors.py``). The farm's seeds come from
each image's content, so these are other runs than the studies'.

Run: ``python bench/bench_farm_stop.py [--images 16] [--batch 8]`` (about 8 min on 2 cores)
-> ``bench/data/farm_stop.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kgengine.atomic import save_text
from kgengine.farm.runner import run_farm
from kgengine.pool import load_pool
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
from study_elongation import truth  # noqa: E402

OUT = rc.DATA / "farm_stop.md"


def farm(images: list[Path], batch: int, stop: str, root: Path) -> tuple[float, dict, list]:
    """(wall seconds, {image stem: x2 kernel}, reports) of one farm over ``images``."""
    pool_dir = root / f"pool_{stop}"
    t0 = time.perf_counter()
    run_farm([str(p) for p in images], pool_dir, batch=batch, device="cpu", stop=stop)
    wall = time.perf_counter() - t0
    pool = load_pool(pool_dir)
    kernels = {Path(src).stem: np.asarray(k, np.float64)
               for src, k in zip(pool.sources, pool.kernels, strict=True)}
    return wall, kernels, pool.reports or []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    root = rc.ensure_devset() / "lr_x2"
    images = sorted(root.glob("im_*.png"), key=lambda q: int(q.stem.split("_")[1]))
    images = images[: args.images]
    farm(images[:1], 1, "full", Path(tempfile.mkdtemp()))  # warm-up (Numba, allocator)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stop in ("full", "auto"):
            out[stop] = farm(images, args.batch, stop, Path(tmp))
            print(f"{stop}: {out[stop][0]:.1f} s", flush=True)
    psnr = {stop: np.array([rc._psnr(out[stop][1][q.stem], truth(rc.SETS["dev"][0], 2, q.stem), 2)
                            for q in images]) for stop in out}
    used = [r.get("iters_used", 3000) for r in out["auto"][2]]
    d = psnr["auto"] - psnr["full"]
    lines = ["# A farm with `--stop auto` against `--stop full`", "",
             f"`python bench/bench_farm_stop.py --images {args.images} --batch {args.batch}` "
             f"(module docstring). {machine_line()}. Development set x2, images 1-{len(images)}, "
             "3000 iterations, the farm's own seeds.", "",
             "| `--stop` | wall (s) | images/hour | mean iterations used | aligned kernel PSNR |",
             "|---|---:|---:|---:|---:|"]
    for stop in ("full", "auto"):
        it = 3000 if stop == "full" else float(np.mean(used))
        lines.append(f"| {stop} | {out[stop][0]:.1f} | {3600 * len(images) / out[stop][0]:.1f} | "
                     f"{it:.0f} | {psnr[stop].mean():.2f} |")
    lines += ["", f"- auto / full wall time: {out['auto'][0] / out['full'][0]:.2f}; iterations "
              f"used per image: {np.mean(used) / 3000:.2f} of full.",
              f"- PSNR, auto − full: {d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f} dB "
              f"(paired; worst {d.min():+.2f}). These are the same images trained twice with "
              "the same seeds: a difference is the stop's, not the seeds'."]
    text = "\n".join(lines) + "\n"
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
