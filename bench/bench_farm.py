"""Benchmark: farm throughput (images per hour) against the batch size B, and memory per image.

For each B (default 1, 4, 8, 16 on CPU) a fresh subprocess runs the real farm
(:func:`kgengine.farm.runner.run_farm`: read, train B images in one batched model, write the
per-image files, update the manifest, rebuild the pool) on B distinct 128x128 LR crops of the
bundled sample, after a warm-up farm of one image (torch/oneDNN/Numba first-call costs).
Reported side by side, with the ratio to B = 1:

- ``img/h @N``: images per hour measured end to end at ``--iters`` N (median of
  ``--repeats`` runs);
- ``img/h @3000``: extrapolated to the paper's 3000 iterations:
  ``wall_3000 = (wall_N - train_N) + 3000 · (train_N / N)`` (the training loop scales with
  iterations, reading/writing/set-up does not);
- ``ms/iter``: the batched training's milliseconds per iteration (all B images);
- ``peak MB/img``: ``(ru_maxrss after the timed farm - ru_maxrss after the warm-up) / B``
  (process peak resident memory; torch allocations are not seen by tracemalloc).

Floor (issue 6): on a 2-core CPU, B = 8 gives at least 1.5x the images/hour of B = 1.

With a CUDA GPU (``--gpu``, default when one is present) it sweeps B = 1, 8, 32, ... up to
the automatic batch size (:func:`kgengine.farm.batching.auto_batch`) and reports images per
minute (target: >= 100 x2 images/min at 3000 iterations on one H100) with
``torch.cuda.max_memory_allocated`` per image; without a GPU it says why it is skipped.

Run: ``python bench/bench_farm.py [--iters 100] [--batches 1 4 8 16] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kgengine.sysinfo import cpu_name

DATA = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"
FULL_ITERS = 3000
SIDE = 128


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` distinct SIDE x SIDE crops of the sample (distinct offsets: no duplicate files)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with Image.open(DATA) as im:
        span = im.width - SIDE
        for i in range(n):
            x, y = (37 * i) % span, (23 * i + 11 * (i // 8)) % span
            p = folder / f"crop{i:03d}.png"
            im.crop((x, y, x + SIDE, y + SIDE)).save(p)
            paths.append(p)
    return paths


def child(batch: int, iters: int, device: str, threads: int | None) -> dict:
    """One measurement in this (fresh) process: warm-up farm, then the timed farm of B images."""
    import torch

    from kgengine.farm.runner import run_farm

    if threads:
        torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        imgs = make_images(tmp / "in", batch + 1)
        run_farm(imgs[-1:], tmp / "warm", batch=1, iters=5, device=device)
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base_gpu = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        summary = run_farm(imgs[:batch], tmp / "pool", batch=batch, iters=iters, device=device)
        wall = time.perf_counter() - t0
        assert summary.done == batch, summary.text()
        from kgengine.farm.manifest import Manifest

        with Manifest(tmp / "pool") as man:
            train = statistics.median(r.train_s for r in man.rows("done"))
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {"batch": batch, "iters": iters, "wall_s": wall, "train_s": train,
               "threads": torch.get_num_threads(),
               "rss_mb_per_image": max(peak_rss - base_rss, 0) / 1024 / batch,
               "peak_rss_mb": peak_rss / 1024}
        if cuda:
            out["gpu_mb_per_image"] = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20 / batch
        return out


def run_child(batch: int, iters: int, device: str, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(batch), "--iters", str(iters),
           "--device", device] + (["--threads", str(threads)] if threads else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"B={batch} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def rates(m: dict) -> tuple[float, float, float]:
    """(images/hour at N, images/hour extrapolated to 3000 iterations, ms per iteration)."""
    b, n, wall, train = m["batch"], m["iters"], m["wall_s"], m["train_s"]
    ms_iter = 1000.0 * train / n
    wall_full = (wall - train) + FULL_ITERS * train / n
    return 3600.0 * b / wall, 3600.0 * b / wall_full, ms_iter


def sweep(batches: list[int], iters: int, device: str, threads: int | None,
          repeats: int) -> list[dict]:
    results = []
    for b in batches:
        runs = [run_child(b, iters, device, threads) for _ in range(repeats)]
        med = sorted(runs, key=lambda m: m["wall_s"])[len(runs) // 2]
        results.append(med)
        print(f"  measured B={b}: {med['wall_s']:.1f} s", flush=True)
    return results


def print_table(results: list[dict], per: str) -> dict[int, tuple[float, float]]:
    """Print the table; returns B -> (images per ``per`` at N, extrapolated to 3000)."""
    scale = 1.0 if per == "hour" else 1.0 / 60.0
    out: dict[int, tuple[float, float]] = {}
    print(f"{'B':>4} {'wall s':>8} {'ms/iter':>9} {'img/' + per + ' @N':>14} {'x B=1':>6} "
          f"{'img/' + per + ' @3000':>16} {'x B=1':>6} {'MB/img':>8} {'peak MB':>8}")
    for m in results:
        short, full, ms = rates(m)
        short, full = short * scale, full * scale
        out[m["batch"]] = (short, full)
        b1 = out.get(results[0]["batch"], (short, full))
        mem = m.get("gpu_mb_per_image", m["rss_mb_per_image"])
        print(f"{m['batch']:>4} {m['wall_s']:>8.2f} {ms:>9.1f} {short:>14.1f} "
              f"{short / b1[0]:>6.2f} {full:>16.2f} {full / b1[1]:>6.2f} {mem:>8.1f} "
              f"{m['peak_rss_mb']:>8.0f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=100, help="training iterations per image")
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 4, 8, 16],
                    help="B of the CPU sweep (none: skip it)")
    ap.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256, 512],
                    help="B of the GPU sweep (the automatic batch size is added, larger ones "
                         "are dropped)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per B (median reported)")
    ap.add_argument("--device", default="cpu", help="device of the CPU sweep")
    ap.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                    help="also run the GPU sweep (default: when CUDA is available)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.iters, args.device, args.threads)))
        return

    import torch

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    print(f"farm on {args.device}, {args.iters} iterations (and extrapolated to {FULL_ITERS}), "
          f"{SIDE}x{SIDE} LR images, torch threads {args.threads or 'default'}, "
          f"median of {args.repeats} run(s) per B")
    results = sweep(args.batches, args.iters, args.device, args.threads, args.repeats)
    table = print_table(results, "hour") if results else {}
    if 1 in table and 8 in table:
        for label, j in ((f"{args.iters} iterations", 0), (f"{FULL_ITERS} (extrapolated)", 1)):
            ratio = table[8][j] / table[1][j]
            print(f"floor: B=8 gives {ratio:.2f}x the images/hour of B=1 at {label} "
                  f"(need >= 1.5x): {'PASS' if ratio >= 1.5 else 'FAIL'}")

    gpu = torch.cuda.is_available() if args.gpu is None else args.gpu
    if not gpu:
        print("GPU sweep: skipped (torch.cuda.is_available() is False on this machine)")
        return
    if not torch.cuda.is_available():
        print("GPU sweep: skipped (--gpu given but no CUDA GPU is visible)")
        return
    from kgengine.farm.batching import auto_batch
    from kgengine.farm.settings import FarmSettings

    limit = auto_batch(torch.device("cuda"), FarmSettings(), SIDE * SIDE)
    batches = [b for b in args.gpu_batches if b <= limit] + [limit]
    batches = sorted(set(batches))
    print(f"GPU: {torch.cuda.get_device_name(0)}; automatic batch limit {limit}")
    res = sweep(batches, args.iters, "cuda", None, args.repeats)
    table = print_table(res, "minute")
    best = max(table, key=lambda b: table[b][1])
    rate = table[best][1]
    print(f"best: B={best}: {rate:.1f} x2 images/min at {FULL_ITERS} iterations "
          f"(target >= 100 on one H100): {'PASS' if rate >= 100 else 'below target'}")


if __name__ == "__main__":
    main()
