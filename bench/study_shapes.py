"""Study: kernels that are not Gaussians (defocus discs, motion, lens halos).

Why. Every kernel of the development and check sets is a Gaussian, the family of the
spectrum's closed-form fit (:mod:`kgengine.spectral`) that 0.9.6 mixes into the saved kernel,
and on those sets KernelGAN's shape adds little once the fit is mixed in
(``bench/study_contribution.py``). The case for training is kernels of other shapes. 0.9.6's
first check (``bench/study_spectral.py --shapes``: 6 images, one disc and one segment) was
small; this is the larger one.

What. The 16 Urban100 photos (central 512×512 crop), each degraded x2 (8 bits) with three
kernels drawn per image (seeded by the image's index):

- ``disc``: a uniform disc of radius U(1.5, 2.8) HR px (defocus);
- ``motion``: a segment of length U(4, 9) px at an angle U(0°, 180°), 1 px wide, blurred by a
  Gaussian of σ = 0.5 px (camera shake);
- ``halo``: 0.7 · a Gaussian of σ U(0.7, 1.2) + 0.3 · one of σ U(2, 3) (a lens's soft halo).

One KernelGAN run per image (seed 0, 3000 iterations, kgengine's trainer), raw kernels kept
in ``bench/data/shapes_kernels.json`` (resumable). Scored from them (aligned kernel PSNR,
17×17 canvas): the authors' clean-up alone (n = 40, no shrink, no calibration), 0.9.5's kernel
(``spectral_mix=0``), 0.9.6/0.9.7's (mixed), the training-free estimate of
``bench/study_contribution.py`` (λ = 0), the spectrum's Gaussian alone, the isotropic σ = 1.3
Gaussian.

``--stop auto`` (0.9.12's default, measured on Gaussian kernels only in
``bench/study_stop.py``) on these shapes: ``--train-auto`` trains the same runs again with
the default :class:`~kgengine.stopping.StopRule` (raw kernels and the iteration each stopped
at in ``bench/data/shapes_kernels_auto.json``), and the report compares the kernel that
``estimate`` saves today (the API's own post-processing, :func:`kgengine.api._image_result`)
after a full run and after the stopped one.

Run: ``python bench/study_shapes.py --train`` (about 8 min), ``--train-auto`` (about 6 min),
then ``python bench/study_shapes.py`` -> ``bench/data/shapes_study.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.degrade import degrade
from kgengine.imageio import read_image
from kgengine.kernel import gaussian_kernel, shrink_elongation
from kgengine.spectral import gaussian_of, mix_covariance, spectral_covariance
from kgengine.sysinfo import machine_line
from kgengine.width import calibrate_width, choose_elongation

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
from devset import HR_DIR  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
STORE = DATA / "shapes_kernels.json"
STORE_AUTO = DATA / "shapes_kernels_auto.json"
OUT = DATA / "shapes_study.md"
SHAPES = ("disc", "motion", "halo")
SIZE, OVERSAMPLE, CROP = 13, 8, 512


def images() -> list[Path]:
    return sorted(HR_DIR.glob("urban_*.png"))


def _area_sampled(inside) -> np.ndarray:
    """(SIZE, SIZE) kernel, sum 1: the fraction of each pixel where ``inside(y, x)`` (HR px
    from the centre), sampled OVERSAMPLE² times per pixel."""
    n = SIZE * OVERSAMPLE
    y, x = (np.mgrid[0:n, 0:n] - (n - 1) / 2) / OVERSAMPLE
    k = inside(y, x).astype(float).reshape(SIZE, OVERSAMPLE, SIZE, OVERSAMPLE).sum(axis=(1, 3))
    return k / k.sum()


def shape_kernel(shape: str, index: int) -> np.ndarray:
    """The (13, 13) x2 kernel of ``shape`` for image number ``index`` (module docstring)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng([SHAPES.index(shape), index])
    if shape == "disc":
        r = rng.uniform(1.5, 2.8)
        return _area_sampled(lambda y, x: np.hypot(y, x) <= r)
    if shape == "motion":
        length, t = rng.uniform(4, 9), np.deg2rad(rng.uniform(0, 180))
        seg = _area_sampled(lambda y, x: (np.abs(x * np.cos(t) - y * np.sin(t)) <= length / 2)
                            & (np.abs(x * np.sin(t) + y * np.cos(t)) <= 0.5))
        k = gaussian_filter(seg, 0.5, mode="constant")
        return k / k.sum()
    s1, s2 = rng.uniform(0.7, 1.2), rng.uniform(2.0, 3.0)
    k = 0.7 * gaussian_kernel(SIZE, s1) + 0.3 * gaussian_kernel(SIZE, s2)
    return k / k.sum()


