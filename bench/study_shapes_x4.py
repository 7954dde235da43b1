"""Study: x4 on kernels that are not Gaussians (defocus discs, motion, lens halos).

Why. ``bench/study_shapes.py``, ``bench/study_restart_shapes.py`` and
``bench/study_shapes_authors.py`` score the discs, motion segments and lens halos at x2 only;
at x4, the scale of RealSR-style pools, kgengine had been measured on Gaussian kernels only.
Both codes train an x2 kernel on the x4 LR image and derive the x4 kernel analytically
(:func:`kgengine.kernel.analytic_x4`), which is exact when the x4 degradation is two x2 steps
of one kernel, so that is how the truth is made here (the development set's protocol).

What. The 16 Urban100 photos at full size (cropped to a multiple of 4; LR images about
256×170), each degraded x4 (8 bits) with ``k4 = analytic_x4(k2)`` for the three x2 kernels
``study_shapes.shape_kernel`` draws for that image. kgengine trains each at seeds 0-2:

- one run as ``estimate --x4`` trains it (``--stop auto``; raw kernel and the iteration it
  stopped at);
- ``--restarts 4`` (restarts of 1250 iterations; the four raw kernels).

Raw kernels in ``bench/data/shapes_x4.json`` (rewritten atomically after every batch, so the
job resumes). Scored (the API's own post-processing, :func:`study_stop.api_result`) by
aligned kernel PSNR of the x4 kernel (37×37 canvas, as ``bench/bench_vs_authors.py``) and by
LR re-synthesis PSNR (the HR photo degraded x4 by each kernel against the LR image), beside:
the authors' clean-up (n = 40) of the one run's raw kernel (kgengine's training without its
post-processing); the one run post-processed with ``spectral_mix=0`` and with
``elongation_power=1`` (the README's advice for defocus-like and motion-like blur, measured
at x2); the spectrum's Gaussian alone (the closed-form fit at x4); the fixed isotropic
σ = 1.3 Gaussian (its analytic x4). ``--baseline`` runs the authors' code (``--X4``, seed
0) on the first ``--images`` images, image by image, in ``bench/data/shapes_x4_authors.json``
(11-15 min per run on this host, two at a time; resumable), and the report sets kgengine
against it on the runs it has.

Run: ``python bench/study_shapes_x4.py --train [--seeds 0 1 2]`` (per seed about 8 min for
the one runs and 20 for the restarts on 2 cores; the one runs of every seed first, then
the restarts seed by seed; resumable),
``python bench/study_shapes_x4.py --baseline /tmp/kg_ref [--images N]``, then
``python bench/study_shapes_x4.py`` -> ``bench/data/shapes_x4.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

import kgengine
from kgengine.accuracy.synth import crop_to_multiple
from kgengine.api import estimate_kernels, finish_kernel, restart_seed
from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.degrade import degrade
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, center_kernel, gaussian_kernel, principal_axes
from kgengine.metrics import aligned_kernel_psnr, lr_resynthesis_psnr
from kgengine.spectral import gaussian_of, spectral_covariance
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_restart_iters as ri  # noqa: E402
import study_shapes as sh  # noqa: E402
import study_shapes_authors as sa  # noqa: E402
from study_shapes_authors import _paired  # noqa: E402
from study_stop import api_result  # noqa: E402

STORE = sh.DATA / "shapes_x4.json"
AUTHORS = sh.DATA / "shapes_x4_authors.json"
SCORES = Path(__file__).resolve().parents[1] / "bench_out" / "shapes_x4_scores.json"
OUT = sh.DATA / "shapes_x4.md"
K, RESTART_ITERS, SEEDS = 4, 1250, (0, 1, 2)
COLUMNS = [("one", "kgengine one run"), ("restarts", "kgengine `--restarts 4`"),
           ("faithful", "one run's raw kernel, the authors' clean-up"),
           ("nomix", "one run, `--set spectral_mix=0`"),
           ("keep", "one run, `--set elongation_power=1`"),
           ("g", "the spectrum's Gaussian alone"), ("iso", "isotropic σ = 1.3")]
#: The estimates set against the reference in :func:`authors_table`.
AUTHOR_COLUMNS = ("faithful", "one", "restarts", "iso")


def jobs(seeds: tuple[int, ...] = SEEDS) -> list[tuple[str, int, int]]:
    """(shape, image index, seed), seed by seed, image by image."""
    return [(s, i, seed) for seed in seeds for i in range(len(sh.images())) for s in sh.SHAPES]


def key_of(shape: str, i: int, seed: int) -> str:
    return f"{shape}/{sh.images()[i].stem}/s{seed}"


def hr_of(i: int) -> np.ndarray:
    """The i-th photo, full size, cropped to a multiple of 4 (float32, [0, 1])."""
    return crop_to_multiple(read_image(sh.images()[i]), 4)


def lr_of(shape: str, i: int, hr: np.ndarray | None = None) -> np.ndarray:
    """The photo degraded x4 by ``analytic_x4`` of the shape's x2 kernel, 8 bits, float32."""
    hr = hr_of(i) if hr is None else hr
    lr = degrade(hr, analytic_x4(sh.shape_kernel(shape, i)), 4)
    return (np.round(np.clip(lr, 0, 1) * 255) / 255).astype(np.float32)


