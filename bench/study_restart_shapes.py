"""Study: ``--restarts 4`` on kernels that are not Gaussians (discs, motion, lens halos).

Why. 0.9.18 shortened each restart to 1250 iterations (``restart_iters``) on Gaussian
kernels only (``bench/study_restart_iters.py``), and ``--restarts 4`` itself was never scored
on the other shapes of ``bench/study_shapes.py``: whether four restarts beat one run there,
and whether 1250 iterations lose anything against 1500, were open.

What. The 48 LR images of ``bench/study_shapes.py`` (16 Urban100 crops × disc, motion, halo;
x2), each trained as ``--restarts 4`` at seeds 0-2: the four restarts of two images per
batch (batch invariance makes them the bytes of ``estimate --restarts 4``) for 1500
iterations, their raw kernels kept at 1250 and 1500 (a restart stopped at 1250 has exactly the
kernels at 1250: the learning rate decays at 750 and 1500 whatever the length). Scored by the
API's own post-processing of the 4 raw kernels (:func:`study_stop.api_result`): aligned kernel
PSNR on ``study_shapes``'s 17×17 canvas, against
- restarts of 1500 (the paired change of 0.9.18's default, over all seeds);
- one run as ``estimate`` trains it today (``--stop auto``, seed 0, the raw kernels of
  ``bench/data/shapes_kernels_auto.json``);
- the isotropic σ = 1.3 Gaussian;
with the confidence's Spearman ρ against PSNR per shape.

``--confidence`` (a third table, ``bench/data/restart_shapes_confidence.md``): each shape's groups
in thirds by confidence, with the saved and true kernels' elongation and short-axis variance (why
the confidence ranks motion blur backwards), and the restarts combined by the medoid rule.

``--clean-n`` (a second table, ``bench/data/restart_shapes_clean_n.md``): the restarts'
clean-up n (``restart_n_filtering``, 70 since 0.9.3, chosen on Gaussian kernels) at 60 and 50
instead, on these groups and on the Gaussian groups of ``bench/study_restart_iters.py``
(development and check sets, restarts of 1250), since one run's n = 50 does better here.

Run: ``python bench/study_restart_shapes.py --train`` (about 15 min per seed on 2 cores,
resumable: ``bench/data/restart_shapes.json``; ``--seeds 0`` for one), then
``python bench/study_restart_shapes.py`` -> ``bench/data/restart_shapes_study.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from kgengine.api import restart_seed
from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.kernel import gaussian_kernel, principal_axes
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_restart_iters as ri  # noqa: E402
import study_shapes as sh  # noqa: E402
from study_elongation import truth  # noqa: E402
from study_stop import api_result  # noqa: E402

STORE = sh.DATA / "restart_shapes.json"
OUT = sh.DATA / "restart_shapes_study.md"
K = 4
SNAPS = (1250, 1500)


def jobs(seeds: tuple[int, ...]) -> list[tuple[str, int, int]]:
    """(shape, image index, seed) of every group of restarts."""
    return [(s, i, seed) for seed in seeds for s in sh.SHAPES for i in range(len(sh.images()))]


def key_of(job: tuple[str, int, int]) -> str:
    shape, i, seed = job
    return f"{shape}/{sh.images()[i].stem}/s{seed}"


def lr_of(shape: str, i: int) -> np.ndarray:
    return sh.lr_image(shape, i, sh.images()[i])


def train_batch(batch: list[tuple[str, int, int]]) -> dict[str, dict]:
    """The K restarts of each job in ``batch``, 1500 iterations; raw kernels at :data:`SNAPS`
    (rounded to 1e-11; None for a restart that diverged)."""
    snaps = ri.restart_snapshots([(lr_of(shape, i), f"{shape}_{i}") for shape, i, _ in batch],
                                 [seed for *_, seed in batch], SNAPS)
    out = {}
    for g, job in enumerate(batch):
        rows = range(g * K, (g + 1) * K)
        out[key_of(job)] = {str(t): [np.round(snaps[t][r], 11).tolist()
                                     if np.isfinite(snaps[t][r]).all() else None for r in rows]
                            for t in SNAPS}
    return out


def train(seeds: tuple[int, ...], per_batch: int = 2) -> None:
    store = json.loads(STORE.read_text()) if STORE.exists() else {
        "note": "bench/study_restart_shapes.py --train: raw kernels of each of --restarts 4 "
                "at 1250 and 1500 iterations, rounded to 1e-11", "runs": {}}
    todo = [j for j in jobs(seeds) if key_of(j) not in store["runs"]]
    for start in range(0, len(todo), per_batch):
        t0 = time.perf_counter()
        store["runs"].update(train_batch(todo[start : start + per_batch]))
        save_json(STORE, store)
        print(f"{len(store['runs'])} groups stored ({time.perf_counter() - t0:.0f} s)",
              flush=True)


def _score(item: tuple[str, dict]) -> dict | None:
    """One group's saved-kernel PSNR and confidence at each snapshot, and seed 0's one run
    (None if a restart diverged)."""
    key, rec = item
    shape, stem, s = key.split("/")
    i = [p.stem for p in sh.images()].index(stem)
    seed = int(s[1:])
    lr, gt = lr_of(shape, i), sh.shape_kernel(shape, i)
    out = {"key": key, "shape": shape, "seed": seed,
           "iso": rc._psnr(gaussian_kernel(13, 1.3), gt, 2), "psnr": {}, "conf": {}}
    for t in SNAPS:
        ks = rec[str(t)]
        if any(k is None for k in ks):
            return None
        res = api_result(ks, lr, [restart_seed(seed, r) for r in range(K)], t, False)
        out["psnr"][t], out["conf"][t] = rc._psnr(res.kernel_x2, gt, 2), res.confidence
    one = json.loads(sh.STORE_AUTO.read_text())["runs"].get(f"{shape}/{stem}")
    if seed == 0 and one is not None:
        res = api_result([one["raw"]], lr, [0], one["iters_used"], False)
        out["one"] = rc._psnr(res.kernel_x2, gt, 2)
    return out


def _diff(a: list[float], b: list[float]) -> str:
    d = np.asarray(a) - np.asarray(b)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{d.mean():+.3f} ± {se:.3f} (worst {d.min():+.2f})"


def report(workers: int = 2) -> str:
    from scipy.stats import spearmanr

    runs = json.loads(STORE.read_text())["runs"]
    with Pool(workers) as pool:
        rows = [r for r in pool.map(_score, sorted(runs.items()), chunksize=2) if r]
    lines = ["| kernel | groups (seeds) | restarts of 1250 | 1250 − 1500 (± SE) | "
             "below σ 1.3 (1250 / 1500) | ρ(confidence, PSNR), 1250 | seed 0: one run "
             "(`--stop auto`) | seed 0: restarts − one run (± SE) | below σ 1.3, seed 0 "
             "(one run / restarts) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for shape in sh.SHAPES:
        rs = [r for r in rows if r["shape"] == shape]
        if not rs:
            continue
        a = [r["psnr"][1250] for r in rs]
        b = [r["psnr"][1500] for r in rs]
        below = [sum(r["psnr"][t] < r["iso"] for r in rs) for t in SNAPS]
        rho = spearmanr([r["conf"][1250] for r in rs], a).statistic
        s0 = [r for r in rs if "one" in r]
        one = [r["one"] for r in s0]
        r0 = [r["psnr"][1250] for r in s0]
        below0 = (sum(r["one"] < r["iso"] for r in s0), sum(r["psnr"][1250] < r["iso"]
                                                              for r in s0))
        seeds = sorted({r["seed"] for r in rs})
        lines.append(
            f"| {shape} | {len(rs)} ({','.join(map(str, seeds))}) | {np.mean(a):.2f} | "
            f"{_diff(a, b)} | {below[0]} / {below[1]} | {rho:+.2f} | "
            + (f"{np.mean(one):.2f} | {_diff(r0, one)} | {below0[0]} / {below0[1]} |"
               if s0 else "– | – | – |"))
    return "\n".join([
        "# `--restarts 4` on kernels that are not Gaussians", "",
        f"`python bench/study_restart_shapes.py` (module docstring). {machine_line()}. "
        "The images of `bench/study_shapes.py` (16 Urban100 crops per shape, x2). Mean aligned "
        "kernel PSNR (17×17 canvas) of the kernel `estimate --restarts 4` saves, restarts "
        "stopped at 1250 iterations (0.9.18's default) against 1500 (paired over every seed), "
        "and at seed 0 against one run as `estimate` trains it (`--stop auto`). ρ: Spearman of "
        "the saved kernel's confidence with its PSNR over the shape's groups.", "", *lines, ""])


CLEAN_NS = (70, 60, 50)
OUT_N = sh.DATA / "restart_shapes_clean_n.md"


def _score_n(item: tuple[str, str, dict]) -> dict | None:
    """One group's saved-kernel PSNR at 1250 with each restart clean-up n of CLEAN_NS."""
    kind, key, rec = item
    if kind == "shape":
        shape, stem, s = key.split("/")
        i = [p.stem for p in sh.images()].index(stem)
        lr, gt, sc, seed, group = lr_of(shape, i), sh.shape_kernel(shape, i), 2, int(s[1:]), shape
        raws = rec["1250"]
    else:
        group, xs, name, s = key.split("/")
        sc, seed = int(xs[1:]), int(s[1:])
        lr, gt = ri.lr_of(group, sc, name), truth(rc.SETS[group][0], sc, name)
        raws, group = rec["raw"]["1250"], f"{group} x{sc}"
    if any(r is None for r in raws):
        return None
    seeds = [restart_seed(seed, r) for r in range(K)]
    row = {"group": group, "iso": rc._psnr(gaussian_kernel(13, 1.3), gt, sc)}
    for n in CLEAN_NS:
        res = api_result(raws, lr, seeds, 1250, sc == 4,
                         KernelGANConfig().replace(restart_n_filtering=n))
        row[n] = rc._psnr(res.kernel_x2, gt, sc)
    return row


