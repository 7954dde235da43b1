"""Benchmark: the CLI as a user runs it, in fresh processes.

1. **Start-up** (``--base``): the README's first command, ``python -m kgengine estimate
   kgengine/data/sample_lr.png -o OUT --x4``, on a cold and a warm Numba disk cache, this
   source tree against another (an earlier release), alternately. For ``--rounds`` rounds,
   for each tree (``--base`` first): a fresh process with ``PYTHONPATH`` set to the tree and
   ``NUMBA_CACHE_DIR`` an empty folder (cold), then again with that cache (warm), each into
   an empty output folder. A new user's very first command compiles every Numba kernel
   before its first iteration; each later process loads them. Wall seconds of the whole
   process, medians; the x2 kernels of the two trees must be the same bytes. In each round,
   each tree's trainer on the warm cache (600 iterations at B = 1 and 4, ms per iteration),
   to tell a slower step from a faster start.
   Run: ``git worktree add /tmp/base <commit>; python bench/bench_cli.py --base /tmp/base``
   (about 2.5 min a round on 2 cores) -> ``bench/data/startup.md``.
2. **Batches** (``--images N``): ``kgengine estimate`` on the first N development images
   (x2, ``bench_out/devset``, defaults) with ``--batch 1`` (each image alone: the code before
   0.9.16) against the default batch, alternately, ``--rounds`` times, warm cache; every
   kernel file must be the same bytes. -> ``bench/data/estimate_batch.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kgengine.atomic import save_text
from kgengine.sysinfo import machine_line

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "data" / "startup.md"
BATCH_OUT = ROOT / "bench" / "data" / "estimate_batch.md"
DEVSET = ROOT / "bench_out" / "devset" / "lr_x2"
COMMAND = ["-m", "kgengine", "estimate", "kgengine/data/sample_lr.png", "--x4", "-o"]


def first_command(tree: Path, cache: Path, out: Path) -> tuple[float, str]:
    """(wall seconds, sha256 of the x2 kernel) of the first command run from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *COMMAND, str(out)], cwd=tree, env=env, check=True,
                   capture_output=True, timeout=900)
    wall = time.perf_counter() - t0
    return wall, hashlib.sha256((out / "sample_lr_kernel_x2.npy").read_bytes()).hexdigest()


ITERS_SCRIPT = """
import sys
from kgengine.api import estimate_kernels
from kgengine.imageio import read_image
one = [read_image("kgengine/data/sample_lr.png")]
four = [read_image(f"{sys.argv[2]}/im_{i}.png") for i in (1, 2, 3, 4)]
ms = [estimate_kernels(imgs, iters=int(sys.argv[1]), stop="full")[0].report["ms_per_iter"]
      for imgs in (one, four)]
print(*ms)
"""


def iteration_ms(tree: Path, cache: Path, iters: int) -> list[float]:
    """ms per iteration of the trainer from ``tree`` (warm ``cache``): B = 1 (the bundled
    sample) and B = 4 (development images 1-4), ``iters`` iterations each, all of them."""
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(cache))
    res = subprocess.run([sys.executable, "-c", ITERS_SCRIPT, str(iters), str(DEVSET)],
                         cwd=tree, env=env, check=True, capture_output=True, text=True,
                         timeout=900)
    return [float(x) for x in res.stdout.split()]