def hr_crop(path: Path) -> np.ndarray:
    """The photo's central CROP² (the HR image of every shape's LR image), float32."""
    hr = read_image(path)
    top, left = ((n - CROP) // 2 for n in hr.shape[:2])
    return hr[top : top + CROP, left : left + CROP]


def lr_image(shape: str, index: int, path: Path) -> np.ndarray:
    """The central CROP² of the photo degraded x2 by the shape's kernel, 8 bits, float32."""
    lr = degrade(hr_crop(path), shape_kernel(shape, index), 2)
    return (np.round(np.clip(lr, 0, 1) * 255) / 255).astype(np.float32)


def train(batch: int = 8, stop: str = "full") -> None:
    """One run (seed 0) of every (shape, image) not stored yet, ``batch`` at a time, with
    every iteration (:data:`STORE`) or stopped by the default rule (:data:`STORE_AUTO`:
    the raw kernel and the iteration it comes from)."""
    from kgengine.api import estimate_kernels

    path = STORE if stop == "full" else STORE_AUTO
    store = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    todo = [(s, i, p) for s in SHAPES for i, p in enumerate(images())
            if f"{s}/{p.stem}" not in store["runs"]]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        res = estimate_kernels([lr_image(s, i, p) for s, i, p in chunk], seeds=[0] * len(chunk),
                               names=[f"{s}_{p.stem}" for s, _, p in chunk], device="cpu",
                               on_diverge="return", stop=stop)
        for (s, _, p), r in zip(chunk, res, strict=True):
            raw = None if isinstance(r, Exception) else np.round(r.raw_kernel, 12).tolist()
            store["runs"][f"{s}/{p.stem}"] = (raw if stop == "full" or raw is None else
                                              {"raw": raw, "iters_used": r.report["iters_used"]})
        store["note"] = ("raw KernelGAN kernels (one run, seed 0, 3000 iterations) of "
                         "bench/study_shapes.py's images" if stop == "full" else
                         "raw KernelGAN kernels (one run, seed 0, stopped by the default "
                         "--stop auto rule) of bench/study_shapes.py's images, with the "
                         "iteration each comes from")
        save_json(path, store)
        print(f"{len(store['runs'])} of {len(SHAPES) * len(images())} stored", flush=True)


COLUMNS = [("authors", "authors' clean-up (n = 40) only"), ("v095", "0.9.5 (no mix)"),
           ("shipped", "**0.9.6/0.9.7**"), ("free", "no training (λ = 0)"),
           ("g", "spectrum's Gaussian alone"), ("iso", "isotropic σ = 1.3")]


def kernels_of(raw: np.ndarray, lr: np.ndarray) -> dict[str, np.ndarray]:
    """Every scored kernel of one run, from its raw kernel and LR image."""
    from kgengine.api import finish_kernel

    cfg = KernelGANConfig()
    gray = lr.mean(axis=2)
    finished = finish_kernel(raw, cfg.n_filtering)
    fit, _ = choose_elongation(gray, shrink_elongation(finished, cfg.elongation_power),
                               finished, 2, cfg.width_prior)
    cov = spectral_covariance(gray, 2)
    iso = gaussian_kernel(SIZE, 1.3)
    return {"authors": finish_kernel(raw, 40), "v095": fit.kernel,
            "shipped": mix_covariance(fit.kernel, cov, cfg.spectral_mix)[0],
            "free": mix_covariance(calibrate_width(gray, iso, 2, 0.0).kernel, cov,
                                   cfg.spectral_mix)[0],
            "g": gaussian_of(cov) if cov is not None else iso, "iso": iso}


def saved_kernel(raw: np.ndarray, lr: np.ndarray, iters: int) -> np.ndarray:
    """The x2 kernel ``estimate`` saves (the API's post-processing) from a raw kernel."""
    from study_stop import api_result

    return api_result([raw], lr, [0], iters, False).kernel_x2


def stop_table() -> list[str]:
    """``--stop auto`` against full runs on the saved kernel, per shape (empty without
    :data:`STORE_AUTO`)."""
    if not STORE_AUTO.exists():
        return []
    full, auto = (json.loads(p.read_text())["runs"] for p in (STORE, STORE_AUTO))
    lines = ["| kernel | images | full | auto | auto − full (± SE) | worst image | "
             "mean iterations used |", "|---|---:|---:|---:|---:|---:|---:|"]
    for shape in SHAPES:
        a, b, used = [], [], []
        for i, p in enumerate(images()):
            key = f"{shape}/{p.stem}"
            if full.get(key) is None or auto.get(key) is None:
                continue
            truth, lr = shape_kernel(shape, i), lr_image(shape, i, p)
            a.append(rc._psnr(saved_kernel(np.asarray(full[key]), lr, 3000), truth, 2))
            t = auto[key]["iters_used"]
            b.append(rc._psnr(saved_kernel(np.asarray(auto[key]["raw"]), lr, t), truth, 2))
            used.append(t)
        d = np.array(b) - np.array(a)
        lines.append(f"| {shape} | {len(d)} | {np.mean(a):.2f} | {np.mean(b):.2f} | "
                     f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f} | "
                     f"{d.min():+.2f} | {np.mean(used):.0f} ({1 - np.mean(used) / 3000:.0%} "
                     "saved) |")
    return ["", "## `--stop auto` on these shapes", "",
            "`python bench/study_shapes.py --train-auto`, then the report. The kernel "
            "`estimate` saves (0.9.12's post-processing) after a full run (3000 iterations) "
            "and after a run stopped by the default rule (tol 5e-3, patience 2, not before "
            "1500), same image and seed; aligned kernel PSNR (17×17 canvas).", "", *lines]


