"""Study: the clean-up of ``--restarts`` kernels, tuned on the development set, checked on a
held-out set, scored against the authors' code.

Why. One run's raw kernel is cleaned with ``k' = max(k − 0.75·k_(n+1), 0)`` (n = 50) before it
is saved: the clean-up trades the true kernel's tails against the raw kernel's noise floor.
``--restarts K`` cleans each restart the same way and then averages them
(:func:`kgengine.consensus.combine`); averaging already lowers the noise, so the best n for a
restart may be larger than one run's. ``bench/data/postprocess_study.md`` (0.5's raw kernels)
pointed that way without the elongation shrink of 0.9.

What. ``--train`` keeps the *raw* kernels of every restart of the current trainer
(``restart_iters`` iterations, restart seeds :func:`kgengine.api.restart_seed`, one image's K
restarts in one batch: batch invariance makes them the bytes ``--restarts K`` trains), for
the development set (``bench/devset.py``; seeds 0-2) and the check set
(``bench/study_confidence.py``; seed 0), x2 and x4, in ``bench/data/raw_restarts_<set>.json``
(resumable; ``--part i/m`` splits the jobs between processes, each with its own file, merged
when scored). Without ``--train`` every clean-up variant is scored offline (aligned kernel
PSNR, canvases of ``bench/bench_vs_authors.py``), against 0.9.2's rule (n = 50) and, on the
development set, against the authors' stored kernels (``bench/data/authors_kernels.json``).

Run::

    OMP_NUM_THREADS=1 python bench/study_restart_cleanup.py --train --part 0/2 &
    OMP_NUM_THREADS=1 python bench/study_restart_cleanup.py --train --part 1/2
    python bench/study_restart_cleanup.py     # -> bench/data/restart_cleanup_study.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from kgengine.api import estimate_kernels, finish_kernel, finish_restarts, restart_seed
from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.consensus import combine
from kgengine.kernel import analytic_x4, gaussian_kernel, shrink_elongation
from kgengine.metrics import aligned_kernel_psnr
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import DEFAULT_OUT, ensure_devset  # noqa: E402
from study_confidence import CHECK_OUT, ensure_checkset  # noqa: E402
from study_elongation import truth  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SETS = {"dev": (DEFAULT_OUT, (0, 1, 2)), "check": (CHECK_OUT, (0,))}
RESTARTS = 4
CANVAS = {2: 17, 4: 37}  # as bench_vs_authors.py
#: clean-up n of each restart, and the elongation shrink β of the combined kernel
NS = (50, 60, 70, 80, 100)
BETAS = (0.4, 1.0)
BEFORE = (50, 0.4)  # 0.9.2's rule: n_filtering for the restarts too
OUT = DATA / "restart_cleanup_study.md"


def store_path(setname: str, part: str | None = None, what: str = "restarts") -> Path:
    """``bench/data/raw_<what>_<set>[_part<i>of<m>].json`` (``what``: "restarts" here,
    "onerun" in ``bench/study_width.py``)."""
    suffix = f"_part{part.replace('/', 'of')}" if part else ""
    return DATA / f"raw_{what}_{setname}{suffix}.json"


def jobs(setname: str) -> list[tuple[int, str, int]]:
    """(scale, image, seed) of a set, in the order: seeds, scales, images."""
    root, seeds = SETS[setname]
    names = sorted((p.stem for p in (root / "lr_x2").glob("im_*.png")),
                   key=lambda s: int(s.split("_")[1]))
    return [(sc, n, s) for s in seeds for sc in (2, 4) for n in names]


def train(setname: str, part: str) -> None:
    """Train every missing job of this part; one image's restarts per batch; save each."""
    root = ensure_devset() if setname == "dev" else ensure_checkset()
    i, m = (int(v) for v in part.split("/"))
    path = store_path(setname, part if m > 1 else None)
    cfg = KernelGANConfig(restart_iters=1500)  # the stored restarts' length (0.8-0.9.17)
    iters = cfg.run_iters(RESTARTS)
    store = json.loads(path.read_text()) if path.exists() else {
        "note": f"raw kernels of --restarts {RESTARTS} ({iters} iterations each), "
                "bench/study_restart_cleanup.py --train", "runs": {}}
    done = stored_runs(setname)  # every file of the set: merged stores and parts
    todo = [j for k, j in enumerate(jobs(setname)) if k % m == i]
    for sc, name, seed in todo:
        keys = [f"x{sc}/{name}/s{seed}/r{r}" for r in range(RESTARTS)]
        if all(k in store["runs"] or k in done for k in keys):
            continue
        t0 = time.perf_counter()
        res = estimate_kernels([root / f"lr_x{sc}" / f"{name}.png"] * RESTARTS,
                               seeds=[restart_seed(seed, r) for r in range(RESTARTS)],
                               iters=iters, device="cpu", config=cfg, on_diverge="return")
        for k, out in zip(keys, res, strict=True):
            raw = getattr(out, "raw_kernel", None)
            store["runs"][k] = None if raw is None else np.round(raw, 12).tolist()
        save_json(path, store)
        print(f"{setname} x{sc} {name} s{seed}: {time.perf_counter() - t0:.0f} s "
              f"({len(store['runs']) // RESTARTS} groups)", flush=True)


