"""Benchmark: the README's first command from a fresh process, on a cold and a warm Numba disk
cache, this source tree against another (an earlier release), alternately.

Why. A new user's very first command compiles every Numba kernel into the disk cache before
its first iteration; each later process loads them. The first impression is the cold one.

What. For ``--rounds`` rounds, for each tree (``--base`` first, then this one): ``python -m
kgengine estimate kgengine/data/sample_lr.png -o OUT --x4`` in a fresh process with
``PYTHONPATH`` set to the tree and ``NUMBA_CACHE_DIR`` an empty folder (cold), then again
with that cache (warm), each into an empty output folder. Wall seconds of the whole process;
medians over the rounds; the x2 kernels of the two trees must be the same bytes.

Run: ``git worktree add /tmp/base <commit>; python bench/bench_startup.py --base /tmp/base``
(about 2.5 min a round on 2 cores) -> ``bench/data/startup.md``.
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
COMMAND = ["-m", "kgengine", "estimate", "kgengine/data/sample_lr.png", "--x4", "-o"]


def first_command(tree: Path, cache: Path, out: Path) -> tuple[float, str]:
    """(wall seconds, sha256 of the x2 kernel) of the first command run from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *COMMAND, str(out)], cwd=tree, env=env, check=True,
                   capture_output=True, timeout=900)
    wall = time.perf_counter() - t0
    return wall, hashlib.sha256((out / "sample_lr_kernel_x2.npy").read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="source tree of the baseline")
    ap.add_argument("--base-label", default="base")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    trees = {args.base_label: args.base.resolve(), "this tree": ROOT}
    walls: dict[tuple[str, str], list[float]] = {(t, c): [] for t in trees for c in ("cold",
                                                                                    "warm")}
    digests = set()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label, tree in trees.items():
                cache = Path(tmp) / f"cache_{r}_{label.replace(' ', '_')}"
                for kind in ("cold", "warm"):
                    wall, digest = first_command(tree, cache, Path(tmp) / f"out_{r}_{kind}_{label}")
                    walls[(label, kind)].append(wall)
                    digests.add(digest)
                    print(f"round {r + 1} {label} {kind}: {wall:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    base, this = args.base_label, "this tree"
    lines = [
        "# The README's first command from a fresh process (`python bench/bench_startup.py`)",
        "",
        f"Machine: {machine_line()}. Date: {time.strftime('%Y-%m-%d')}. "
        f"`python -m kgengine estimate kgengine/data/sample_lr.png -o OUT --x4`; wall seconds "
        f"of the whole process, medians of {args.rounds} rounds run alternately (the runs in "
        "brackets); cold: an empty `NUMBA_CACHE_DIR`, warm: the cache the cold run filled.",
        "",
        f"| Numba cache | {base} | this tree | {base} / this tree |",
        "|---|---:|---:|---:|",
    ]
    for kind in ("cold", "warm"):
        runs = " / ".join(f"{w:.1f}" for w in walls[(base, kind)])
        runs_this = " / ".join(f"{w:.1f}" for w in walls[(this, kind)])
        lines.append(f"| {kind} | {med[(base, kind)]:.1f} ({runs}) | {med[(this, kind)]:.1f} "
                     f"({runs_this}) | {med[(base, kind)] / med[(this, kind)]:.2f}× |")
    lines += ["", f"The x2 kernels of every run are the same bytes: {len(digests) == 1}."]
    save_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