def _load() -> dict:
    return json.loads(STORE.read_text()) if STORE.exists() else {
        "note": "bench/study_shapes_x4.py --train: raw x2 kernels of one run "
                "(--stop auto, with the iteration it stopped at) and of --restarts 4 "
                "(restarts of 1250 iterations), rounded to 1e-11", "runs": {}}


def _rounded(k: np.ndarray) -> list | None:
    return np.round(k, 11).tolist() if np.isfinite(k).all() else None


def train_one_runs(store: dict, seed: int, batch: int = 8) -> None:
    """One run (``--stop auto``) at ``seed`` of every (shape, image) without one, ``batch`` at
    a time (batch invariance makes them the bytes of single runs)."""
    todo = [j for j in jobs((seed,)) if "one" not in store["runs"].get(key_of(*j), {})]
    for start in range(0, len(todo), batch):
        t0, chunk = time.perf_counter(), todo[start : start + batch]
        res = estimate_kernels([lr_of(s, i) for s, i, _ in chunk], seeds=[seed] * len(chunk),
                               names=[key_of(*j) for j in chunk], device="cpu",
                               on_diverge="return", stop="auto", x4=True)
        for job, r in zip(chunk, res, strict=True):
            one = None if isinstance(r, Exception) else {
                "raw": _rounded(r.raw_kernel), "iters_used": r.report["iters_used"]}
            store["runs"].setdefault(key_of(*job), {})["one"] = one
        save_json(STORE, store)
        print(f"seed {seed}, one runs: {start + len(chunk)} of {len(todo)} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)


def train_restarts(store: dict, seed: int, per_batch: int = 2) -> None:
    """``--restarts 4`` (restarts of 1250) at ``seed`` of every (shape, image) without them."""
    todo = [j for j in jobs((seed,)) if "restarts" not in store["runs"].get(key_of(*j), {})]
    for start in range(0, len(todo), per_batch):
        t0, chunk = time.perf_counter(), todo[start : start + per_batch]
        snaps = ri.restart_snapshots([(lr_of(s, i), key_of(s, i, sd)) for s, i, sd in chunk],
                                     [seed] * len(chunk), (RESTART_ITERS,))[RESTART_ITERS]
        for g, job in enumerate(chunk):
            store["runs"].setdefault(key_of(*job), {})["restarts"] = [
                _rounded(snaps[r]) for r in range(g * K, (g + 1) * K)]
        save_json(STORE, store)
        print(f"seed {seed}, restarts: {start + len(chunk)} of {len(todo)} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)


def score(item: tuple[str, dict, dict | None]) -> dict | None:
    """One (shape, image, seed): each column's aligned kernel PSNR (x4) and LR re-synthesis PSNR
    (``<column>_lr``), the true kernel's (``truth_lr``, the ceiling) and the one run's
    stopping iteration; None until both runs are stored, or where one diverged."""
    key, rec, ref = item  # ref: the reference's record of the run (None: not run)
    one, group = rec.get("one"), rec.get("restarts")
    if one is None or group is None or one["raw"] is None or any(k is None for k in group):
        return None
    shape, stem, s = key.split("/")
    i, seed = [p.stem for p in sh.images()].index(stem), int(s[1:])
    hr = hr_of(i)
    lr, truth = lr_of(shape, i, hr), analytic_x4(sh.shape_kernel(shape, i))
    k2 = {"one": api_result([one["raw"]], lr, [seed], one["iters_used"], True).kernel_x2,
          "restarts": api_result(group, lr, [restart_seed(seed, r) for r in range(K)],
                                 RESTART_ITERS, True).kernel_x2,
          "faithful": finish_kernel(np.asarray(one["raw"]), 40),
          "nomix": api_result([one["raw"]], lr, [seed], one["iters_used"], True,
                              KernelGANConfig(spectral_mix=0.0)).kernel_x2,
          "keep": api_result([one["raw"]], lr, [seed], one["iters_used"], True,
                             KernelGANConfig(elongation_power=1.0)).kernel_x2,
          "g": gaussian_of(spectral_covariance(lr.mean(axis=2), 4), 13),
          "iso": gaussian_kernel(13, 1.3)}
    out: dict = {"shape": shape, "image": stem, "seed": seed, "iters": one["iters_used"],
                 "truth_lr": lr_resynthesis_psnr(hr, lr, truth, 4).psnr}
    for name, k in k2.items():
        out[name] = rc._psnr(k, truth, 4)
        out[f"{name}_lr"] = lr_resynthesis_psnr(hr, lr, analytic_x4(k), 4).psnr
        out[f"{name}_area"] = log_area(analytic_x4(k), truth)
    if ref is not None:  # its x4 kernel as saved (0.5 px off the middle at x4: re-centred)
        k4 = np.asarray(ref["kernel"])
        out["authors"] = aligned_kernel_psnr(k4, truth, size=rc.CANVAS[4]).psnr
        out["authors_lr"] = lr_resynthesis_psnr(hr, lr, center_kernel(k4), 4).psnr
        out["authors_area"] = log_area(k4, truth)
    return out


def log_area(k: np.ndarray, truth: np.ndarray) -> float:
    """``log2(A(k) / A(truth))`` with ``A = sqrt(var1·var2)`` of
    :func:`kgengine.kernel.principal_axes` (the second-moment ellipse's area, up to π):
    how much wider (> 0) or narrower than the true kernel an estimate is, whatever its shape."""
    return float(np.log2(np.sqrt(np.prod(principal_axes(k)[:2])
                                 / np.prod(principal_axes(truth)[:2]))))


def _authors() -> dict:
    """The reference's stored x4 runs (``--baseline``), by key."""
    return json.loads(AUTHORS.read_text())["runs"] if AUTHORS.exists() else {}


def run_reference(baseline: Path, n_images: int, workers: int) -> None:
    """The authors' code (``--X4``, seed 0) on the first ``n_images`` images' three shapes
    not stored in :data:`AUTHORS` yet, image by image, ``workers`` at a time."""
    note = ("the authors' KernelGAN (../shared/baseline, sefibk/KernelGAN, --X4) on "
            "bench/study_shapes_x4.py's LR images, seed 0, 3000 iterations; x4 kernels as "
            "its .mat files give them")
    stored = _authors()
    todo = [(s, i, 0) for i in range(min(n_images, len(sh.images()))) for s in sh.SHAPES
            if key_of(s, i, 0) not in stored]
    sa.run_references(baseline, AUTHORS, note, 4, workers,
                      [(key_of(*j), lambda s=j[0], i=j[1]: lr_of(s, i)) for j in todo])


def authors_table(rows: list[dict]) -> list[str]:
    """On the runs the reference has: each estimate's mean and its paired difference with
    the reference, by aligned kernel PSNR and by LR re-synthesis (the reference re-centred)."""
    names = dict(COLUMNS)
    lines = ["| kernel | runs | metric | authors' code | "
             + " | ".join(f"{names[c]} (− authors ± SE)" for c in AUTHOR_COLUMNS)
             + " | below σ 1.3: authors / one run / restarts |",
             "|---|---:|---|---:|" + "---:|" * (len(AUTHOR_COLUMNS) + 1)]
    for shape in (*sh.SHAPES, "all"):
        sel = [r for r in rows if "authors" in r and shape in ("all", r["shape"])]
        for suffix, metric in (("", "kernel PSNR"), ("_lr", "LR re-synthesis")):
            if not sel:
                continue
            col = {c: np.array([r[c + suffix] for r in sel]) for c in ("authors", *AUTHOR_COLUMNS)}
            below = " / ".join(str(int((col[c] < col["iso"]).sum()))
                               for c in ("authors", "one", "restarts"))
            lines.append(f"| {shape} | {len(sel)} | {metric} | {col['authors'].mean():.2f} | "
                         + " | ".join(f"{col[c].mean():.2f} ({_paired(col[c], col['authors'])})"
                                      for c in AUTHOR_COLUMNS) + f" | {below} |")
    return lines


def table(rows: list[dict], suffix: str) -> list[str]:
    """Per shape: each column's mean and its paired difference with the one run; the counts
    of runs below the isotropic Gaussian."""
    head = " | ".join(name for _, name in COLUMNS)
    lines = [f"| kernel | runs | {'true kernel (ceiling) | ' if suffix else ''}{head} | "
             "below σ 1.3: one run / restarts / the spectrum's Gaussian |",
             "|---|---:|" + "---:|" * (len(COLUMNS) + 1 + bool(suffix))]
    for shape in (*sh.SHAPES, "all"):
        sel = [r for r in rows if shape in ("all", r["shape"])]
        if not sel:
            continue
        col = {c: np.array([r[c + suffix] for r in sel]) for c, _ in COLUMNS}
        cells = [f"{col['one'].mean():.2f}"] + [
            f"{col[c].mean():.2f} ({_paired(col[c], col['one'])})" for c, _ in COLUMNS[1:]]
        below = " / ".join(str(int((col[c] < col["iso"]).sum())) for c in ("one", "restarts", "g"))
        ceiling = f"{np.mean([r['truth_lr'] for r in sel]):.2f} | " if suffix else ""
        lines.append(f"| {shape} | {len(sel)} | {ceiling}" + " | ".join(cells) + f" | {below} |")
    return lines


def width_table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    """Per shape and estimate: how much wider than the true x4 kernel it is (the factor
    ``2^mean log_area`` of the second-moment area) and the runs narrower than the truth."""
    lines = ["| kernel | runs | " + " | ".join(name for _, name in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for shape in (*sh.SHAPES, "all"):
        sel = [r for r in rows if shape in ("all", r["shape"])]
        if not sel:
            continue
        cells = []
        for c, _ in columns:
            a = np.array([r[f"{c}_area"] for r in sel])
            cells.append(f"{2 ** a.mean():.2f}× ({int((a < 0).sum())} narrower)")
        lines.append(f"| {shape} | {len(sel)} | " + " | ".join(cells) + " |")
    return lines


def seed_table(rows: list[dict]) -> list[str]:
    """Per shape and column: the mean at each seed, and the spread across seeds (the SD of
    one image's PSNR over the seeds, averaged over the images that have every seed)."""
    seeds = sorted({r["seed"] for r in rows})
    lines = ["| kernel | estimate | " + " | ".join(f"seed {s}" for s in seeds)
             + " | spread across seeds (mean SD per image) |",
             "|---|---|" + "---:|" * (len(seeds) + 1)]
    for shape in (*sh.SHAPES, "all"):
        sel = [r for r in rows if shape in ("all", r["shape"])]
        if not sel:
            continue
        by_image: dict[tuple[str, str], dict[int, dict]] = {}
        for r in sel:
            by_image.setdefault((r["shape"], r["image"]), {})[r["seed"]] = r
        full = [v for v in by_image.values() if len(v) == len(seeds)]
        for c, name in COLUMNS[:3]:
            means = [np.mean([r[c] for r in sel if r["seed"] == s]) for s in seeds]
            spread = (np.mean([np.std([v[s][c] for s in seeds], ddof=1) for v in full])
                      if full and len(seeds) > 1 else float("nan"))
            lines.append(f"| {shape} | {name} | " + " | ".join(f"{m:.2f}" for m in means)
                         + f" | {spread:.2f} |")
    return lines


def scored_runs(workers: int) -> dict[str, dict | None]:
    """:func:`score` of every stored run, ``workers`` at a time; a run already scored with
    the same raw kernels, reference record, study code and kgengine version is taken from
    :data:`SCORES` (a cache outside the repository, keyed by a digest of all four)."""
    runs, ref = _load()["runs"], _authors()
    code = [Path(__file__).read_text(encoding="utf-8"), kgengine.__version__]
    digest = {k: hashlib.sha256(json.dumps([v, ref.get(k), code]).encode()).hexdigest()
              for k, v in runs.items()}
    cache = json.loads(SCORES.read_text()) if SCORES.exists() else {}
    todo = [k for k in runs if cache.get(k, {}).get("digest") != digest[k]]
    with Pool(workers) as pool:
        items = [(k, runs[k], ref.get(k)) for k in todo]
        for k, row in zip(todo, pool.map(score, items, chunksize=1), strict=True):
            cache[k] = {"digest": digest[k], "row": row}
    SCORES.parent.mkdir(parents=True, exist_ok=True)
    save_json(SCORES, cache)
    return {k: cache[k]["row"] for k in runs}


def report(workers: int = 2) -> str:
    scored = scored_runs(workers)
    rows = [r for r in scored.values() if r is not None]
    per = ["| run | " + " | ".join(name for _, name in COLUMNS) + " | one run's iterations |",
           "|---|" + "---:|" * (len(COLUMNS) + 1)]
    per += [f"| {k} | " + " | ".join(f"{r[c]:.2f}" for c, _ in COLUMNS) + f" | {r['iters']} |"
            for k, r in scored.items() if r is not None]
    iters = np.mean([r["iters"] for r in rows]) if rows else float("nan")
    ref = [v for k, v in _authors().items() if scored.get(k) is not None]
    reference = [] if not ref else [
        "## The authors' code, side by side (seed 0)", "",
        "The reference (`--X4`, seed 0, 3000 iterations, one thread per run) on the first "
        "images, its x4 kernel as saved (aligned kernel PSNR forgives most of its 1.5 px "
        "offset: it sits at the edge of the ±1.5 px search) and "
        "re-centred for LR re-synthesis (as `kgengine pool import` takes it): "
        f"{len(ref)} runs, {np.mean([v['seconds'] for v in ref]):.0f} s per run on "
        f"{ref[0]['machine']}, 2 at a time.", "", *authors_table(rows), "",
        "Width on the same runs (the second-moment area against the true kernel's, as in "
        "\"Width\" above):", "",
        *width_table([r for r in rows if "authors" in r],
                     [("authors", "authors' code"), *[c for c in COLUMNS
                                                      if c[0] in AUTHOR_COLUMNS]]), ""]
    return "\n".join([
        "# x4 on kernels that are not Gaussians", "",
        "`python bench/study_shapes_x4.py` (module docstring). The 16 Urban100 photos at full "
        "size, each degraded x4 by the analytic x4 kernel of `study_shapes.py`'s disc, motion "
        "segment and lens halo; kgengine at seeds "
        f"{', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}; the x4 kernel's "
        "aligned kernel PSNR (37×37 canvas), means over the runs (image × seed); in brackets "
        "the paired difference with the one run ± its standard error over the runs. "
        f"{len(rows)} of {len(jobs())} (shape, image, seed) runs scored; the one runs "
        f"stopped at {iters:.0f} iterations on average. Scored on {machine_line()}.", "",
        *table(rows, ""), "", "## Width", "",
        "How much wider than the true x4 kernel each estimate is: the ratio of the areas of "
        "their second-moment ellipses (`sqrt(var1·var2)`, `kgengine.kernel.principal_axes`), "
        "its geometric mean over the runs, and how many runs came out narrower than the "
        "truth.", "", *width_table(rows, COLUMNS), "",
        "## By seed", "", *seed_table(rows), "", *reference,
        "## LR re-synthesis PSNR", "",
        "The same kernels' x4: the HR photo degraded by each against the LR image, at the best "
        "sub-sampling phase, 8 LR px shaved (`kgengine.metrics.lr_resynthesis_psnr`); the true "
        "kernel's score is the ceiling (8-bit quantisation).", "", *table(rows, "_lr"), "",
        "## Per run", "", *per, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", action="store_true",
                   help="train what is not stored yet: the one runs of every seed, then the "
                        "restarts seed by seed")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                   help="the seeds to train (0 1 2)")
    p.add_argument("--workers", type=int, default=2,
                   help="reference runs at once, and processes that score the runs")
    p.add_argument("--baseline", type=Path, default=None,
                   help="run the reference at x4 (folder made by ../shared/baseline/build.sh)")
    p.add_argument("--images", type=int, default=16,
                   help="with --baseline: the first N images (all 16)")
    a = p.parse_args(argv)
    if a.baseline is not None:
        run_reference(a.baseline, a.images, a.workers)
    if a.train:
        store = _load()
        for seed in a.seeds:  # the one runs of every seed first: they are the cheap part
            train_one_runs(store, seed)
        for seed in a.seeds:
            train_restarts(store, seed)
    save_text(OUT, report(a.workers))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
