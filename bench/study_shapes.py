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

Run: ``python bench/study_shapes.py --train`` (about 8 min), then ``python
bench/study_shapes.py`` -> ``bench/data/shapes_study.md``.
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


def lr_image(shape: str, index: int, path: Path) -> np.ndarray:
    """The central CROP² of the photo degraded x2 by the shape's kernel, 8 bits, float32."""
    hr = read_image(path)
    top, left = ((n - CROP) // 2 for n in hr.shape[:2])
    hr = hr[top : top + CROP, left : left + CROP]
    lr = degrade(hr, shape_kernel(shape, index), 2)
    return (np.round(np.clip(lr, 0, 1) * 255) / 255).astype(np.float32)


def train(batch: int = 8) -> None:
    """One run (seed 0) of every (shape, image) not stored yet, ``batch`` at a time."""
    from kgengine.api import estimate_kernels

    store = json.loads(STORE.read_text()) if STORE.exists() else {"runs": {}}
    todo = [(s, i, p) for s in SHAPES for i, p in enumerate(images())
            if f"{s}/{p.stem}" not in store["runs"]]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        res = estimate_kernels([lr_image(s, i, p) for s, i, p in chunk], seeds=[0] * len(chunk),
                               names=[f"{s}_{p.stem}" for s, _, p in chunk], device="cpu",
                               on_diverge="return")
        for (s, _, p), r in zip(chunk, res, strict=True):
            store["runs"][f"{s}/{p.stem}"] = (None if isinstance(r, Exception)
                                              else np.round(r.raw_kernel, 12).tolist())
        store["note"] = ("raw KernelGAN kernels (one run, seed 0, 3000 iterations) of "
                         "bench/study_shapes.py's images")
        save_json(STORE, store)
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
        "segments its elongation term ranks the runs backwards).", "", *lines, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", action="store_true", help="train the runs not stored yet")
    a = p.parse_args(argv)
    if a.train:
        train()
        return 0
    text = report()
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
