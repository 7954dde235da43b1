"""Study: ``--stop auto`` against full runs, measured on the kernel kgengine saves (0.9.12).

Why. ``--stop auto`` (:mod:`kgengine.stopping`) was chosen in 0.4 with ``bench/bench_stop.py``
on the *finished* kernel (the clean-up only): x2, 20 development images × 3 seeds, mean
−0.001 dB against full runs, worst −0.18 dB, 39 % fewer iterations; x4 on one seed. Since then
the saved kernel goes through the width calibration, the elongation choice, the spectral mix
and the two releases (0.9.4-0.9.11), and it stayed off by default. This study measures the
rule again on the kernel that is saved today, at both scales, with 3 seeds, on the held-out
check set and on the sharp set, to decide whether one run can stop early by default.

What. Every run is trained once for the full 3000 iterations (batches of 8; batch invariance
makes them the bytes of single runs, and a run stopped at iteration t has exactly the full
run's kernel at t: ``tests/test_stopping.py``). Every 100 iterations the relative change of the
raw kernel is recorded (the trainer's own criterion, :func:`kgengine.stopping.kernel_change`),
and the raw kernel is kept at every iteration where one of the rules of :data:`RULES` stops,
and at 3000. Scoring runs the API's own post-processing (:func:`kgengine.api._image_result`)
on those raw kernels, so each rule's saved kernel, confidence and x4 kernel are exactly what
``estimate --stop`` with that rule would write. Runs: the development set (20 images, seeds
0-2, x2 and x4), the check set (12 images, seed 0, x2 and x4), the sharp set of
``bench/study_sharp.py`` (16 photos, seeds 0-2, x2). The stored full-length raw kernels are
checked against the one-run raw kernels stored earlier (``raw_onerun_<set>.json``,
``sharp_kernels.json``).

Run: ``python bench/study_stop.py --train`` (about 50 min on 2 cores, resumable, results in
``bench/data/stop_study.json``), then ``python bench/study_stop.py`` (about 4 min) ->
``bench/data/stop_study.md``; ``--derive`` writes ``bench/data/kgengine_v0912.json`` (the
development set's one-run kernels under the shipped rule, ``bench/bench_vs_authors.py``'s
format).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from kgengine.api import EstimateResult, _Final, _image_result
from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, gaussian_kernel
from kgengine.prepare import prepare_image
from kgengine.stopping import StopRule, kernel_change, stop_iteration
from kgengine.sysinfo import machine_line
from kgengine.trainer import BatchTrainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_release as sr  # noqa: E402
import study_restart_cleanup as rc  # noqa: E402
import study_sharp as sh  # noqa: E402
import study_width as sw  # noqa: E402
from study_elongation import truth  # noqa: E402

STORE = sw.DATA / "stop_study.json"
OUT = sw.DATA / "stop_study.md"
CHECK = 100
#: The rules compared (stop once the raw kernel's relative change per 100 iterations stayed
#: below tol for ``patience`` checks in a row, not before ``min_iters``); the first is the
#: shipped ``auto`` rule.
RULES = {f"tol {tol:g}, patience {pat}": StopRule(tol, pat, 1500)
         for tol, pat in ((5e-3, 2), (1e-2, 1), (1e-2, 2), (5e-3, 1), (5e-3, 3), (3e-3, 2),
                          (1e-3, 2))}
SHIPPED = "tol 0.005, patience 2"
SETS = ("dev", "check", "sharp")


def jobs(setname: str) -> list[tuple[str, int, str, int]]:
    """(set, scale, image, seed) of every run of a set."""
    if setname == "sharp":
        return [("sharp", 2, str(i), s) for i in range(len(sh.images())) for s in sh.SEEDS]
    return [(setname, sc, name, seed) for sc, name, seed in rc.jobs(setname)]


def lr_of(setname: str, sc: int, name: str) -> np.ndarray:
    """The LR image (H, W, 3) float32 in [0, 1], as the API reads it."""
    if setname == "sharp":
        return sh.lr_image(int(name), sh.images()[int(name)])
    return read_image(rc.SETS[setname][0] / f"lr_x{sc}" / f"{name}.png")


def truth_of(setname: str, sc: int, name: str) -> np.ndarray:
    if setname == "sharp":
        gt = sh.true_kernel(int(name))
        return analytic_x4(gt) if sc == 4 else gt
    return truth(rc.SETS[setname][0], sc, name)


def key_of(job: tuple[str, int, str, int]) -> str:
    setname, sc, name, seed = job
    return f"{setname}/x{sc}/{name}/s{seed}"


def train_batch(batch: list[tuple[str, int, str, int]], cfg: KernelGANConfig) -> dict[str, dict]:
    """Train ``batch`` for ``cfg.iters``; per run its checks' changes and the raw kernels at
    every rule's stopping iteration and at the end."""
    prepared = [prepare_image(lr_of(s, sc, n), cfg, n) for s, sc, n, _ in batch]
    trainer = BatchTrainer(prepared, [seed for *_, seed in batch], cfg)
    snaps: dict[int, np.ndarray] = {}

    def snapshot(done: int) -> None:
        if done % CHECK == 0:
            snaps[done] = trainer.final_kernels()

    t0 = time.perf_counter()
    trainer.run(cfg.iters, snapshot, every=CHECK)
    sec = (time.perf_counter() - t0) / len(batch)
    iters = sorted(snaps)
    out = {}
    for b, job in enumerate(batch):
        deltas = [None] + [float(kernel_change(snaps[t][b : b + 1], snaps[p][b : b + 1])[0])
                           for p, t in zip(iters, iters[1:], strict=False)]
        keep = {stop_iteration(iters, deltas, r, cfg.iters) for r in RULES.values()}
        keep.add(cfg.iters)
        out[key_of(job)] = {
            "iters": iters, "delta": deltas, "seconds_per_run": round(sec, 1),
            "raw": {str(t): (np.round(snaps[t][b], 12).tolist()
                             if np.isfinite(snaps[t][b]).all() else None) for t in sorted(keep)}}
    return out