def clean_n_report(workers: int = 2) -> str:
    rc.ensure_devset()
    rc.ensure_checkset()
    items = [("shape", k, v) for k, v in json.loads(STORE.read_text())["runs"].items()]
    items += [("gauss", k, v) for k, v in json.loads(ri.STORE.read_text())["runs"].items()]
    with Pool(workers) as pool:
        rows = [r for r in pool.map(_score_n, items, chunksize=4) if r]
    lines = ["| groups | n | n = 70 (the default) | " + " | ".join(
        f"n = {n}: Δ ± SE (worst), below iso" for n in CLEAN_NS[1:]) + " |",
        "|---|---:|---:|" + "---:|" * (len(CLEAN_NS) - 1)]
    for group in [*sh.SHAPES, "dev x2", "dev x4", "check x2", "check x4"]:
        rs = [r for r in rows if r["group"] == group]
        cells = [f"{_diff([r[n] for r in rs], [r[70] for r in rs])}, "
                 f"{sum(r[n] < r['iso'] for r in rs)}" for n in CLEAN_NS[1:]]
        lines.append(f"| {group} | {len(rs)} | {np.mean([r[70] for r in rs]):.2f} "
                     f"(below iso {sum(r[70] < r['iso'] for r in rs)}) | "
                     + " | ".join(cells) + " |")
    return "\n".join([
        "# The restarts' clean-up n on kernels that are not Gaussians, and on Gaussians", "",
        f"`python bench/study_restart_shapes.py --clean-n` (module docstring). "
        f"{machine_line()}. `--restarts 4` of 1250 iterations: the shapes at seeds 0-2 (x2), "
        "the development set at seeds 0-2 and the check set at seed 0 (x2, x4); aligned kernel "
        "PSNR of the saved kernel with `restart_n_filtering` 70 (the default), and the paired "
        "change at 60 and 50.", "", *lines, ""])


