"""Study: what ``kgengine pool filter --top F`` keeps, on the development and check sets.

A pool is filtered by confidence with a threshold (``--min-confidence``) or by rank (``--top
F``: the most confident fraction F, :func:`kgengine.pool.top_threshold`). Here a pool is the
default one runs of one set at one scale (``--stop auto``, the API's saved kernel and
confidence): the development set's from ``bench/data/kgengine_v0912.json`` (60 runs per scale,
seeds 0-2; the confidence was designed on this set) and the held-out check set's derived from
the raw kernels of ``bench/data/stop_study.json`` at the shipped rule's stopping points (36
runs per scale, seed 0). Scored: mean aligned kernel PSNR of the kept runs against all, and
how many runs below the isotropic σ = 1.3 Gaussian are kept.

Run: ``python bench/study_top.py`` (about 1 min) -> ``bench/data/top_study.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from kgengine.atomic import save_text
from kgengine.kernel import gaussian_kernel
from kgengine.metrics import aligned_kernel_psnr
from kgengine.pool import make_pool, top_threshold
from kgengine.stopping import StopRule, stop_iteration
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_stop as st  # noqa: E402
from study_elongation import truth  # noqa: E402

OUT = rc.DATA / "top_study.md"
FRACTIONS = (0.5, 0.25)


def dev_runs() -> list[tuple[int, float, float, float]]:
    """(scale, PSNR, confidence, the Gaussian's PSNR) of the development set's default runs."""
    out = []
    for key, rec in json.loads((rc.DATA / "kgengine_v0912.json").read_text())["runs"].items():
        xs, name, _ = key.split("/")
        sc = int(xs[1:])
        gt = truth(rc.SETS["dev"][0], sc, name)
        psnr = aligned_kernel_psnr(np.asarray(rec["kernel"]), gt, size=rc.CANVAS[sc]).psnr
        out.append((sc, psnr, rec["confidence"], rc._psnr(gaussian_kernel(13, 1.3), gt, sc)))
    return out


def _check_run(item: tuple[str, dict]) -> tuple[int, float, float, float] | None:
    key, rec = item
    setname, xs, name, s = key.split("/")
    if setname != "check":
        return None
    sc = int(xs[1:])
    t = stop_iteration(rec["iters"], rec["delta"], StopRule(), 3000)
    got = st.saved_at((setname, sc, name, int(s[1:])), rec["raw"][str(t)], t)
    if got is None:
        return None
    gt = truth(rc.SETS[setname][0], sc, name)
    return sc, rc._psnr(got[0], gt, sc), got[1], rc._psnr(gaussian_kernel(13, 1.3), gt, sc)


def check_runs(workers: int = 2) -> list[tuple[int, float, float, float]]:
    runs = json.loads(st.STORE.read_text())["runs"]
    with Pool(workers) as pool:
        return [r for r in pool.map(_check_run, sorted(runs.items())) if r]


def rows_of(label: str, runs: list[tuple[int, float, float, float]]) -> list[str]:
    lines = []
    for sc in (2, 4):
        part = [r for r in runs if r[0] == sc]
        psnr = np.array([r[1] for r in part])
        conf = np.array([np.nan if r[2] is None else r[2] for r in part])
        below = np.array([r[1] < r[3] for r in part])
        ids = [str(i) for i in range(len(part))]
        pool = make_pool([np.full((3, 3), 1 / 9)] * len(part), ids, ids, 2, confidences=conf)
        for f in FRACTIONS:
            t = top_threshold(pool, f)
            keep = conf >= t
            lines.append(f"| {label} x{sc} | `--top {f:g}` | {keep.sum()} of {len(part)} | "
                         f"{t:.3f} | {psnr[keep].mean():.2f} | {psnr.mean():.2f} | "
                         f"{below[keep].sum()} of {below.sum()} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)  # --help
    lines = ["| pool (default one runs) | filter | kept | threshold | mean PSNR kept | "
             "mean PSNR all | runs below iso kept |", "|---|---|---:|---:|---:|---:|---:|",
             *rows_of("development set (seeds 0-2)", dev_runs()),
             *rows_of("check set (seed 0, held out)", check_runs())]
    text = "\n".join(["# What `pool filter --top F` keeps", "",
                      f"`python bench/study_top.py` (module docstring). {machine_line()}.", "",
                      *lines, ""])
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