def train(batch_size: int = 8) -> None:
    """Every run not stored yet, ``batch_size`` runs of one set and scale at a time."""
    cfg = KernelGANConfig()
    store = json.loads(STORE.read_text()) if STORE.exists() else {
        "note": "bench/study_stop.py --train: one run per (set, scale, image, seed), 3000 "
                "iterations; per check the raw kernel's relative change, raw kernels where a "
                "rule stops", "check": CHECK, "runs": {}}
    rc.ensure_devset()
    rc.ensure_checkset()
    for setname in SETS:
        todo = [j for j in jobs(setname) if key_of(j) not in store["runs"]]
        for sc in (2, 4):
            group = [j for j in todo if j[1] == sc]
            for k in range(0, len(group), batch_size):
                store["runs"].update(train_batch(group[k : k + batch_size], cfg))
                save_json(STORE, store)
                print(f"{len(store['runs'])} runs stored ({setname} x{sc})", flush=True)


def api_result(raws: list, lr: np.ndarray, seeds: list[int], t: int, x4: bool,
               cfg: KernelGANConfig | None = None, rule: str = "mean") -> EstimateResult:
    """What ``estimate`` saves for one image from the raw kernels ``raws`` (one per run: 1 for
    one run, K for ``--restarts K``, with their ``seeds``; the first is the image's seed)
    trained ``t`` iterations on LR image ``lr``: the API's own post-processing (with the
    defaults, or ``cfg``; the restarts combined by ``rule``)."""
    k = np.asarray(raws, np.float64)
    n = len(k)
    final = _Final(k, np.ones(n, bool), [{}] * n, list(seeds), [[torch.zeros(1)]] * n, [t] * n)
    return _image_result(final, list(range(n)), "image", lr, seeds[0], {}, x4,
                         cfg or KernelGANConfig(), rule)


