"""Study: the width calibration's pull released where the LR spectrum looks sharp (0.9.10).

Why. On sharp kernels, the regime of real photos, KernelGAN's kernels are 3-5× too wide in
area, the authors' and kgengine's alike (``bench/study_sharp.py``). The width calibration
(:mod:`kgengine.width`) could narrow them, but its pull toward no change (``width_prior``
λ = 0.3, chosen on the development set, whose kernels are 0.6-5 px² wide) holds them near
KernelGAN's width: with λ = 0 the sharp set gains about 3.8 dB, but the development and
check sets lose up to 3.6 dB where the LR image has noise. The spectrum's own Gaussian fit
(:func:`kgengine.spectral.spectral_covariance`) tells the two regimes apart fairly well
(its area sqrt(det Σ): median 0.67 px² on the sharp set, 2.7 on the others).

What. The saved kernel of every stored run, derived again with λ set per image by a rule
of that fit's area ``a`` (no training: the trainer is unchanged): λ = 0 everywhere, a step
(λ = 0 below 0.5 px²), and ramps ``λ · clip((a − a₀)/(a₁ − a₀), 0, 1)``; the shipped rule is
the ramp (0.4, 1.0) px² (:func:`kgengine.release.released_prior`). Runs: the development set
(20 images × seeds 0-2) and the held-out check set (12 images, seed 0), x2 and x4,
``--restarts 4`` (0.9.3's restarts) clean and with noise (σ = 1/255, 3/255) or JPEG (q 90,
75) in the image the calibration and the fit read (KernelGAN trained on the clean one, as in
``bench/study_width.py``), and one run clean; the sharp set of ``bench/study_sharp.py`` (16
Urban100 photos, variances U(0.2, 0.8) px², seeds 0-2) with one run at x2 and x4 and with
``--restarts 4`` at x2, clean and perturbed alike. The criterion's values come from the width
study's cache for the first two sets and are computed here for the sharp one.

On real photos no kernel is known; ``--real`` trains the 40 photos of ``../shared/data/hr``
taken as x2 LR images themselves (seed 0, one run, as ``bench/study_real.py``), and the
report says how much the release changes their kernels.

How it was chosen, honestly: the rules were compared on all of these runs at once (there is
no held-out set left); the table shows every rule tried.

Run: ``python bench/study_release.py --real`` (about 10 min, resumable), then ``python
bench/study_release.py`` (about 9 min, 2 processes) ->
``bench/data/release_study.md``; ``--derive`` writes ``bench/data/kgengine_v0910.json`` and
``kgengine_v0910r4.json`` (0.9.10's saved kernels and confidences of the development set, in
``bench/bench_vs_authors.py``'s format).
"""

from __future__ import annotations

