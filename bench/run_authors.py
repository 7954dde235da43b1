"""Run the authors' KernelGAN (the reference) on the development set; keep its kernels.

The reference is slow (7-10 min per image, seed and scale on one CPU core), so it runs once
per (scale, image, seed) and its kernels are committed to ``bench/data/authors_kernels.json``
(rewritten atomically after every run, so a killed job loses at most the run in flight and
the next call resumes where it stopped). ``bench/bench_vs_authors.py`` reads that file.

Build the reference first (outside the repository)::

    ../shared/baseline/build.sh <mirror of github.com/sefibk/KernelGAN> /tmp/kg_ref

then::

    python bench/run_authors.py --baseline /tmp/kg_ref [--workers 1] [--limit N]

Jobs run in this order: seed 0, 1, 2; within a seed, image by image (Urban100 first, the
real-size ones), x2 then x4. x4 runs train on the x4 LR image with ``--X4`` and keep the
authors' analytic x4 kernel, as the authors' code does.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from kgengine.atomic import save_json

try:  # run as a script (python bench/run_authors.py) or as bench.run_authors
    from devset import DEFAULT_OUT, ensure_devset
except ImportError:  # pragma: no cover
    from bench.devset import DEFAULT_OUT, ensure_devset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench/data/authors_kernels.json"
RUN_SH = REPO.parent / "shared/baseline/run.sh"
SEEDS = (0, 1, 2)
SCALES = (2, 4)
ITERS = 3000


def job_key(scale: int, name: str, seed: int) -> str:
    """The results key of one run, e.g. ``x2/im_5/s0``."""
    return f"x{scale}/{name}/s{seed}"


def job_order(names: list[str], seeds=SEEDS, scales=SCALES) -> list[tuple[int, str, int]]:
    """(scale, image, seed) in run order: by seed, Urban100 (im_5..) before Kodak, x2 then x4."""
    urban_first = sorted(names, key=lambda n: (int(n.split("_")[1]) <= 4, int(n.split("_")[1])))
    return [(s, n, seed) for seed in seeds for n in urban_first for s in scales]


def load_results(path: Path = RESULTS) -> dict:
    """The committed results file, or an empty one."""
    if path.exists():
        return json.loads(path.read_text())
    return {"reference": "sefibk/KernelGAN @ 7218a37 via ../shared/baseline (CPU)", "runs": {}}


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on ``path`` + ``.lock``: several runner processes may share a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def claim(claims: Path, key: str) -> bool:
    """Claim job ``key`` for this process (O_EXCL file); False if another process has it."""
    claims.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(claims / key.replace("/", "_"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def run_one(baseline: Path, image: Path, scale: int, seed: int, iters: int) -> dict:
    """One reference run; returns its record (kernel as nested lists, seconds, command)."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, BASELINE_DIR=str(baseline), SEED=str(seed), ITERS=str(iters),
                   THREADS="1")
        cmd = ["bash", str(RUN_SH), str(image), out] + (["--X4"] if scale == 4 else [])
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        mat = Path(out) / image.stem / f"{image.stem}_kernel_x{scale}.mat"
        k = np.asarray(loadmat(mat)["Kernel"], dtype=np.float64)
    return {
        "kernel": [[float(f"{v:.9g}") for v in row] for row in k],
        "seconds": round(seconds, 1),
        "iters": iters,
        "command": f"SEED={seed} ITERS={iters} THREADS=1 BASELINE_DIR=... "
                   f"../shared/baseline/run.sh lr_x{scale}/{image.name} OUT"
                   + (" --X4" if scale == 4 else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, required=True, help="folder made by build.sh")
    p.add_argument("--devset", type=Path, default=DEFAULT_OUT)
    p.add_argument("--workers", type=int, default=1, help="reference runs at once (1 core each)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many new runs")
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--scales", default="2,4", help="comma-separated scales (default 2,4)")
    p.add_argument("--images", default=None,
                   help="image numbers, e.g. 5-8 (default: all, Urban100 first)")
    args = p.parse_args(argv)

    devset = ensure_devset(args.devset)
    names = [m["name"] for m in json.loads((devset / "synth.json").read_text())["images"]]
    done = load_results(args.results)["runs"]
    if args.images:
        lo, _, hi = args.images.partition("-")
        wanted = range(int(lo), int(hi or lo) + 1)
        names = [n for n in names if int(n.split("_")[1]) in wanted]
    seeds = tuple(int(v) for v in args.seeds.split(","))
    scales = tuple(int(v) for v in args.scales.split(","))
    todo = [j for j in job_order(names, seeds, scales) if job_key(*j) not in done]
    todo = todo[: args.limit] if args.limit is not None else todo
    # claims live next to the dev set (not committed): a second process skips claimed jobs;
    # delete the folder after a kill so that the killed process's jobs are run again
    claims = devset / "authors_claims"
    lock = threading.Lock()

    def work(job: tuple[int, str, int]) -> None:
        key = job_key(*job)
        if not claim(claims, key):
            return
        scale, name, seed = job
        rec = run_one(args.baseline, devset / f"lr_x{scale}" / f"{name}.png", scale, seed,
                      args.iters)
        with lock, locked(args.results):
            results = load_results(args.results)  # another process may have added runs
            results["runs"][key] = rec
            save_json(args.results, results)
            print(f"{key}: {rec['seconds']:.0f} s ({len(results['runs'])} done)", flush=True)

    print(f"{len(todo)} reference runs to do", flush=True)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for f in [pool.submit(work, j) for j in todo]:
            f.result()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