def report() -> str:
    runs = json.loads(STORE.read_text())["runs"]
    from scipy.stats import spearmanr

    from kgengine.confidence import spectral_confidence

    lines = ["| kernel | images | " + " | ".join(label for _, label in COLUMNS)
             + " | ρ(confidence, PSNR) of 0.9.7 |", "|---|---:|" + "---:|" * (len(COLUMNS) + 1)]
    for shape in SHAPES:
        scores: dict[str, list[float]] = {c: [] for c, _ in COLUMNS}
        confidence = []
        for i, p in enumerate(images()):
            raw = runs.get(f"{shape}/{p.stem}")
            if raw is None:
                continue
            truth, lr = shape_kernel(shape, i), lr_image(shape, i, p)
            ks = kernels_of(np.asarray(raw), lr)
            for c, k in ks.items():
                scores[c].append(rc._psnr(k, truth, 2))
            g = gaussian_of(spectral_covariance(lr.mean(axis=2), 2))
            confidence.append(spectral_confidence(ks["v095"], g, ks["shipped"]))
        base = np.array(scores["shipped"])
        cells = []
        for c, _ in COLUMNS:
            v = np.array(scores[c])
            d = "" if c == "shipped" else f" ({(v - base).mean():+.2f} ± "
            d += "" if c == "shipped" else f"{(v - base).std(ddof=1) / np.sqrt(len(v)):.2f})"
            cells.append(f"{v.mean():.2f}{d}")
        rho = spearmanr(confidence, scores["shipped"]).statistic
        lines.append(f"| {shape} | {len(base)} | " + " | ".join(cells)
                     + f" | {rho:+.2f} (median confidence {np.median(confidence):.2f}) |")
    return "\n".join([
        "# Kernels that are not Gaussians", "",
        f"`python bench/study_shapes.py` (module docstring). {machine_line()}. Mean aligned "
        "kernel PSNR (17×17 canvas) over the images, one run (seed 0) each; in brackets the "
        "paired difference from 0.9.6/0.9.7's kernel ± SE. The last column: Spearman ρ of "
        "0.9.7's confidence with the shipped kernel's PSNR over the shape's images (on motion "
        "segments its elongation term ranks the runs backwards).", "", *lines, *stop_table(),
        ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", action="store_true", help="train the runs not stored yet")
    p.add_argument("--train-auto", action="store_true",
                   help="train them again, stopped by the default --stop auto rule")
    a = p.parse_args(argv)
    if a.train or a.train_auto:
        train(stop="auto" if a.train_auto else "full")
        return 0
    text = report()
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
