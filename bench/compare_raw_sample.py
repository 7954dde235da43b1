"""A second sample of the current trainer against the stored raw kernels of an older one.

Training is chaotic: a change of rounding gives other kernels, so "did accuracy change?" is a
question about distributions. This trains one run per (image, seed) of the development set
at the seeds of restart ``--restart`` (``kgengine.api.restart_seed``), stores the raw kernels
(resumable), and scores them and ``raw_kernels.json``'s kernels of that restart (made by
0.5.x) with the same clean-up (``--n``) on the same (image, seed) pairs: paired mean
difference ± SE and runs below the isotropic Gaussian.

Run: ``OMP_NUM_THREADS=1 python bench/compare_raw_sample.py --images 1-10 --out A.json`` and
``--images 11-20 --out B.json`` side by side, then ``--score A.json B.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from kgengine.api import estimate_kernels, restart_seed
from kgengine.atomic import save_json
from kgengine.kernel import gaussian_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import DEFAULT_OUT  # noqa: E402
from study_postprocess import STORE, _gt, _psnr, finish  # noqa: E402


def train(images: list[int], seeds: list[int], scale: int, restart: int, out: Path) -> None:
    """Raw kernels of the missing (image, seed) jobs, 4 per batch, into ``out``."""
    store = json.loads(out.read_text()) if out.exists() else {}
    jobs = [(i, s) for i in images for s in seeds
            if f"x{scale}/im_{i}/s{s}/r{restart}" not in store]
    for start in range(0, len(jobs), 4):
        chunk = jobs[start : start + 4]
        res = estimate_kernels([DEFAULT_OUT / f"lr_x{scale}" / f"im_{i}.png" for i, _ in chunk],
                               seeds=[restart_seed(s, restart) for _, s in chunk], device="cpu",
                               on_diverge="return")
        for (i, s), r in zip(chunk, res, strict=True):
            raw = getattr(r, "raw_kernel", None)
            store[f"x{scale}/im_{i}/s{s}/r{restart}"] = (None if raw is None
                                                          else np.round(raw, 12).tolist())
        save_json(out, store)
        print(f"{len(store)} raw kernels", flush=True)


def score(paths: list[Path], n: int) -> str:
    """Paired comparison of the new raw kernels with ``raw_kernels.json``'s."""
    new: dict = {}
    for p in paths:
        new |= json.loads(p.read_text())
    old = json.loads(STORE.read_text())["runs"]
    diffs, below_new, below_old, skipped = [], 0, 0, []
    for key, raw in sorted(new.items()):
        if raw is None or old.get(key) is None:
            skipped.append(key)
            continue
        scale, name = int(key.split("/")[0][1:]), key.split("/")[1]
        gt = _gt(DEFAULT_OUT, scale, name)
        a = _psnr(finish(np.asarray(raw), n), gt, scale)
        b = _psnr(finish(np.asarray(old[key]), n), gt, scale)
        iso = _psnr(gaussian_kernel(13, 1.3), gt, scale)
        diffs.append((a, b))
        below_new += a < iso
        below_old += b < iso
    d = np.array([a - b for a, b in diffs])
    means = np.array(diffs).mean(0)
    return (f"{len(d)} pairs (skipped, diverged or missing: {skipped or 'none'}): new "
            f"{means[0]:.2f} dB, stored {means[1]:.2f} dB, paired {d.mean():+.2f} ± "
            f"{d.std(ddof=1) / np.sqrt(len(d)):.2f}; below the isotropic Gaussian "
            f"{below_new} / {below_old}")


def _range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="1-20")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--restart", type=int, default=1)
    ap.add_argument("--n", type=int, default=50, help="clean-up n_filtering for scoring")
    ap.add_argument("--out", type=Path, help="store of the new raw kernels (train)")
    ap.add_argument("--score", type=Path, nargs="+", help="score these stores instead")
    args = ap.parse_args()
    if args.score:
        print(score(args.score, args.n))
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train(_range(args.images), [int(s) for s in args.seeds.split(",")], args.scale,
          args.restart, args.out)


if __name__ == "__main__":
    main()