def stored_runs(setname: str, what: str = "restarts") -> dict:
    """Every stored raw kernel of a set (the merged file and any part files)."""
    runs: dict = {}
    for path in sorted(DATA.glob(f"raw_{what}_{setname}*.json")):
        runs.update(json.loads(path.read_text())["runs"])
    return runs


def load_groups(setname: str) -> dict[tuple[int, str, int], list[np.ndarray]]:
    """(scale, image, seed) -> the finite raw kernels of its restarts, from every file of the
    set; groups with a restart not stored yet are left out."""
    runs = stored_runs(setname)
    out = {}
    for sc, name, seed in jobs(setname):
        keys = [f"x{sc}/{name}/s{seed}/r{r}" for r in range(RESTARTS)]
        if all(k in runs for k in keys):
            out[(sc, name, seed)] = [np.asarray(runs[k]) for k in keys if runs[k] is not None]
    return out


def _psnr(k2: np.ndarray, gt: np.ndarray, sc: int) -> float:
    """Aligned kernel PSNR of an x2 kernel (its analytic x4 at x4) against ``gt``."""
    return aligned_kernel_psnr(analytic_x4(k2) if sc == 4 else k2, gt, size=CANVAS[sc]).psnr


def _scored_groups(setname: str):
    """Per stored (scale, image, seed) with a finite restart: (its row, started with its key,
    scale and the isotropic σ = 1.3 Gaussian's PSNR; its raw kernels; the true kernel)."""
    for (sc, name, seed), raws in load_groups(setname).items():
        if raws:
            gt = truth(SETS[setname][0], sc, name)
            yield ({"key": f"x{sc}/{name}/s{seed}", "scale": sc,
                    "iso": _psnr(gaussian_kernel(13, 1.3), gt, sc)}, raws, gt)


def score_set(setname: str) -> list[dict]:
    """Per (scale, image, seed): PSNR of every (n, β), of the isotropic σ = 1.3 Gaussian and,
    where stored, of the authors' kernel."""
    authors = json.loads((DATA / "authors_kernels.json").read_text())["runs"]
    rows = []
    for row, raws, gt in _scored_groups(setname):
        sc = row["scale"]
        ref = authors.get(row["key"]) if setname == "dev" else None
        if ref is not None:
            row["authors"] = aligned_kernel_psnr(np.asarray(ref["kernel"]), gt,
                                                 size=CANVAS[sc]).psnr
        for n in NS:
            comb = combine([finish_kernel(r, n) for r in raws]).kernel
            for b in BETAS:
                row[f"{n},{b}"] = _psnr(shrink_elongation(comb, b), gt, sc)
        rows.append(row)
    return rows


def _diff(a: list[float]) -> str:
    d = np.asarray(a)
    return f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(d.size):.2f}" if d.size > 1 else "–"


