"""Check: does this code still train the kernels of a stored variant? Trains again ``--runs``
of the runs of ``bench/data/kgengine_<variant>.json`` per scale (the first ones, one batch
per scale, as ``bench_vs_authors.py`` made them: ``estimate_kernels`` on the development set
with the stored config) and compares each saved kernel (to the 9 decimals stored), its
confidence and its stopping iteration. A release that claims the same bytes as an earlier
one, without a full ``bench_vs_authors.py`` run, says so from this.

With ``--restarts K`` the runs are ``--restarts K`` groups of a store derived from stored
raw kernels (``bench/study_restart_iters.py --derive``, whose raw kernels were rounded to
1e-11): each saved kernel must match to ``--tol`` and its confidence to 1e-9; stores derived
so record no stopping iteration.

Run: ``python bench/check_stored.py --variant v0914 --runs 8`` (about 3 min on 2 cores) ->
``bench/data/check_stored_<variant>.txt``; exit code 1 if a run differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from kgengine._version import __version__
from kgengine.api import estimate_kernels
from kgengine.atomic import save_text
from kgengine.config import KernelGANConfig
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import ensure_devset  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="v0914")
    ap.add_argument("--runs", type=int, default=8, help="runs per scale")
    ap.add_argument("--restarts", type=int, default=1, help="K of the store's --restarts K")
    ap.add_argument("--tol", type=float, default=0.0,
                    help="largest |Δk| taken as the same (0: the stored 9 decimals exactly)")
    args = ap.parse_args()
    store = json.loads((DATA / f"kgengine_{args.variant}.json").read_text())
    cfg = KernelGANConfig.from_stored(store["config"])
    devset = ensure_devset()
    bad, lines = 0, [f"{machine_line('cpu')}; {time.strftime('%Y-%m-%d')}; kgengine "
                     f"{__version__}; variant {args.variant}"]
    print(lines[0])
    for scale in (2, 4):
        keys = [k for k in store["runs"] if k.startswith(f"x{scale}/")][: args.runs]
        jobs = [(k.split("/")[1], int(k.split("/")[2][1:])) for k in keys]
        res = estimate_kernels([devset / f"lr_x{scale}" / f"{n}.png" for n, _ in jobs],
                               seeds=[s for _, s in jobs], x4=scale == 4, config=cfg,
                               device="cpu", on_diverge="return", restarts=args.restarts)
        for key, r in zip(keys, res, strict=True):
            want = store["runs"][key]
            k = np.round(getattr(r, f"kernel_x{scale}"), 9)
            used = r.report["iters_used"]
            if args.tol:
                same = (np.abs(k - np.array(want["kernel"])).max() <= args.tol
                        and abs(r.confidence - want["confidence"]) <= 1e-9
                        and used == want.get("iters_used", used))
            else:
                same = (np.array_equal(k, np.array(want["kernel"]))
                        and r.confidence == want["confidence"] and used == want["iters_used"])
            bad += not same
            lines.append(f"{key}: {'same' if same else 'DIFFERENT'} (iters_used "
                         f"{used}, stored {want.get('iters_used')}; max |Δk| "
                         f"{np.abs(k - np.array(want['kernel'])).max():.1e})")
            print(lines[-1], flush=True)
    lines.append(f"{bad} of {2 * args.runs} runs differ")
    print(lines[-1])
    save_text(DATA / f"check_stored_{args.variant}.txt", "\n".join(lines) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