def saved_at(job: tuple[str, int, str, int], raw: list | None, t: int
             ) -> tuple[np.ndarray, float | None] | None:
    """(the saved x2 kernel, its confidence) of a one run whose raw kernel at its stopping
    iteration ``t`` is ``raw``: the API's own post-processing. None where it diverged."""
    if raw is None:
        return None
    setname, sc, name, seed = job
    res = api_result([raw], lr_of(setname, sc, name), [seed], t, sc == 4)
    return res.kernel_x2, res.confidence


def _score_job(item: tuple[str, dict]) -> dict | None:
    key, rec = item
    setname, xs, name, s = key.split("/")
    job = (setname, int(xs[1:]), name, int(s[1:]))
    sc = job[1]
    gt = truth_of(setname, sc, name)
    full = KernelGANConfig().iters
    stops = {"full": full} | {r: stop_iteration(rec["iters"], rec["delta"], rule, full)
                              for r, rule in RULES.items()}
    out = {"key": key, "set": setname, "scale": sc, "image": name, "seed": job[3],
           "iso": rc._psnr(gaussian_kernel(13, 1.3), gt, sc), "t": stops, "psnr": {},
           "conf": {}}
    cache: dict[int, tuple[float, float | None] | None] = {}
    for rule, t in stops.items():
        if t not in cache:
            got = saved_at(job, rec["raw"][str(t)], t)
            cache[t] = None if got is None else (rc._psnr(got[0], gt, sc), got[1])
        if cache[t] is None:
            return None
        out["psnr"][rule], out["conf"][rule] = cache[t]
    return out


def scored(workers: int = 2) -> list[dict]:
    runs = json.loads(STORE.read_text())["runs"]
    with Pool(workers) as pool:
        return [r for r in pool.map(_score_job, sorted(runs.items()), chunksize=4) if r]


def check_raw() -> tuple[int, float]:
    """The full-length raw kernels against the one-run raw kernels stored before (the same
    trainer, seeds and images): (runs compared, the largest difference)."""
    runs = json.loads(STORE.read_text())["runs"]
    full = str(KernelGANConfig().iters)
    before = {f"{s}/{k}": v for s in ("dev", "check") for k, v in sw.stored_runs(s).items()}
    sharp = json.loads(sh.STORE.read_text())["runs"]
    for i, p in enumerate(sh.images()):
        for s in sh.SEEDS:
            r = sharp.get(f"{p.stem}/s{s}")
            if r is not None:
                before[f"sharp/x2/{i}/s{s}"] = r["raw"]
    n, worst = 0, 0.0
    for key, rec in runs.items():
        old, new = before.get(key), rec["raw"].get(full)
        if old is None or new is None:
            continue
        worst = max(worst, float(np.abs(np.asarray(old) - np.asarray(new)).max()))
        n += 1
    return n, worst