def seed_sd(rows: list[dict], column: str) -> float:
    """Mean over images of the standard deviation of ``column`` across seeds (ddof 0, as
    ``bench/bench_vs_authors.py``'s seed spread)."""
    by_image: dict[str, list[float]] = {}
    for r in rows:
        by_image.setdefault(r["key"].split("/")[1], []).append(r[column])
    return float(np.mean([np.std(v) for v in by_image.values() if len(v) > 1]))


def table(rows: list[dict], with_authors: bool) -> list[str]:
    """Markdown rows per (n, β): mean, Δ vs 0.9.2's rule, Δ vs the authors, below iso."""
    ship = f"{BEFORE[0]},{BEFORE[1]}"
    out = ["| n, β | runs | mean aligned kernel PSNR | Δ vs 0.9.2 (n 50, β 0.4) | "
           + ("Δ vs authors' code | seed SD | " if with_authors else "") + "runs below iso |",
           "|---|---:|---:|---:|" + ("---:|---:|" if with_authors else "") + "---:|"]
    if with_authors:
        a = [r for r in rows if "authors" in r]
        below = sum(r["authors"] < r["iso"] for r in a)
        out.append(f"| authors' code | {len(a)} | {np.mean([r['authors'] for r in a]):.2f} | – "
                   f"| – | {seed_sd(a, 'authors'):.2f} | {below} |")
    for n in NS:
        for b in BETAS:
            v = f"{n},{b}"
            cells = [f"{len(rows)}", f"{np.mean([r[v] for r in rows]):.2f}",
                     _diff([r[v] - r[ship] for r in rows])]
            if with_authors:
                cells += [_diff([r[v] - r["authors"] for r in rows if "authors" in r]),
                          f"{seed_sd(rows, v):.2f}"]
            cells.append(str(sum(r[v] < r["iso"] for r in rows)))
            out.append(f"| {'**' + v + '**' if v == ship else v} | " + " | ".join(cells) + " |")
    return out


def byte_check() -> str:
    """One stored group against ``estimate_kernels(restarts=4)`` (the API's own path): the
    raw kernels are stored rounded to 12 decimals, so the check is to a tolerance."""
    groups = load_groups("check")
    if not groups:
        return "byte check: no stored check-set group"
    sc, name, seed = next(iter(groups))
    res = estimate_kernels([CHECK_OUT / f"lr_x{sc}" / f"{name}.png"], seeds=[seed],
                           restarts=RESTARTS, device="cpu",
                           config=KernelGANConfig(restart_iters=1500))[0]
    cfg = KernelGANConfig()
    k, _, _ = finish_restarts(groups[(sc, name, seed)], cfg.clean_n(RESTARTS),
                              elongation_power=cfg.elongation_power)
    raw_err = min(float(np.abs(res.raw_kernel - r).max()) for r in groups[(sc, name, seed)])
    err = float(np.abs(np.asarray(res.kernel_x2) - k).max())
    return (f"Check: on the check set's x{sc} {name} seed {seed}, `--restarts 4` trained again "
            f"gives its medoid restart's raw kernel within {raw_err:.1e} of a stored one (they "
            f"are stored rounded to 12 decimals), and the stored raw kernels finished by the "
            f"API's rule give its saved kernel within {err:.1e}.")