def startup_rows(base: Path, base_label: str, rounds: int) -> list[str]:
    """Part 1 of the module docstring: the markdown report."""
    trees = {base_label: base.resolve(), "this tree": ROOT}
    walls: dict[tuple[str, str], list[float]] = {(t, c): [] for t in trees
                                                 for c in ("cold", "warm")}
    digests = set()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for label, tree in trees.items():
                cache = Path(tmp) / f"cache_{r}_{label.replace(' ', '_')}"
                for kind in ("cold", "warm"):
                    out = Path(tmp) / f"out_{r}_{kind}_{label}"
                    wall, digest = first_command(tree, cache, out)
                    walls[(label, kind)].append(wall)
                    digests.add(digest)
                    print(f"round {r + 1} {label} {kind}: {wall:.1f} s", flush=True)
                ms = iteration_ms(tree, cache, 600)
                for b, v in zip((1, 4), ms, strict=True):
                    walls.setdefault((label, f"B = {b}"), []).append(v)
                print(f"round {r + 1} {label} ms/iteration B = 1, 4: {ms}", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    lines = [
        "# The README's first command from a fresh process (`python bench/bench_cli.py`)",
        "",
        f"Machine: {machine_line()}. Date: {time.strftime('%Y-%m-%d')}. "
        "`python -m kgengine estimate kgengine/data/sample_lr.png -o OUT --x4`; wall seconds "
        f"of the whole process, medians of {rounds} rounds run alternately (the runs in "
        "brackets); cold: an empty `NUMBA_CACHE_DIR`, warm: the cache the cold run filled.",
        "",
        f"| Numba cache | {base_label} | this tree | {base_label} / this tree |",
        "|---|---:|---:|---:|",
    ]
    for kind in ("cold", "warm", "B = 1", "B = 4"):
        if kind == "B = 1":
            lines += ["", "The trainer in the same rounds (a fresh process on the warm cache, "
                      "600 iterations, all of them: `--stop full`), ms per iteration:", "",
                      f"| batch | {base_label} | this tree | {base_label} / this tree |",
                      "|---|---:|---:|---:|"]
        runs = [" / ".join(f"{w:.1f}" for w in walls[(t, kind)]) for t in trees]
        lines.append(f"| {kind} | {med[(base_label, kind)]:.1f} ({runs[0]}) | "
                     f"{med[('this tree', kind)]:.1f} ({runs[1]}) | "
                     f"{med[(base_label, kind)] / med[('this tree', kind)]:.2f}× |")
    return [*lines, "", f"The x2 kernels of every run are the same bytes: {len(digests) == 1}."]


def batch_rows(n_images: int, rounds: int) -> list[str]:
    """Part 2 of the module docstring: the markdown report."""
    images = [DEVSET / f"im_{i}.png" for i in range(1, n_images + 1)]
    walls: dict[str, list[float]] = {"1": [], "default": []}
    files: dict[str, dict[str, bytes]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for kind in walls:
                out = Path(tmp) / f"{kind}_{r}"
                extra = ["--batch", "1"] if kind == "1" else []
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "kgengine", "estimate",
                                *map(str, images), "-o", str(out), *extra], check=True,
                               capture_output=True, timeout=3600,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
                walls[kind].append(time.perf_counter() - t0)
                files[f"{kind}_{r}"] = {f.name: f.read_bytes() for f in out.glob("*.npy")}
                print(f"round {r + 1} --batch {kind}: {walls[kind][-1]:.1f} s", flush=True)
    same = all(v == next(iter(files.values())) for v in files.values())
    med = {k: statistics.median(v) for k, v in walls.items()}
    runs = {k: " / ".join(f"{w:.1f}" for w in v) for k, v in walls.items()}
    return [
        "# `kgengine estimate` on several images, one at a time or in a batch "
        "(`python bench/bench_cli.py --images N`)",
        "",
        f"Machine: {machine_line()}. Date: {time.strftime('%Y-%m-%d')}. `kgengine estimate` "
        f"on development images im_1..im_{n_images} (x2, defaults: 3000 iterations, `--stop "
        f"auto`), warm Numba cache; wall seconds of the process, medians of {rounds} rounds "
        "run alternately (the runs in brackets).",
        "",
        "| images | `--batch 1` (each alone, as before 0.9.16) | default batch | ratio | "
        "same kernel files |",
        "|---:|---:|---:|---:|---|",
        f"| {n_images} | {med['1']:.1f} ({runs['1']}) | {med['default']:.1f} "
        f"({runs['default']}) | {med['1'] / med['default']:.2f}× | {same} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="source tree of the baseline (part 1)")
    ap.add_argument("--base-label", default="base")
    ap.add_argument("--images", type=int, default=0, help="development images (part 2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, help="report file (default: by part)")
    args = ap.parse_args()
    if args.base is not None:
        lines = startup_rows(args.base, args.base_label, args.rounds)
        save_text(args.out or OUT, "\n".join(lines) + "\n")
        print("\n".join(lines))
    if args.images:
        lines = batch_rows(args.images, args.rounds)
        save_text(args.out or BATCH_OUT, "\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