OUT_CONF = sh.DATA / "restart_shapes_confidence.md"


def _score_conf(item: tuple[str, dict]) -> dict | None:
    """One group at 1250: the saved kernel's confidence, PSNR, principal variances and those
    of the true kernel, and the PSNR of the ``medoid`` combination rule (None if diverged)."""
    key, rec = item
    shape, stem, s = key.split("/")
    i = [p.stem for p in sh.images()].index(stem)
    seed, raws = int(s[1:]), rec["1250"]
    if any(k is None for k in raws):
        return None
    lr, gt = lr_of(shape, i), sh.shape_kernel(shape, i)
    seeds = [restart_seed(seed, r) for r in range(K)]
    res = api_result(raws, lr, seeds, 1250, False)
    medoid = api_result(raws, lr, seeds, 1250, False, rule="medoid")
    return {"shape": shape, "conf": res.confidence, "psnr": rc._psnr(res.kernel_x2, gt, 2),
            "medoid": rc._psnr(medoid.kernel_x2, gt, 2),
            "iso": rc._psnr(gaussian_kernel(13, 1.3), gt, 2),
            "saved": principal_axes(res.kernel_x2)[:2], "true": principal_axes(gt)[:2]}


def confidence_report(workers: int = 2) -> str:
    """Per shape, the groups in thirds by confidence: what the confident ones look like."""
    runs = json.loads(STORE.read_text())["runs"]
    with Pool(workers) as pool:
        rows = [r for r in pool.map(_score_conf, sorted(runs.items()), chunksize=2) if r]
    lines = ["| kernel | third by confidence | groups | confidence | PSNR | PSNR − σ 1.3 | "
             "elongation, saved / true (medians) | short-axis variance, saved / true "
             "(median ratio) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    rules = ["| kernel | groups | `mean` (the default) | `medoid`: Δ ± SE (worst) |",
             "|---|---:|---:|---:|"]
    for shape in sh.SHAPES:
        rs = sorted((r for r in rows if r["shape"] == shape), key=lambda r: r["conf"])
        cuts = [0, len(rs) // 3, 2 * len(rs) // 3, len(rs)]
        for j, name in enumerate(("lowest", "middle", "highest")):
            part = rs[cuts[j] : cuts[j + 1]]
            e_s = np.median([r["saved"][0] / r["saved"][1] for r in part])
            e_t = np.median([r["true"][0] / r["true"][1] for r in part])
            short = np.median([r["saved"][1] / r["true"][1] for r in part])
            lines.append(
                f"| {shape} | {name} | {len(part)} | {np.mean([r['conf'] for r in part]):.2f} | "
                f"{np.mean([r['psnr'] for r in part]):.2f} | "
                f"{np.mean([r['psnr'] - r['iso'] for r in part]):+.2f} | "
                f"{e_s:.1f} / {e_t:.1f} | {short:.1f} |")
        rules.append(f"| {shape} | {len(rs)} | {np.mean([r['psnr'] for r in rs]):.2f} | "
                     f"{_diff([r['medoid'] for r in rs], [r['psnr'] for r in rs])} |")
    return "\n".join([
        "# What the confidence sees on kernels that are not Gaussians", "",
        f"`python bench/study_restart_shapes.py --confidence` (module docstring). "
        f"{machine_line()}. The `--restarts 4` groups of `restart_shapes_study.md` (restarts of "
        "1250, seeds 0-2, x2), each shape's groups in thirds by the saved kernel's confidence; "
        "elongation = var_long / var_short of the second moments "
        "(`kgengine.kernel.principal_axes`).", "", *lines, "",
        "## The combination rule", "",
        "The same groups combined by `combine(rule=\"medoid\")` instead of the default mean, "
        "paired.", "", *rules, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", action="store_true", help="train the groups not stored yet")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clean-n", action="store_true",
                   help="the restarts' clean-up n at 60 and 50 (second table)")
    p.add_argument("--confidence", action="store_true",
                   help="what the confidence sees, and the medoid rule (third table)")
    a = p.parse_args(argv)
    if a.train:
        train(tuple(a.seeds))
        return 0
    make, out = ((confidence_report, OUT_CONF) if a.confidence else
                 (clean_n_report, OUT_N) if a.clean_n else (report, OUT))
    text = make(a.workers)
    save_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