def alternatives(raws: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Other ways to finish one image's restarts, each against the shipped n = 70, β = 0.4:
    the average cleaned again with n2, the medoid restart, and β 0.3 / 0.5."""
    finished = [finish_kernel(r, 70) for r in raws]
    mean = combine(finished).kernel
    out = {"n 70, β 0.4 (shipped)": shrink_elongation(mean, 0.4)}
    for b in (0.3, 0.5):
        out[f"n 70, β {b}"] = shrink_elongation(mean, b)
    for n2 in (60, 80, 100):
        out[f"n 70, the average cleaned again with n {n2}"] = shrink_elongation(
            finish_kernel(mean, n2), 0.4)
    out["n 70, the medoid restart"] = shrink_elongation(combine(finished, "medoid").kernel, 0.4)
    return out


def alternatives_table(setname: str) -> list[str]:
    """Markdown: :func:`alternatives` per scale (Δ ± SE, seed SD on the development set, runs
    below the isotropic Gaussian)."""
    rows = []
    for row, raws, gt in _scored_groups(setname):
        row.update({k: _psnr(v, gt, row["scale"]) for k, v in alternatives(raws).items()})
        rows.append(row)
    out = [f"\n## {setname} set: other ways to finish the restarts (against n 70, β 0.4)\n",
           "| | x2 Δ | x2 seed SD | x2 below iso | x4 Δ | x4 seed SD | x4 below iso |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    ship = "n 70, β 0.4 (shipped)"
    for v in [k for k in rows[0] if k not in ("key", "scale", "iso")]:
        cells = []
        for sc in (2, 4):
            sub = [r for r in rows if r["scale"] == sc]
            sd = f"{seed_sd(sub, v):.2f}" if setname == "dev" else "–"
            cells += [_diff([r[v] - r[ship] for r in sub]), sd,
                      str(sum(r[v] < r["iso"] for r in sub))]
        out.append(f"| {v} | " + " | ".join(cells) + " |")
    return out


def score() -> str:
    lines = [f"# The clean-up of `--restarts 4` kernels\n\n`python bench/study_restart_cleanup.py` "
             "(module docstring: sets, method). Each restart's raw kernel cleaned with n, the "
             "four combined (`combine`, mean of the inliers), the combined kernel's elongation "
             "shrunk by β. Aligned kernel PSNR (x2 17×17, x4 37×37 canvas); Δ ± SE of the "
             f"paired differences. Machine: {machine_line('cpu')}.\n", byte_check()]
    for setname in SETS:
        rows = score_set(setname)
        for sc in (2, 4):
            sub = [r for r in rows if r["scale"] == sc]
            if sub:
                lines += [f"\n## {setname} set, x{sc}\n"] + table(sub, setname == "dev")
        lines += alternatives_table(setname)
    return "\n".join(lines) + "\n"


def derive(name: str, n: int) -> Path:
    """``bench/data/kgengine_<name>.json``: the development set's restarts finished with
    clean-up ``n`` as the API does (x4: the analytic x4 kernel), with their confidence, in
    ``bench/bench_vs_authors.py``'s format (its variant: ``<name>:n_filtering=50,restarts=4,
    elongation_power=0.4,restart_n_filtering=<n>``)."""
    # 0.9.3's settings: the later changes (calibration, mix, confidence) off
    cfg = KernelGANConfig(restart_n_filtering=n, width_calibration=False, elongation_choice=False,
                          spectral_mix=0.0, spectral_confidence=False, width_refine=False)
    runs = {}
    for (sc, name_, seed), raws in load_groups("dev").items():
        if not raws:  # every restart diverged
            continue
        k2, _, cons = finish_restarts(raws, cfg.clean_n(RESTARTS), restarts=RESTARTS,
                                      elongation_power=cfg.elongation_power)
        k = analytic_x4(k2) if sc == 4 else k2
        runs[f"x{sc}/{name_}/s{seed}"] = {"kernel": np.round(k, 9).tolist(),
                                          "confidence": cons.confidence}
    path = DATA / f"kgengine_{name}.json"
    save_json(path, {"variant": name, "config": cfg.to_dict(), "runs": runs,
                     "note": f"derived by bench/study_restart_cleanup.py --derive {name} --n {n} "
                             "from the raw restarts of raw_restarts_dev*.json"})
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", action="store_true")
    p.add_argument("--sets", default="dev,check")
    p.add_argument("--part", default="0/1", help="i/m: this process trains jobs k with k%%m == i")
    p.add_argument("--derive", metavar="NAME", help="write kgengine_NAME.json (see derive)")
    p.add_argument("--n", type=int, default=KernelGANConfig().restart_n_filtering)
    a = p.parse_args(argv)
    if a.derive:
        print(derive(a.derive, a.n))
        return 0
    if a.train:
        for s in a.sets.split(","):
            train(s, a.part)
        return 0
    text = score()
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
