"""Study: sharp kernels, the regime of real photos, where the spectral fit sits at its floor.

Why. On 37 of 40 real photos taken as x2 LR images the spectrum's Gaussian fit has its smaller
variance at its floor, ``VAR_RANGE[0]`` = 0.2 px² (``bench/study_real.py``): the photos look
sharper than the fit can represent, the confidence is low by construction, and no true
kernel is known there. The development and check sets never reach that regime: their
kernels (DIV2KRK's recipe) have variances of 0.6-5 px² at x2. This study puts known sharp
kernels under the same photos, so that kgengine's kernels in that regime can be scored.

What. The 16 Urban100 photos (full size), each degraded x2 (8 bits) with an anisotropic
Gaussian whose two variances are drawn from U(0.2, 0.8) px² (σ 0.45-0.9 px) at a uniform
angle (seeded by the photo's index). One KernelGAN run per image and seed (seeds 0-2, 3000
iterations, kgengine's trainer), raw kernels kept in ``bench/data/sharp_kernels.json``
(resumable). Scored from them (aligned kernel PSNR, 17×17 canvas): the authors' clean-up
alone (n = 40), KernelGAN's finished kernel before the spectrum (clean-up and elongation
shrink: 0.9.3), that kernel width-calibrated (0.9.8's choice, no mix), the shipped 0.9.8
kernel, the spectrum's Gaussian alone, the shipped pipeline with the fit's floor lowered to
0.05 px², and two fixed isotropic Gaussians (σ = 1.3, the benchmark's reference, and
σ = 0.6, one of this set's width). Then the mix's area guard (``MAX_AREA_RATIO``, 2: the
spectrum's Gaussian is mixed in only where its area and KernelGAN's are within a factor 2)
at 3 and 4, on this set and, from the stored kernels of ``bench/study_spectral.py``, on the
development and check sets, clean and with noise or JPEG (``--restarts 4``). Why the
kernels come out wide: the authors' code on the first four images (``--authors``), the same
kernels under the photos halved first, and seed 0 trained again with one part of the
training changed (:data:`VARIANTS`). The same kernels at x4 (seeds 0-2, the LR image made
with their analytic x4 kernels) and with ``--restarts 4`` at x2 (seeds 0-2) are trained too,
for ``bench/study_release.py``.

Run: ``python bench/study_sharp.py --train`` (about 50 min on 2 cores, resumable), ``python
bench/study_sharp.py --authors /tmp/kg_ref`` (about 16 min), then ``python
bench/study_sharp.py`` (about 4 min) -> ``bench/data/sharp_study.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np

from kgengine import spectral
from kgengine.api import finish_kernel, finish_restarts
from kgengine.atomic import save_json, save_text
from kgengine.confidence import spectral_confidence
from kgengine.config import KernelGANConfig
from kgengine.degrade import degrade
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, anisotropic_gaussian, gaussian_kernel, principal_axes
from kgengine.release import released_prior
from kgengine.spectral import gaussian_of, mix_covariance, spectral_covariance
from kgengine.sysinfo import machine_line
from kgengine.width import choose_elongation

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_spectral as ss  # noqa: E402
import study_width as sw  # noqa: E402
from devset import HR_DIR  # noqa: E402
from study_elongation import truth  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
STORE = DATA / "sharp_kernels.json"
OUT = DATA / "sharp_study.md"
SEEDS = (0, 1, 2)
VAR = (0.2, 0.8)
#: the photos halved first (:func:`lr_image`): seeds, and the Gaussian that halves them
HALF_SEEDS = (0,)
HALF_SIGMA = 0.8
#: the x4 runs' tag in the training jobs (the same kernels at x4, seeds :data:`SEEDS`)
X4 = "x4"
#: the ``--restarts 4`` runs' tag (x2, seeds :data:`SEEDS`; kept: the saved kernel and the
#: restarts' finished kernels, from which the API's combination is derived again)
R4 = "r4"
#: training variants (seed 0): what in KernelGAN's training could hold the width up
VARIANTS = {"no bicubic prior (`lambda_bicubic=0`)": {"lambda_bicubic": 0.0},
            "defect 1 fixed (`authors_bicubic_rgb_sum=false`)": {"authors_bicubic_rgb_sum": False},
            "no noise on D's inputs (`noise_std=0`)": {"noise_std": 0.0}}


def images() -> list[Path]:
    return sorted(HR_DIR.glob("urban_*.png"))


def true_kernel(index: int) -> np.ndarray:
    """The (13, 13) sharp x2 kernel of photo number ``index`` (module docstring)."""
    rng = np.random.default_rng([7, index])
    v = np.sort(rng.uniform(*VAR, size=2))
    return anisotropic_gaussian(13, v[1], v[0], rng.uniform(0, np.pi))


def lr_image(index: int, path: Path, half: bool = False, scale: int = 2) -> np.ndarray:
    """The photo degraded x2 by its sharp kernel (x4: by its analytic x4, the kernel applied
    at each of two halvings), 8 bits, float32; ``half``: the photo halved first (a Gaussian
    of σ = 0.8 px, every other pixel), so that its own softness is a quarter of what it was
    in pixels, plus the small Gaussian's."""
    hr = read_image(path)
    if half:
        hr = degrade(hr, gaussian_kernel(13, HALF_SIGMA), 2)
    k = true_kernel(index)
    lr = degrade(hr, analytic_x4(k) if scale == 4 else k, scale)
    return (np.round(np.clip(lr, 0, 1) * 255) / 255).astype(np.float32)


