"""Benchmark: a CPU batch trained whole on the host's threads against the same batch trained as
parts, one per thread (``kgengine.split_trainer``), and what it does to ``--restarts 4``.

Why. A whole batch splits every pass of every step over the threads and joins them after it;
the step's serial parts (priors, Adam, crop sampling) leave the other threads waiting. Each
image's arithmetic is its own, so the batch can be cut into parts that meet only at the end,
with the same bytes.

What.
1. The trainer: ms per iteration at B = 2, 4, 8 (one development image repeated with seeds
   0..B-1), whole (:class:`~kgengine.trainer.BatchTrainer` on the threads) and split
   (:func:`~kgengine.split_trainer.make_trainer`), alternately, ``--rounds`` times, 300
   iterations after 20 warm-up ones; each round checks that both give the same kernel bytes.
2. End to end (``estimate_kernels``, x2, the defaults): one run (``--stop auto``) against
   ``--restarts 4`` whole and split, alternately, ``--rounds`` times in one process (the
   Numba cache warm), on development image ``im_1`` at x2 (250×250; its one run stops at
   iteration 1800-1900) and the bundled sample. The ratio to one run is #11's "``--restarts
   4`` ≤ 2× one run".
3. The farm (:func:`kgengine.farm.runner.run_farm`, defaults: 3000 iterations, ``--stop
   auto``, x2 and x4) on ``--farm-images`` development LR images at ``--batch``, whole and
   split, alternately, ``--farm-rounds`` times, in fresh pool folders; the pools must be the
   same bytes. With ``--stop auto`` the images leave their parts at different iterations,
   so a part can end while another still trains (it hands its threads over: the bytes stay,
   the other part's last images train on more threads).

4. The GIL (``--gil-rounds``): two parts of B images, one thread each, side by side as two
   threads of this process (the GIL shared) and as two processes (not), started together
   after their warm-up; and one part alone. What threads lose against processes is what
   the parts' Python glue waits on the GIL.

Run: ``python bench/bench_split.py`` (about 18 min on 2 cores) -> ``bench/data/thread_split.md``;
``python bench/bench_split.py --sizes "" --e2e-rounds 0 --farm-rounds 0 --gil-rounds 3 --out
bench/data/thread_split_gil.md`` (about 3 min); ``... --farm-rounds 2 --farm-large --out
bench/data/thread_split_farm_large.md`` (about 7 min).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

import kgengine.split_trainer as st
from kgengine.api import estimate_kernels
from kgengine.atomic import save_text
from kgengine.config import KernelGANConfig
from kgengine.farm.runner import run_farm
from kgengine.imageio import read_image
from kgengine.pool import load_pool
from kgengine.prepare import prepare_image
from kgengine.sysinfo import machine_line
from kgengine.trainer import BatchTrainer

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "bench_out" / "devset" / "lr_x2" / "im_1.png"
SAMPLE = ROOT / "kgengine" / "data" / "sample_lr.png"
OUT = ROOT / "bench" / "data" / "thread_split.md"


def trainer_rows(img_path: Path, sizes: list[int], rounds: int, iters: int, threads: int
                 ) -> list[str]:
    """Markdown rows: B, whole and split ms/iteration (medians), ratio, bytes equal."""
    cfg = KernelGANConfig()
    img = prepare_image(read_image(img_path), cfg)
    rows = []
    for b in sizes:
        times: dict[str, list[float]] = {"whole": [], "split": []}
        same = True
        for _ in range(rounds):
            kernels = {}
            for kind in ("whole", "split"):
                if kind == "whole":
                    t = BatchTrainer([img] * b, list(range(b)), cfg, threads=threads)
                else:
                    t = st.make_trainer([img] * b, list(range(b)), cfg, threads=threads)
                t.run(20)
                t0 = time.perf_counter()
                t.run(iters)
                times[kind].append(1000.0 * (time.perf_counter() - t0) / iters)
                kernels[kind] = t.final_kernels().tobytes()
            same &= kernels["whole"] == kernels["split"]
        w, s = statistics.median(times["whole"]), statistics.median(times["split"])
        rows.append(f"| {b} | {w:.2f} | {s:.2f} | {w / s:.2f}× | "
                    f"{' / '.join(f'{x:.1f}' for x in times['whole'])} | "
                    f"{' / '.join(f'{x:.1f}' for x in times['split'])} | {same} |")
        print(rows[-1], flush=True)
    return rows


def _timed(kind: str, fn: Callable[[], object]) -> tuple[float, object]:
    """(wall seconds, result) of ``fn()``; for ``kind`` "whole" with every batch trained as
    one :class:`BatchTrainer` on the threads (the code before ``kgengine.split_trainer``)."""
    split_count = st.part_count
    if kind == "whole":
        st.part_count = lambda *a: 1
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        st.part_count = split_count


def e2e_rows(label: str, path: Path, rounds: int) -> list[str]:
    """Markdown rows: one run, --restarts 4 whole and split (medians of wall seconds)."""
    lr = read_image(path)
    walls: dict[str, list[float]] = {"one": [], "whole": [], "split": []}
    kernels, used = {}, 0
    for _ in range(rounds):
        for kind in ("one", "whole", "split"):
            sec, res = _timed(kind, lambda k=kind: estimate_kernels(
                [lr], seed=0, restarts=1 if k == "one" else 4)[0])
            walls[kind].append(sec)
            kernels[kind] = res.kernel_x2.tobytes()
            used = res.report["iters_used"] if kind == "one" else used
    one = statistics.median(walls["one"])
    med = {k: statistics.median(v) for k, v in walls.items()}
    same = kernels["whole"] == kernels["split"]
    print(walls, flush=True)
    return [f"| {label} | {used} | {one:.1f} | {med['whole']:.1f} ({med['whole'] / one:.2f}×) "
            f"| {med['split']:.1f} ({med['split'] / one:.2f}×) | "
            f"{med['whole'] / med['split']:.2f}× | {same} |"]


def farm_rows(paths: list[Path], batch: int, rounds: int, root: Path, size: str
              ) -> list[str]:
    """Markdown rows: the farm whole and split (medians of wall seconds), same pool bytes."""
    walls: dict[str, list[float]] = {"whole": [], "split": []}
    pools = {}
    for r in range(rounds):
        for kind in ("whole", "split"):
            sec, _ = _timed(kind, lambda out=root / f"{kind}{r}": run_farm(
                [str(p) for p in paths], out, batch=batch, device="cpu"))
            walls[kind].append(sec)
            pools[kind] = load_pool(root / f"{kind}{r}")
            print(kind, walls[kind][-1], flush=True)
    a, b = pools["whole"], pools["split"]
    same = a.sources == b.sources and a.kernels.tobytes() == b.kernels.tobytes()
    w, s = statistics.median(walls["whole"]), statistics.median(walls["split"])
    n = len(paths)
    return [f"| {n} × {size}, `--batch {batch}` | {w:.1f} ({3600 * n / w:.0f}/h) | "
            f"{s:.1f} ({3600 * n / s:.0f}/h) | {w / s:.2f}× | {same} |"]


def _part_ms(img: object, b: int, iters: int, ready: Callable[[], None] = lambda: None
             ) -> float:
    """ms per iteration of one part of ``b`` images on one thread (after 20 warm-up ones and
    ``ready()``)."""
    t = BatchTrainer([img] * b, list(range(b)), KernelGANConfig(), threads=1)
    t.run(20)
    ready()
    t0 = time.perf_counter()
    t.run(iters)
    return 1000.0 * (time.perf_counter() - t0) / iters


def _child(b: int, iters: int, img_path: Path) -> None:
    """A process of the GIL section: warm up, say so, wait for the word, time, print."""
    img = prepare_image(read_image(img_path), KernelGANConfig())

    def ready() -> None:
        print("ready", flush=True)
        sys.stdin.readline()

    print(_part_ms(img, b, iters, ready), flush=True)


def gil_rows(img_path: Path, sizes: list[int], rounds: int, iters: int) -> list[str]:
    """Markdown rows: B, one part alone, two as threads, two as processes (medians, ms)."""
    torch.set_num_threads(1)
    img = prepare_image(read_image(img_path), KernelGANConfig())
    rows = []
    for b in sizes:
        got: dict[str, list[float]] = {"alone": [], "threads": [], "processes": []}
        for _ in range(rounds):
            got["alone"].append(_part_ms(img, b, iters))
            barrier = threading.Barrier(2)
            with ThreadPoolExecutor(2) as pool:
                jobs = [pool.submit(_part_ms, img, b, iters, barrier.wait) for _ in range(2)]
                ms = [j.result() for j in jobs]
            got["threads"].append(statistics.mean(ms))
            cmd = [sys.executable, __file__, "--child", str(b), "--iters", str(iters),
                   "--child-image", str(img_path)]
            procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True) for _ in range(2)]
            for p in procs:
                assert p.stdout.readline().strip() == "ready"
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            got["processes"].append(statistics.mean(float(p.communicate()[0]) for p in procs))
        med = {k: statistics.median(v) for k, v in got.items()}
        rows.append(f"| {b} | {med['alone']:.2f} | {med['threads']:.2f} | "
                    f"{med['processes']:.2f} | {med['threads'] / med['processes']:.2f}× |")
        print(rows[-1], got, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--sizes", default="2,4,8")
    ap.add_argument("--threads", type=int, default=0, help="host threads (0 = torch's)")
    ap.add_argument("--e2e-rounds", type=int, default=3, help="0: skip the end-to-end part")
    ap.add_argument("--farm-images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--farm-rounds", type=int, default=2, help="0: skip the farm")
    ap.add_argument("--farm-large", action="store_true",
                    help="farm Urban100 photos upscaled to 2040×1356 (bench_host_work.py's, "
                         "for timing only) instead of development images")
    ap.add_argument("--gil-rounds", type=int, default=0, help="0: skip the GIL section")
    ap.add_argument("--gil-sizes", default="1,2")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-image", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.child:
        return _child(args.child, args.iters, args.child_image)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    dev = DEV if DEV.exists() else SAMPLE
    lines = ["# A batch trained whole or as parts (`python bench/bench_split.py`)", "",
             f"Machine: {machine_line('cpu')}, {threads} threads. "
             f"Date: {time.strftime('%Y-%m-%d')}."]
    if args.sizes:
        lines += ["", f"## The trainer: ms per iteration ({dev.name}, medians of {args.rounds} "
                  f"alternate rounds of {args.iters} iterations)", "",
                  "| B | whole | parts | whole / parts | whole, each round | parts, each round "
                  "| same bytes |", "|---:|---:|---:|---:|---|---|---|"]
        lines += trainer_rows(dev, [int(x) for x in args.sizes.split(",")], args.rounds,
                              args.iters, threads)
    if args.e2e_rounds:
        lines += ["", f"## End to end: `--restarts 4` against one run (x2, defaults, wall "
                  f"seconds, medians of {args.e2e_rounds} alternate rounds in one process)", "",
                  "| image | one run stops at | one run | `--restarts 4` whole | "
                  "`--restarts 4` parts | whole / parts | same bytes |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        images = [("development im_1 x2 (250×250)", dev)] if dev == DEV else []
        images.append(("bundled sample (160×160)", SAMPLE))
        for label, path in images:
            lines += e2e_rows(label, path, args.e2e_rounds)
    farm = sorted(DEV.parent.glob("im_*.png"), key=lambda p: int(p.stem[3:]))
    if args.farm_rounds and farm:
        lines += ["", f"## The farm (defaults: 3000 iterations, `--stop auto`, x2 and x4; wall "
                  f"seconds, medians of {args.farm_rounds} alternate rounds)", "",
                  "| images | whole | parts | whole / parts | same pool bytes |",
                  "|---|---:|---:|---:|---|"]
        with tempfile.TemporaryDirectory() as tmp:
            if args.farm_large:
                from bench_host_work import photo_sets

                farm = photo_sets(Path(tmp), args.farm_images)["upscaled to 2040×1356"]
            lines += farm_rows(farm[: args.farm_images], args.batch, args.farm_rounds,
                               Path(tmp), "2040×1356" if args.farm_large else "250×250")
    if args.gil_rounds:
        lines += ["", f"## The GIL: two parts of B images, one thread each ({dev.name}, ms per "
                  f"iteration of each part, medians of {args.gil_rounds} rounds of "
                  f"{args.iters} iterations)", "",
                  "| B | one part alone | two parts as threads | two parts as processes | "
                  "threads / processes |", "|---:|---:|---:|---:|---:|"]
        lines += gil_rows(dev, [int(x) for x in args.gil_sizes.split(",")], args.gil_rounds,
                          args.iters)
    save_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