import argparse
import json
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from kgengine.api import finish_restarts
from kgengine.atomic import save_json, save_text
from kgengine.confidence import spectral_confidence
from kgengine.config import KernelGANConfig
from kgengine.consensus import combine
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, gaussian_kernel, shrink_elongation
from kgengine.release import released_prior
from kgengine.spectral import gaussian_of, mix_covariance, spectral_covariance
from kgengine.sysinfo import machine_line
from kgengine.width import (
    ELONGATION_MARGIN,
    SCALES,
    calibrate_width,
    refine_scale,
    scale_kernel,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_real as real  # noqa: E402
import study_restart_cleanup as rc  # noqa: E402
import study_sharp as sh  # noqa: E402
import study_spectral as ss  # noqa: E402
import study_width as sw  # noqa: E402
from study_elongation import truth  # noqa: E402

OUT = sw.DATA / "release_study.md"
REAL_STORE = sw.DATA / "release_real.json"
HOWS = (None, *sw.PERTURBATIONS)
SHIPPED = "**ramp 0.4-1.0 (shipped)**"
#: The rules compared: name -> λ of a run from the fit's covariance (None: no fit).
RULES = {
    "full pull (0.9.9)": lambda cov: 0.3,
    "λ = 0": lambda cov: 0.0,
    "step at 0.5 px²": lambda cov: 0.3 if cov is None or _area_of(cov) >= 0.5 else 0.0,
    "ramp 0.4-0.8": lambda cov: released_prior(0.3, cov, (0.4, 0.8)),
    "ramp 0.3-0.8": lambda cov: released_prior(0.3, cov, (0.3, 0.8)),
    SHIPPED: lambda cov: released_prior(0.3, cov),
    "ramp 0.5-1.0": lambda cov: released_prior(0.3, cov, (0.5, 1.0)),
}


def _area_of(cov: np.ndarray) -> float:
    return float(np.sqrt(max(np.linalg.det(cov), 0.0)))


def benchmark_runs(kind: str, setname: str, how: str | None) -> list[dict]:
    """Every stored run of a set: the criterion's values without the prior for the shrunk
    (``ja``) and unshrunk (``jb``) kernel, both kernels, the fit, the truth, the Gaussian's
    PSNR (the width study's cache; ``how``: on the perturbed image)."""
    cache = json.loads(sw.CACHE.read_text())
    rows, robust = cache["rows"], cache.get("robust", {})
    shrunk, unshrunk = sw.finished(kind, setname), sw.finished(kind + "-keep", setname)
    fits: dict[tuple[int, str], np.ndarray | None] = {}
    out = []
    for (sc, name, seed), k in shrunk.items():
        key = f"{setname}/x{sc}/{name}/s{seed}"
        a, b = rows[f"{kind}/{key}"], rows[f"{kind}-keep/{key}"]
        if (sc, name) not in fits:
            fits[(sc, name)] = spectral_covariance(ss._image(setname, sc, name, how), sc)
        out.append({"ja": np.asarray(a["scores"] if how is None else robust[how][f"{kind}/{key}"]),
                    "jb": np.asarray(b["scores"] if how is None
                                     else robust[how][f"{kind}-keep/{key}"]),
                    "ks": k, "ku": unshrunk[(sc, name, seed)], "cov": fits[(sc, name)],
                    "gt": truth(rc.SETS[setname][0], sc, name), "scale": sc, "iso": a["iso"],
                    "image": name, "seed": seed})
    return out


def _sharp_job(job: tuple[int, int, str | None, str]) -> list[dict]:
    """The sharp set's runs of one photo at one scale (``kind`` "one" or "r4", x2 only), as
    :func:`benchmark_runs`."""
    index, sc, how, kind = job
    path = sh.images()[index]
    runs = json.loads(sh.STORE.read_text())["runs"]
    gt = sh.true_kernel(index)
    gt = analytic_x4(gt) if sc == 4 else gt
    gray = sh.lr_image(index, path, scale=sc).mean(axis=2)
    if how is not None:
        gray = sw.perturbed(gray, how, index)
    cov = spectral_covariance(gray, sc)
    iso = rc._psnr(gaussian_kernel(13, 1.3), gt, sc)
    cfg = KernelGANConfig()
    out = []
    tag = {("one", 2): "", ("one", 4): "x4/", ("r4", 2): "r4/"}[(kind, sc)]
    for seed in sh.SEEDS:
        run = runs.get(f"{path.stem}/{tag}s{seed}")
        if run is None:
            continue
        if kind == "r4":  # the API's combination of the restarts' finished kernels
            unshrunk = combine([np.asarray(k) for k in run["finished"]]).kernel
            k2 = shrink_elongation(unshrunk, cfg.elongation_power)
        else:
            k2, finished, _ = finish_restarts([np.asarray(run["raw"])], cfg.clean_n(1), "mean",
                                              1, cfg.elongation_power)
            unshrunk = finished[0]
        out.append({"ja": calibrate_width(gray, k2, sc, 0.0).scores,
                    "jb": calibrate_width(gray, unshrunk, sc, 0.0).scores,
                    "ks": k2, "ku": unshrunk, "cov": cov, "gt": gt, "scale": sc, "iso": iso,
                    "image": path.stem, "seed": seed, "kind": kind,
                    "saved_kernel": None if how else np.asarray(run["saved"])})
    return out


def sharp_runs(how: str | None, workers: int = 2) -> list[dict]:
    jobs = [(i, sc, how, kind) for kind, sc in (("one", 2), ("one", 4), ("r4", 2))
            for i in range(len(sh.images()))]
    with Pool(workers) as pool:
        return [r for rs in pool.map(_sharp_job, jobs) for r in rs]


def saved(run: dict, prior: float) -> tuple[np.ndarray, float]:
    """(the saved x2 kernel, its confidence) of a run with the calibration's pull ``prior``:
    the API's steps (:func:`kgengine.api._image_result`) from the criterion's values."""
    w = prior * np.log2(SCALES) ** 2
    ja, jb = run["ja"] + w, run["jb"] + w
    keep = jb.min() + ELONGATION_MARGIN < ja.min()
    j, base = (jb, run["ku"]) if keep else (ja, run["ks"])
    k = scale_kernel(base, refine_scale(j))
    out = mix_covariance(k, run["cov"], ss.SHIPPED)[0]
    if run["cov"] is None:
        return out, float("nan")
    return out, spectral_confidence(k, gaussian_of(run["cov"]), out)


def score(runs: list[dict]) -> dict[str, np.ndarray]:
    """PSNR of every run under every rule (and, for the shipped rule, confidence and
    ln(area / true area) of the x2 kernel)."""
    out: dict[str, list[float]] = {}
    for run in runs:
        for name, rule in RULES.items():
            k, conf = saved(run, rule(run["cov"]))
            out.setdefault(name, []).append(rc._psnr(k, run["gt"], run["scale"]))
            if name == SHIPPED:
                out.setdefault("confidence", []).append(conf)
                out.setdefault("lambda", []).append(rule(run["cov"]))
            if name in (SHIPPED, "full pull (0.9.9)") and run["scale"] == 2:
                ratio = sh._area(k) / sh._area(run["gt"])
                out.setdefault(f"log_area {name}", []).append(np.log(ratio))
        out.setdefault("iso", []).append(run["iso"])
    return {k: np.asarray(v) for k, v in out.items()}


def groups(workers: int = 2) -> list[tuple[str, list[dict]]]:
    """(label, runs) of every group of the tables."""
    out = []
    for how in HOWS:
        runs = sharp_runs(how, workers)
        for kind, sc, label in (("one", 2, "one run"), ("one", 4, "one run"),
                                ("r4", 2, "`--restarts 4`")):
            group = [r for r in runs if (r["kind"], r["scale"]) == (kind, sc)]
            if group:
                out.append((f"sharp x{sc}, {how or 'clean'}, {label}", group))
    for kind, label in (("r4", "`--restarts 4`"), ("one", "one run")):
        for setname in rc.SETS:
            for how in HOWS if kind == "r4" else (None,):
                runs = benchmark_runs(kind, setname, how)
                for sc in (2, 4):
                    out.append((f"{setname} x{sc}, {how or 'clean'}, {label}",
                                [r for r in runs if r["scale"] == sc]))
    return out


def _pm(d: np.ndarray, digits: int = 2) -> str:
    """Mean ± its standard error, with ``digits`` decimals."""
    return f"{d.mean():+.{digits}f} ± {d.std(ddof=1) / np.sqrt(len(d)):.{digits}f}"


def _seed_sd(runs: list[dict], values: np.ndarray) -> float:
    return ss._seed_sd({(r["image"], r["seed"]): v for r, v in zip(runs, values, strict=True)})


def tables(scored: list[tuple[str, list[dict], dict[str, np.ndarray]]]) -> list[str]:
    rules = [r for r in RULES if r != "full pull (0.9.9)"]
    lines = ["## Every rule tried", "",
             "Δ aligned kernel PSNR against the full pull (0.9.9), ± SE of the paired "
             "differences, and (runs below the isotropic σ = 1.3 Gaussian).", "",
             "| runs | n | 0.9.9 (below iso) | " + " | ".join(rules) + " |",
             "|---|---:|---:|" + "---:|" * len(rules)]
    for label, _, s in scored:
        base, iso = s["full pull (0.9.9)"], s["iso"]
        cells = [f"{_pm(s[r] - base)} ({int((s[r] < iso).sum())})" for r in rules]
        lines.append(f"| {label} | {len(base)} | {base.mean():.2f} ({int((base < iso).sum())}) | "
                     + " | ".join(cells) + " |")
    lines += ["", "## The shipped rule against 0.9.9", "",
              "Runs changed: λ' < λ. Seed SD: mean over images of the SD over seeds 0-2 "
              "(the check set has one seed). ρ: Spearman of the confidence with the PSNR. "
              "ln area: median ln(area / true area) of the x2 kernel (x2 rows).", "",
              "| runs | n | runs changed | 0.9.9 | 0.9.10 | Δ ± SE | below iso | seed SD | "
              "ρ confidence | ln area |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, runs, s in scored:
        if ", clean," not in label:
            continue
        base, new, iso = s["full pull (0.9.9)"], s[SHIPPED], s["iso"]
        sd = "–"
        if not label.startswith("check"):
            sd = f"{_seed_sd(runs, base):.2f} → {_seed_sd(runs, new):.2f}"
        ok = np.isfinite(s["confidence"])
        rho = spearmanr(s["confidence"][ok], new[ok])[0]
        area = "–"
        if f"log_area {SHIPPED}" in s:
            area = (f"{np.median(s['log_area full pull (0.9.9)']):+.2f} → "
                    f"{np.median(s[f'log_area {SHIPPED}']):+.2f}")
        lines.append(f"| {label} | {len(new)} | {int((s['lambda'] < 0.3).sum())} | "
                     f"{base.mean():.2f} | {new.mean():.2f} | {_pm(new - base)} | "
                     f"{int((base < iso).sum())} → {int((new < iso).sum())} | {sd} | "
                     f"{rho:+.2f} | {area} |")
    return lines


def check_derivation(runs: list[dict]) -> int:
    """The derivation here reproduces the kernels the API saved to 1e-12: 0.9.9's (the full
    pull) of the one runs, 0.9.10's (released) of the restarts; returns the runs checked."""
    n = 0
    for r in runs:
        if r.get("saved_kernel") is not None:
            prior = released_prior(0.3, r["cov"]) if r["kind"] == "r4" else 0.3
            k, _ = saved(r, prior)
            assert np.abs(k - r["saved_kernel"]).max() < 1e-12, (r["image"], r["seed"])
            n += 1
    return n


def train_real(batch: int = 8) -> None:
    """One run (seed 0) of every real photo not stored yet: its raw and saved x2 kernels."""
    from kgengine.api import estimate_kernels

    store = json.loads(REAL_STORE.read_text()) if REAL_STORE.exists() else {"runs": {}}
    todo = [p for p in real.photos() if p.stem not in store["runs"]]
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        res = estimate_kernels([str(p) for p in chunk], seeds=[0] * len(chunk), device="cpu",
                               on_diverge="return")
        for p, r in zip(chunk, res, strict=True):
            store["runs"][p.stem] = None if isinstance(r, Exception) else {
                "raw": r.raw_kernel.tolist(), "saved": r.kernel_x2.tolist()}
        store["note"] = ("raw and saved x2 kernels (one run, seed 0, 3000 iterations, kgengine "
                         "0.9.10 defaults) of the photos of ../shared/data/hr as LR images")
        save_json(REAL_STORE, store)
        print(f"{len(store['runs'])} of {len(real.photos())} stored", flush=True)


def real_table() -> list[str]:
    """How the release changes the kernels of real photos (no truth: widths only)."""
    runs = json.loads(REAL_STORE.read_text())["runs"] if REAL_STORE.exists() else {}
    cfg = KernelGANConfig()
    rows = []
    for p in real.photos():
        run = runs.get(p.stem)
        if run is None:
            continue
        gray = read_image(p).mean(axis=2)
        k2, finished, _ = finish_restarts([np.asarray(run["raw"])], cfg.clean_n(1), "mean", 1,
                                          cfg.elongation_power)
        r = {"ja": calibrate_width(gray, k2, 2, 0.0).scores,
             "jb": calibrate_width(gray, finished[0], 2, 0.0).scores, "ks": k2,
             "ku": finished[0], "cov": spectral_covariance(gray, 2)}
        lam = released_prior(cfg.width_prior, r["cov"])
        new, old = saved(r, lam)[0], saved(r, cfg.width_prior)[0]
        assert np.abs(new - np.asarray(run["saved"])).max() < 1e-12, p.stem  # the API's
        rows.append((p.stem, lam, np.sqrt(sh._area(old)), np.sqrt(sh._area(new)),
                     _area_of(r["cov"]) if r["cov"] is not None else np.nan))
    if not rows:
        return []
    lam, w_old, w_new, fit = (np.array([r[i] for r in rows]) for i in range(1, 5))
    kodak = np.array([r[0].startswith("kodim") for r in rows])
    lines = ["## Real photos (no true kernel)", "",
             f"The {len(rows)} photos of `../shared/data/hr` taken as x2 LR images, one run at "
             "seed 0 (`--real`; the derivation here reproduces the API's saved kernels to "
             "1e-12). Width: sqrt(sqrt(var_long · var_short)) of the saved kernel, px; the fit's "
             "area: sqrt(det Σ) of the spectrum's Gaussian, px².", "",
             "| photos | n | λ' < λ | λ' = 0 | the fit's area, median | width 0.9.9 → 0.9.10, "
             "median | width ratio, median (quartiles) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, m in (("all", np.ones(len(rows), bool)), ("Kodak (film scans)", kodak),
                     ("Urban100", ~kodak)):
        ratio = w_new[m] / w_old[m]
        q1, q2, q3 = np.percentile(ratio, [25, 50, 75])
        lines.append(f"| {label} | {int(m.sum())} | {int((lam[m] < 0.3).sum())} | "
                     f"{int((lam[m] == 0).sum())} | {np.nanmedian(fit[m]):.2f} | "
                     f"{np.median(w_old[m]):.2f} → {np.median(w_new[m]):.2f} | "
                     f"{q2:.2f} ({q1:.2f}-{q3:.2f}) |")
    return lines


def report(workers: int = 2) -> str:
    gs = groups(workers)
    checked = sum(check_derivation(runs) for _, runs in gs)
    scored = [(label, runs, score(runs)) for label, runs in gs]
    lines = ["# The width calibration's pull released on sharp spectra (0.9.10)", "",
             f"`python bench/study_release.py` (module docstring). {machine_line()}. Aligned "
             "kernel PSNR on the canvases of `bench/bench_vs_authors.py` (17×17 at x2, 37×37 at "
             "x4). The derivation here reproduces the API's saved kernels to 1e-12 on "
             f"{checked} stored sharp runs (0.9.9's of the one runs, 0.9.10's of the restarts).",
             ""]
    lines += tables(scored) + [""] + real_table()
    return "\n".join(lines) + "\n"


def derive() -> list[Path]:
    """``kgengine_v0910.json`` / ``kgengine_v0910r4.json``: the development set's kernels as
    0.9.10 saves them (x4: the analytic x4 kernel) and their confidences."""
    cfg = KernelGANConfig()
    paths = []
    for kind, name in (("one", "v0910"), ("r4", "v0910r4")):
        runs = {}
        for r in benchmark_runs(kind, "dev", None):
            k2, conf = saved(r, released_prior(cfg.width_prior, r["cov"]))
            runs[f"x{r['scale']}/{r['image']}/s{r['seed']}"] = {
                "kernel": np.round(analytic_x4(k2) if r["scale"] == 4 else k2, 9).tolist(),
                "confidence": conf}
        path = sw.DATA / f"kgengine_{name}.json"
        save_json(path, {"variant": name, "config": cfg.to_dict(), "runs": runs,
                         "note": "derived by bench/study_release.py --derive from the width "
                                 "study's kernels (0.9.10: 0.9.8's with the calibration's pull "
                                 "released where the LR spectrum looks sharp)"})
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--derive", action="store_true", help="write kgengine_v0910[r4].json")
    p.add_argument("--real", action="store_true", help="train the real photos not stored yet")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.real:
        train_real()
        return 0
    if args.derive:
        for path in derive():
            print(path)
        return 0
    text = report(args.workers)
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