def tables(rows: list[dict]) -> list[str]:
    groups = [(f"{s} x{sc}", [r for r in rows if (r["set"], r["scale"]) == (s, sc)])
              for s in SETS for sc in (2, 4)]
    groups = [(label, g) for label, g in groups if g]
    lines = ["## Every rule against full runs", "",
             "Δ = aligned kernel PSNR of the saved kernel, stopped minus full run (± SE of the "
             "paired differences), the worst run's Δ, and the mean iterations used (of 3000).",
             "", "| rule | " + " | ".join(label for label, _ in groups) + " |",
             "|---|" + "---:|" * len(groups)]
    for rule in RULES:
        cells = []
        for _, g in groups:
            d = np.array([r["psnr"][rule] - r["psnr"]["full"] for r in g])
            t = np.mean([r["t"][rule] for r in g])
            cells.append(f"{sr._pm(d, 3)}, worst {d.min():+.2f}, {t:.0f} it")
        name = f"**{rule} (`auto`)**" if rule == SHIPPED else rule
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## The shipped rule (`auto`) against full runs", "",
              "Runs below the isotropic σ = 1.3 Gaussian; seed SD: mean over images of the "
              "SD over seeds 0-2 (as the README's tables); ρ: Spearman of the confidence "
              "with the PSNR.", "",
              "| runs | n | full | `auto` | Δ ± SE | worst | runs worse by > 0.5 dB | "
              "iterations (saved) | below iso | seed SD | ρ confidence |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, g in groups:
        full = np.array([r["psnr"]["full"] for r in g])
        auto = np.array([r["psnr"][SHIPPED] for r in g])
        iso = np.array([r["iso"] for r in g])
        t = np.mean([r["t"][SHIPPED] for r in g])
        sd = "–"  # the check set has one seed
        if g[0]["set"] != "check":
            sd = f"{sr._seed_sd(g, full):.2f} → {sr._seed_sd(g, auto):.2f}"
        rho = []
        for rule in ("full", SHIPPED):
            c = np.array([np.nan if r["conf"][rule] is None else r["conf"][rule] for r in g])
            p = np.array([r["psnr"][rule] for r in g])
            ok = np.isfinite(c)
            rho.append(f"{spearmanr(c[ok], p[ok])[0]:+.2f}")
        lines.append(f"| {label} | {len(g)} | {full.mean():.2f} | {auto.mean():.2f} | "
                     f"{sr._pm(auto - full, 3)} | {(auto - full).min():+.2f} | "
                     f"{int((auto - full < -0.5).sum())} | {t:.0f} ({1 - t / 3000:.0%}) | "
                     f"{int((full < iso).sum())} → {int((auto < iso).sum())} | {sd} | "
                     f"{rho[0]} → {rho[1]} |")
    return lines


def report(workers: int = 2) -> str:
    n, worst = check_raw()
    rows = scored(workers)
    sec = np.mean([r["seconds_per_run"] for r in json.loads(STORE.read_text())["runs"].values()])
    lines = ["# `--stop auto` on the saved kernel (0.9.12)", "",
             f"`python bench/study_stop.py` (module docstring). {machine_line()}. Aligned kernel "
             "PSNR on the canvases of `bench/bench_vs_authors.py` (17×17 at x2, 37×37 at x4). "
             f"{len(rows)} runs, trained for 3000 iterations in batches of 8 ({sec:.0f} s per "
             f"run); their raw kernels at 3000 equal the one-run raw kernels stored before on "
             f"{n} runs to {worst:.1e}. Every rule's kernel is the API's post-processing of the "
             "raw kernel at the rule's stopping iteration.", ""]
    return "\n".join(lines + tables(rows)) + "\n"


def derive() -> Path:
    """``kgengine_v0912.json``: the development set's one-run kernels under the shipped rule
    (x4: the analytic x4 kernel) and their confidences."""
    runs = json.loads(STORE.read_text())["runs"]
    full = KernelGANConfig().iters
    out = {}
    for key, rec in sorted(runs.items()):
        setname, xs, name, s = key.split("/")
        if setname != "dev":
            continue
        job = (setname, int(xs[1:]), name, int(s[1:]))
        t = stop_iteration(rec["iters"], rec["delta"], RULES[SHIPPED], full)
        got = saved_at(job, rec["raw"][str(t)], t)
        if got is None:
            continue
        out[f"{xs}/{name}/{s}"] = {
            "kernel": np.round(analytic_x4(got[0]) if job[1] == 4 else got[0], 9).tolist(),
            "confidence": got[1], "iters_used": t}
    path = sw.DATA / "kgengine_v0912.json"
    save_json(path, {"variant": "v0912", "config": KernelGANConfig().to_dict(), "runs": out,
                     "note": "derived by bench/study_stop.py --derive: 0.9.11's one run "
                             "stopped by the auto rule (stop=auto), from the stored raw kernels"})
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", action="store_true", help="train the runs not stored yet")
    p.add_argument("--derive", action="store_true", help="write kgengine_v0912.json")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.train:
        train()
        return 0
    if args.derive:
        print(derive())
        return 0
    text = report(args.workers)
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