def train(batch: int = 8) -> None:
    """One run of every (image, seed) not stored yet, ``batch`` at a time."""
    from kgengine.api import estimate_kernels

    store = json.loads(STORE.read_text()) if STORE.exists() else {"runs": {}}
    jobs = [(i, p, s, False, "") for i, p in enumerate(images()) for s in SEEDS]
    jobs += [(i, p, s, False, X4) for i, p in enumerate(images()) for s in SEEDS]
    jobs += [(i, p, s, False, R4) for i, p in enumerate(images()) for s in SEEDS]
    jobs += [(i, p, s, True, "") for i, p in enumerate(images()) for s in HALF_SEEDS]
    jobs += [(i, p, 0, False, v) for v in VARIANTS for i, p in enumerate(images())]
    todo = [j for j in jobs if _key(j[1], j[2], j[3], j[4]) not in store["runs"]]
    # one config per batch: chunks of each variant's jobs
    chunks = [group[k : k + (batch // 4 if v == R4 else batch)] for v in ("", X4, R4, *VARIANTS)
              for group in [[j for j in todo if j[4] == v]]
              for k in range(0, len(group), batch // 4 if v == R4 else batch)]
    for chunk in chunks:
        res = estimate_kernels([lr_image(i, p, h, 4 if v == X4 else 2)
                                for i, p, _, h, v in chunk],
                               seeds=[j[2] for j in chunk], names=[f"im{n}" for n in
                                                                   range(len(chunk))],
                               config=KernelGANConfig(**VARIANTS.get(chunk[0][4], {})),
                               x4=chunk[0][4] == X4, restarts=4 if chunk[0][4] == R4 else 1,
                               device="cpu", on_diverge="return")
        for (_, p, s, h, v), r in zip(chunk, res, strict=True):
            store["runs"][_key(p, s, h, v)] = (None if isinstance(r, Exception) else {
                "saved": r.kernel_x2.tolist(), "finished": r.report["restarts"]["kernels"]}
                if v == R4 else {"raw": r.raw_kernel.tolist(), "saved": r.kernel_x2.tolist()})
        store["note"] = ("raw and saved x2 kernels (one run, 3000 iterations, kgengine 0.9.9 "
                         "defaults; x4/: the same at x4) of bench/study_sharp.py's images; r4/: "
                         "--restarts 4 with 0.9.10's defaults, the saved kernel and the "
                         "restarts' finished kernels")
        save_json(STORE, store)
        print(f"{len(store['runs'])} of {len(jobs)} stored", flush=True)


def run_reference(baseline: Path, n_images: int, workers: int = 2) -> None:
    """The authors' code (``bench/run_authors.py``'s runner) on the first ``n_images`` sharp
    images, seed 0, 3000 iterations, ``workers`` at a time; kept in the store's
    ``authors`` (resumable: one image is saved as soon as it is done)."""
    import tempfile
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image
    from run_authors import run_one

    lock = threading.Lock()
    done = json.loads(STORE.read_text()).get("authors", {})
    todo = [(i, p) for i, p in enumerate(images()[:n_images]) if p.stem not in done]

    def one(png: Path) -> None:
        record = run_one(baseline, png, 2, 0, 3000)
        with lock:
            store = json.loads(STORE.read_text())
            store.setdefault("authors", {})[png.stem] = record
            save_json(STORE, store)
            print(f"authors' code: {png.stem} done in {record['seconds']} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        pngs = []
        for i, p in todo:  # here, not in the threads: Numba's workqueue is not thread-safe
            pngs.append(Path(tmp) / f"{p.stem}.png")
            Image.fromarray(np.round(lr_image(i, p) * 255).astype(np.uint8)).save(pngs[-1])
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, pngs))


def _key(path: Path, seed: int, half: bool = False, variant: str = "") -> str:
    if variant in (X4, R4):
        return f"{path.stem}/{variant}/s{seed}"
    tag = f"variant {list(VARIANTS).index(variant)}/" if variant else ""
    return f"{path.stem}/{'half/' if half else ''}{tag}s{seed}"


COLUMNS = [("authors", "authors' clean-up (n = 40)"), ("finished", "finished, no spectrum"),
           ("calibrated", "calibrated, no mix"), ("shipped", "**0.9.8 (shipped)**"),
           ("released", "0.9.10 (the pull released)"),
           ("g", "spectrum's Gaussian"), ("floor05", "shipped, floor 0.05 px²"),
           ("iso13", "isotropic σ = 1.3"), ("iso06", "isotropic σ = 0.6")]


def shipped(raw: np.ndarray, gray: np.ndarray, cfg: KernelGANConfig) -> tuple[dict, dict]:
    """0.9.8's steps for one run (:func:`kgengine.api._image_result`; 0.9.9 saves the same):
    kernels by column (without the fixed ones; "released": 0.9.10's, the calibration's pull
    released where the spectrum looks sharp) and facts (the fit's floor, the calibration's
    factor)."""
    k2, finished, _ = finish_restarts([raw], cfg.clean_n(1), "mean", 1, cfg.elongation_power)
    fit, _ = choose_elongation(gray, k2, finished[0], 2, cfg.width_prior, refine=cfg.width_refine)
    cov = spectral_covariance(gray, 2)
    out, info = mix_covariance(fit.kernel, cov, cfg.spectral_mix)
    rel, _ = choose_elongation(gray, k2, finished[0], 2, released_prior(cfg.width_prior, cov),
                               refine=cfg.width_refine)
    ks = {"authors": finish_kernel(raw, 40), "finished": k2, "calibrated": fit.kernel,
          "shipped": out, "g": gaussian_of(cov),
          "released": mix_covariance(rel.kernel, cov, cfg.spectral_mix)[0]}
    return ks, {"at_floor": info["at_floor"], "scale": fit.scale, "mixed": info["mixed"],
                "cov": cov}


def _area(k: np.ndarray) -> float:
    v1, v2, _ = principal_axes(k)
    return float(np.sqrt(v1 * v2))


def score() -> tuple[dict[str, np.ndarray], dict[str, list], list[str]]:
    """Per column the PSNR of every stored run; facts per run; the run keys."""
    runs = json.loads(STORE.read_text())["runs"]
    cfg = KernelGANConfig()
    iso = {"iso13": gaussian_kernel(13, 1.3), "iso06": gaussian_kernel(13, 0.6)}
    psnr: dict[str, list[float]] = {c: [] for c, _ in COLUMNS}
    facts: dict[str, list] = {"at_floor": [], "scale": [], "mixed": [], "log_area": [],
                              "image": [], "confidence": []}
    keys = []
    for i, p in enumerate(images()):
        truth, gray = true_kernel(i), lr_image(i, p).mean(axis=2)
        for seed in SEEDS:
            run = runs.get(f"{p.stem}/s{seed}")
            if run is None:
                continue
            ks, f = shipped(np.asarray(run["raw"]), gray, cfg)
            # the derivation is the API's: the kernel it saved, to rounding
            assert np.abs(ks["shipped"] - np.asarray(run["saved"])).max() < 1e-12, p.stem
            with mock.patch.object(spectral, "VAR_RANGE", (0.05, spectral.VAR_RANGE[1])):
                ks["floor05"] = shipped(np.asarray(run["raw"]), gray, cfg)[0]["shipped"]
            for c, _ in COLUMNS:
                psnr[c].append(rc._psnr(ks.get(c, iso.get(c)), truth, 2))
            for name in ("at_floor", "scale", "mixed"):
                facts[name].append(f[name])
            facts["log_area"].append({c: np.log(_area(ks[c]) / _area(truth))
                                      for c in ("finished", "calibrated", "shipped", "released",
                                                "g", "floor05")})
            facts["image"].append(p.stem)
            facts["confidence"].append(spectral_confidence(ks["calibrated"], ks["g"],
                                                           ks["shipped"]))
            keys.append(f"{p.stem}/s{seed}")
    return {c: np.array(v) for c, v in psnr.items()}, facts, keys


def half_table() -> list[str]:
    """The photos as they are against the photos halved first (:func:`lr_image`), same
    kernels, seeds :data:`HALF_SEEDS`: median ln(area / true area) and mean PSNR."""
    runs = json.loads(STORE.read_text())["runs"]
    cfg = KernelGANConfig()
    cols = ("finished", "calibrated", "shipped", "g")
    lines = ["| photos | runs | " + " | ".join(f"ln(area / true), {c}" for c in cols)
             + " | PSNR, shipped | PSNR, σ = 0.6 |", "|---|---:|" + "---:|" * (len(cols) + 2)]
    for half, label in ((False, "as they are"), (True, "halved first")):
        areas: dict[str, list[float]] = {c: [] for c in cols}
        psnr, fixed = [], []
        for i, p in enumerate(images()):
            truth_k, gray = true_kernel(i), lr_image(i, p, half).mean(axis=2)
            for seed in HALF_SEEDS:
                run = runs.get(_key(p, seed, half))
                if run is None:
                    continue
                ks, _ = shipped(np.asarray(run["raw"]), gray, cfg)
                assert np.abs(ks["shipped"] - np.asarray(run["saved"])).max() < 1e-12, p.stem
                for c in cols:
                    areas[c].append(np.log(_area(ks[c]) / _area(truth_k)))
                psnr.append(rc._psnr(ks["shipped"], truth_k, 2))
                fixed.append(rc._psnr(gaussian_kernel(13, 0.6), truth_k, 2))
        lines.append(f"| {label} | {len(psnr)} | "
                     + " | ".join(f"{np.median(areas[c]):+.2f}" for c in cols)
                     + f" | {np.mean(psnr):.2f} | {np.mean(fixed):.2f} |")
    return lines


def authors_table() -> list[str]:
    """The authors' code against kgengine on the images it ran on (seed 0 of both)."""
    store = json.loads(STORE.read_text())
    ref = store.get("authors", {})
    cfg = KernelGANConfig()
    from study_stop import api_result

    rows: dict[str, list[tuple[float, float]]] = {"authors": [], "finished": [], "shipped": [],
                                                  "today": []}
    for i, p in enumerate(images()):
        if p.stem not in ref:
            continue
        truth_k, lr = true_kernel(i), lr_image(i, p)
        raw = np.asarray(store["runs"][_key(p, 0)]["raw"])
        ks, _ = shipped(raw, lr.mean(axis=2), cfg)
        ks["authors"] = np.asarray(ref[p.stem]["kernel"])
        ks["today"] = api_result([raw], lr, [0], 3000, False).kernel_x2
        for c in rows:
            rows[c].append((rc._psnr(ks[c], truth_k, 2),
                            float(np.log(_area(ks[c]) / _area(truth_k)))))
    if not rows["authors"]:
        return ["(not run: `python bench/study_sharp.py --authors BASELINE`)"]
    labels = {"authors": "the authors' code (their clean-up)", "finished": "kgengine, "
              "finished, no spectrum", "shipped": "kgengine 0.9.8 (shipped)",
              "today": "kgengine today (the API's post-processing of the same raw kernels)"}
    lines = ["| kernel | runs | mean aligned PSNR | median ln(area / true area) |",
             "|---|---:|---:|---:|"]
    for c, v in rows.items():
        a = np.array(v)
        lines.append(f"| {labels[c]} | {len(a)} | {a[:, 0].mean():.2f} | "
                     f"{np.median(a[:, 1]):+.2f} |")
    seconds = [r["seconds"] for r in ref.values()]
    lines += ["", "The authors' code: `SEED=0 ITERS=3000 THREADS=1 BASELINE_DIR=... "
              "../shared/baseline/run.sh IMG OUT` on each LR image (saved as an 8-bit PNG), "
              f"{np.mean(seconds):.0f} s per run on {ref[next(iter(ref))]['machine']}, "
              "2 runs at a time."]
    return lines


def variants_table() -> list[str]:
    """Seed 0 of the default training against each of :data:`VARIANTS`, same images."""
    runs = json.loads(STORE.read_text())["runs"]
    cfg = KernelGANConfig()
    lines = ["| training | runs | ln(area / true), finished | PSNR, finished | PSNR, saved |",
             "|---|---:|---:|---:|---:|"]
    for variant in ("", *VARIANTS):
        area, fin, saved = [], [], []
        for i, p in enumerate(images()):
            run = runs.get(_key(p, 0, variant=variant))
            if run is None:
                continue
            truth_k = true_kernel(i)
            ks, _ = shipped(np.asarray(run["raw"]), lr_image(i, p).mean(axis=2), cfg)
            assert np.abs(ks["shipped"] - np.asarray(run["saved"])).max() < 1e-12, p.stem
            area.append(np.log(_area(ks["finished"]) / _area(truth_k)))
            fin.append(rc._psnr(ks["finished"], truth_k, 2))
            saved.append(rc._psnr(ks["shipped"], truth_k, 2))
        if area:
            lines.append(f"| {variant or 'default'} | {len(area)} | {np.median(area):+.2f} | "
                         f"{np.mean(fin):.2f} | {np.mean(saved):.2f} |")
    return lines


GUARDS = (2.0, 3.0, 4.0)


def _guarded(kernels, ratio: float) -> list[float]:  # noqa: ANN001
    """PSNR of ``mix_covariance(k, cov)`` with the area guard at ``ratio``, per (k, cov,
    truth, scale) of ``kernels``."""
    with mock.patch.object(spectral, "MAX_AREA_RATIO", ratio):
        return [rc._psnr(mix_covariance(k, cov, ss.SHIPPED)[0], gt, sc)
                for k, cov, gt, sc in kernels]


def _benchmark_runs(setname: str, sc: int, how: str | None) -> list[tuple]:
    """(0.9.8's calibrated kernel, the fit, the truth, scale) of every ``--restarts 4`` run
    of a set at a scale, the fit and the calibration on the image as perturbed by ``how``."""
    saved = ss.saved_095("r4", setname, how, refine=True)
    fits: dict[str, np.ndarray | None] = {}
    out = []
    for (s, name, _), (k, _) in saved.items():
        if s == sc:
            if name not in fits:
                fits[name] = spectral_covariance(ss._image(setname, sc, name, how), sc)
            out.append((k, fits[name], truth(rc.SETS[setname][0], sc, name), sc))
    return out


def guard_table() -> list[str]:
    """Δ PSNR (± SE, paired) of the guard at 3 and 4 against 2, and the runs it changes."""
    cfg = KernelGANConfig()
    runs = json.loads(STORE.read_text())["runs"]
    sharp = []
    for i, p in enumerate(images()):
        gray = lr_image(i, p).mean(axis=2)
        for seed in SEEDS:
            ks, f = shipped(np.asarray(runs[f"{p.stem}/s{seed}"]["raw"]), gray, cfg)
            sharp.append((ks["calibrated"], f["cov"], true_kernel(i), 2))
    groups = [("this set (sharp), one run, x2", sharp)]
    for how in (None, *sw.PERTURBATIONS):
        for setname in rc.SETS:
            for sc in (2, 4):
                groups.append((f"{setname} x{sc}, {how or 'clean'}, `--restarts 4`",
                               _benchmark_runs(setname, sc, how)))
    lines = ["| runs | n | guard 3: Δ (runs changed) | guard 4: Δ (runs changed) |",
             "|---|---:|---:|---:|"]
    for label, kernels in groups:
        base = np.array(_guarded(kernels, GUARDS[0]))
        cells = []
        for ratio in GUARDS[1:]:
            d = np.array(_guarded(kernels, ratio)) - base
            cells.append(f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} "
                         f"({int((np.abs(d) > 1e-9).sum())})")
        lines.append(f"| {label} | {len(base)} | " + " | ".join(cells) + " |")
    return lines


def _seed_sd(values: np.ndarray, images_of: list[str]) -> float:
    """Mean over images of the SD over their seeds."""
    groups = [values[[j for j, n in enumerate(images_of) if n == name]] for name in
              dict.fromkeys(images_of)]
    return float(np.mean([g.std(ddof=1) for g in groups if len(g) > 1]))


def report() -> str:
    psnr, facts, keys = score()
    base, n = psnr["shipped"], len(keys)
    lines = ["| kernel | mean aligned PSNR | − shipped (± SE) | seed SD | below σ 1.3 / σ 0.6 "
             "| median ln(area / true area) |", "|---|---:|---:|---:|---:|---:|"]
    for c, label in COLUMNS:
        v = psnr[c]
        d = v - base
        diff = "–" if c == "shipped" else f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(n):.2f}"
        below = f"{(v < psnr['iso13']).sum()} / {(v < psnr['iso06']).sum()}"
        area = [a[c] for a in facts["log_area"]] if c in facts["log_area"][0] else None
        lines.append(f"| {label} | {v.mean():.2f} | {diff} | "
                     f"{_seed_sd(v, facts['image']):.2f} | {below} | "
                     f"{'–' if area is None else f'{np.median(area):+.2f}'} |")
    floor = np.array(facts["at_floor"], bool)
    from scipy.stats import spearmanr

    conf = np.array(facts["confidence"])
    rho = spearmanr(conf, base).statistic
    return "\n".join([
        "# Sharp kernels: the regime of real photos", "",
        f"`python bench/study_sharp.py` (module docstring). {machine_line()}. {n} runs "
        f"({len(set(facts['image']))} Urban100 photos × seeds {', '.join(map(str, SEEDS))}), "
        f"true kernels with variances U{VAR} px² at x2. Aligned kernel PSNR on a 17×17 canvas; "
        "the difference is paired per run; seed SD: mean over photos of the SD over seeds; "
        "area: sqrt(var_long · var_short) of the second moments.", "", *lines, "",
        f"- The spectral fit is at its floor (0.2 px²) on {floor.sum()} of {n} runs and mixed "
        f"in on {sum(facts['mixed'])}.",
        f"- The width calibration's factor: median {np.median(facts['scale']):.2f} "
        f"(quartiles {np.percentile(facts['scale'], 25):.2f}-"
        f"{np.percentile(facts['scale'], 75):.2f}).",
        f"- The confidence: median {np.median(conf):.2f} (the development set's one runs: "
        f"0.43), Spearman ρ with the shipped kernel's PSNR {rho:+.2f}; "
        f"`--min-confidence 0.5` keeps {(conf >= 0.5).sum()} of {n}.", "",
        "## The authors' code on the same images", "",
        "`python bench/study_sharp.py --authors BASELINE`: the reference on the first "
        "images, seed 0, scored like kgengine's kernels of the same images and seed.", "",
        *authors_table(), "",
        "## The photos' own softness", "",
        "The same kernels under the photos halved first (a Gaussian of σ = 0.8 px, then every "
        "other pixel: the photo's own blur, in pixels, a quarter of what it was plus that "
        f"Gaussian's), seed{'s' if len(HALF_SEEDS) > 1 else ''} "
        f"{', '.join(map(str, HALF_SEEDS))}. If KernelGAN finds the blur of the whole chain, "
        "photo included, its overestimate should shrink.", "", *half_table(), "",
        "## What in the training holds the width up", "",
        "Seed 0 of every photo trained again with one part of KernelGAN's training changed "
        "(the saved kernel's steps unchanged). Median ln(area / true area) of the finished "
        "kernel, mean aligned PSNR of the finished and the saved kernel.", "",
        *variants_table(), "",
        "## The mix's area guard", "",
        "Δ aligned kernel PSNR against the shipped guard (factor 2), paired per run, and the "
        "number of runs whose kernel changes. Noise σ = 1/255 and 3/255, JPEG q 90 and 75: "
        "the calibration and the fit read the perturbed image, KernelGAN was trained on the "
        "clean one (as in `bench/data/spectral_study.md`).", "", *guard_table(), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", action="store_true", help="train the runs not stored yet")
    p.add_argument("--authors", type=Path, default=None, metavar="BASELINE",
                   help="run the authors' code (built by ../shared/baseline/build.sh) on the "
                        "first --authors-images images, seed 0, and keep its kernels")
    p.add_argument("--authors-images", type=int, default=4)
    a = p.parse_args(argv)
    if a.train:
        train()
        return 0
    if a.authors is not None:
        run_reference(a.authors, a.authors_images)
        return 0
    text = report()
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
