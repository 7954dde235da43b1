"""Study: ``--restarts 4`` with restarts of 1250 against 1500 iterations on the sharp set.

Why. 0.9.18 trains each restart 1250 iterations instead of 1500 (``restart_iters``), on the
evidence of ``bench/study_restart_iters.py``: the development and check sets, whose kernels
are 0.6-5 px² wide. The sharp set of ``bench/study_sharp.py`` (the 16 Urban100 photos
degraded x2 by sharp Gaussians, variances U(0.2, 0.8) px², seeds 0-2) is the regime of real
photos, and its restarts had been trained with 1500 only (``bench/data/sharp_restarts_raw.json``,
``bench/study_clean_release.py --train``).

What. For each (photo, seed): ``--restarts 4`` as 0.9.18 runs it (:func:`kgengine.api.
estimate_kernels` with the defaults, two photos' restarts a batch: the same bytes as one at a
time), and as 0.9.17 did: the stored 1500-iteration raw kernels through the API's own
post-processing (``study_stop.api_result``). Aligned kernel PSNR against the true kernel on
the x2 canvas of ``bench/study_restart_cleanup.py``, paired; runs below the isotropic σ =
1.3 Gaussian.

Run: ``python bench/study_restart_iters_sharp.py`` (about 15 min on 2 cores, resumable,
``bench/data/restart_iters_sharp.json``) -> ``bench/data/restart_iters_sharp.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from kgengine.api import estimate_kernels, restart_seed
from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.kernel import gaussian_kernel
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_sharp as sh  # noqa: E402
from study_stop import api_result  # noqa: E402

K = 4
RAW_1500 = sh.DATA / "sharp_restarts_raw.json"
STORE = sh.DATA / "restart_iters_sharp.json"
OUT = sh.DATA / "restart_iters_sharp.md"


def train(per_batch: int = 2) -> dict:
    """``--restarts 4`` with today's defaults on every (photo, seed) not stored yet."""
    store = json.loads(STORE.read_text()) if STORE.exists() else {
        "note": "bench/study_restart_iters_sharp.py: the saved x2 kernel (rounded to 1e-12) and "
                "confidence of --restarts 4 with each restart trained restart_iters",
        "restart_iters": KernelGANConfig().restart_iters, "runs": {}}
    todo = [(i, p, s) for i, p in enumerate(sh.images()) for s in sh.SEEDS
            if f"{p.stem}/s{s}" not in store["runs"]]
    for k in range(0, len(todo), per_batch):
        chunk = todo[k : k + per_batch]
        t0 = time.perf_counter()
        res = estimate_kernels([sh.lr_image(i, p) for i, p, _ in chunk],
                               seeds=[s for *_, s in chunk], restarts=K, device="cpu",
                               on_diverge="return")
        for (_, p, s), r in zip(chunk, res, strict=True):
            store["runs"][f"{p.stem}/s{s}"] = None if isinstance(r, Exception) else {
                "kernel": np.round(r.kernel_x2, 12).tolist(), "confidence": r.confidence,
                "iters": r.report["iters"]}
        save_json(STORE, store)
        print(f"{len(store['runs'])} stored ({time.perf_counter() - t0:.0f} s)", flush=True)
    return store


def report(store: dict) -> str:
    raw = json.loads(RAW_1500.read_text())["runs"]
    iso = gaussian_kernel(13, 1.3)
    rows = []
    for i, p in enumerate(sh.images()):
        truth, lr = sh.true_kernel(i), sh.lr_image(i, p)
        for s in sh.SEEDS:
            new, old = store["runs"].get(f"{p.stem}/s{s}"), raw.get(f"{p.stem}/s{s}")
            if new is None or old is None or any(k is None for k in old):
                continue
            before = api_result(old, lr, [restart_seed(s, r) for r in range(K)], 1500, False)
            rows.append({"image": p.stem, "new": rc._psnr(np.asarray(new["kernel"]), truth, 2),
                         "old": rc._psnr(before.kernel_x2, truth, 2),
                         "iso": rc._psnr(iso, truth, 2)})
    d = np.array([r["new"] - r["old"] for r in rows])
    se = d.std(ddof=1) / np.sqrt(len(d))

    def seed_sd(col: str) -> float:
        return sh._seed_sd(np.array([r[col] for r in rows]), [r["image"] for r in rows])

    lines = ["# `--restarts 4` on the sharp set: restarts of 1250 against 1500 iterations", "",
             f"`python bench/study_restart_iters_sharp.py` (module docstring). "
             f"{machine_line('cpu')}. x2, {len(rows)} runs (16 photos × seeds 0-2).", "",
             "| restarts | mean aligned PSNR | Δ vs 1500 ± SE | worst / best run | "
             "below iso σ 1.3 | seed SD |", "|---|---:|---:|---:|---:|---:|",
             f"| 1250 (0.9.18, trained here) | {np.mean([r['new'] for r in rows]):.2f} | "
             f"{d.mean():+.3f} ± {se:.3f} | {d.min():+.2f} / {d.max():+.2f} | "
             f"{sum(r['new'] < r['iso'] for r in rows)} | {seed_sd('new'):.2f} |",
             f"| 1500 (0.9.17, stored raw kernels, today's post-processing) | "
             f"{np.mean([r['old'] for r in rows]):.2f} | – | – | "
             f"{sum(r['old'] < r['iso'] for r in rows)} | {seed_sd('old'):.2f} |",
             f"| isotropic σ 1.3 | {np.mean([r['iso'] for r in rows]):.2f} | – | – | – | – |",
             ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)  # --help
    text = report(train())
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
