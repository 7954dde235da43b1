"""How far the spectral fit's *unclipped* variances reach on real images (0.9.28 review).

The spectrum's Gaussian (``kgengine.spectral``) clips its covariance's eigenvalues to
``VAR_RANGE`` (0.2-8 px²). On images with no kernel information (an 8-bit ramp, Nyquist
stripes, a smooth float blob) the least-squares fit lands far outside that range (14.8 /
17.9, −6.1 / 28.7, −19 / −19 px²) and, clipped, still gave a confidence (0.69 on a ramp).
This script measures the unclipped eigenvalues on every LR image the benchmarks use and on
the real photos, to see whether a "no fit" bound could separate the two. They stay within
5.1 and −1.2 px² here, but the review of 0.9.28's fixes found real photos blurred wider
than the range (variance 10-16 px² at x2: unclipped 8.7-15) and dark noisy ones (to −30)
on the degenerate images' side, so no bound was adopted (docs/LIMITS.md). 0.9.29 adds
three other statistics of the same fit, measured on the same sets plus real photos blurred
wider than the range and dark ones (:func:`fit_quality`): the residual's RMS, R² and the
number of angles that hold a used bin. None separates them either (table 3).

Sets: the development and check sets (x2 and x4 LR, ``bench/devset.py``,
``bench/study_confidence.py``), the same with σ = 3/255 Gaussian noise, the sharp set
(``bench/study_sharp.py``), the 40 HR photos of ``../shared/data/hr`` read as x2 LR images,
and the review's degenerate images. Run: ``python bench/study_fit_range.py`` (about 1 min);
writes ``bench/data/fit_range_study.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from kgengine.imageio import read_image
from kgengine.spectral import covariance_of_quadratic, spectral_bins
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import HR_DIR, ensure_devset  # noqa: E402
from study_confidence import ensure_checkset  # noqa: E402
from study_sharp import images as sharp_images  # noqa: E402
from study_sharp import lr_image as sharp_lr  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "fit_range_study.md"


def unclipped(gray: np.ndarray, scale: int) -> tuple[float, float] | None:
    """The fitted Σ's eigenvalues before clipping (ascending), None without a fit."""
    data = spectral_bins(gray)
    if data is None:
        return None
    s, fy, fx, _ = data
    design = np.stack([np.ones_like(fy), fy**2, 2 * fx * fy, fx**2], 1)
    q = np.linalg.lstsq(design, s, rcond=None)[0][1:]
    c = 4 * np.pi**2 * (1 / 4 - (1 / 16 if scale == 2 else 1 / 64))
    w = np.linalg.eigvalsh(np.array([[q[0], q[1]], [q[1], q[2]]]) / c)
    assert covariance_of_quadratic(q, scale).shape == (2, 2)
    return float(w[0]), float(w[1])


def fit_quality(gray: np.ndarray) -> tuple[int, float, float] | None:
    """(angles holding a used bin (of 12), the fit's residual RMS, its R²), None without a
    fit: other candidate signs of an image without kernel information."""
    data = spectral_bins(gray)
    if data is None:
        return None
    s, fy, fx, angle = data
    design = np.stack([np.ones_like(fy), fy**2, 2 * fx * fy, fx**2], 1)
    r = s - design @ np.linalg.lstsq(design, s, rcond=None)[0]
    r2 = 1 - float((r**2).sum()) / max(float(((s - s.mean()) ** 2).sum()), 1e-30)
    return len(np.unique(angle)), float(np.sqrt((r**2).mean())), r2


def degenerate() -> dict[str, np.ndarray]:
    """The review's images that carry no kernel information (gray, (H, W) in [0, 1])."""
    x = np.arange(96)
    ramp = np.round(np.tile(x / 95.0, (96, 1)) * 255) / 255
    stripes = np.tile((x % 2).astype(float), (96, 1))
    yy, xx = np.mgrid[:96, :96]
    blob = np.exp(-((yy - 48.0) ** 2 + (xx - 48.0) ** 2) / (2 * 15.0**2))
    checker = ((yy + xx) % 2).astype(float)
    big = np.round(np.tile(np.arange(512) / 511.0, (512, 1)) * 255) / 255
    return {"8-bit ramp": ramp, "Nyquist stripes": stripes, "float Gaussian blob": blob,
            "checkerboard": checker, "diagonal 8-bit ramp": np.round((yy + xx) / 190 * 255) / 255,
            "stripes of period 5": (np.sin(2 * np.pi * xx / 5) > 0).astype(float),
            "8-bit ramp, 512×512": big}


def sets() -> dict[str, list[tuple[np.ndarray, int]]]:
    rng = np.random.default_rng(0)
    out: dict[str, list[tuple[np.ndarray, int]]] = {}
    for name, root in (("development", ensure_devset()), ("check", ensure_checkset())):
        for scale in (2, 4):
            imgs = [read_image(p).mean(axis=2)
                    for p in sorted((root / f"lr_x{scale}").glob("*.png"))]
            out[f"{name} x{scale}"] = [(g, scale) for g in imgs]
            out[f"{name} x{scale}, σ = 3/255 noise"] = [
                (np.clip(g + rng.normal(0, 3 / 255, g.shape), 0, 1), scale) for g in imgs]
    out["sharp set x2"] = [(sharp_lr(i, p).mean(axis=2), 2)
                           for i, p in enumerate(sharp_images())]
    photos = [read_image(p).mean(axis=2) for p in sorted(HR_DIR.glob("*.png"))]
    out["40 real photos as x2 LR"] = [(g, 2) for g in photos]
    for var in (12, 16):  # blurred wider than VAR_RANGE, then x2
        out[f"40 real photos, Gaussian var {var} px², ↓2"] = [
            (ndimage.gaussian_filter(g, np.sqrt(var))[::2, ::2], 2) for g in photos]
    out["40 real photos × 0.1 + σ = 2/255 noise"] = [
        (np.clip(0.1 * g + rng.normal(0, 2 / 255, g.shape), 0, 1), 2) for g in photos]
    out["40 real photos × 0.05, 8-bit"] = [(np.round(0.05 * g * 255) / 255, 2) for g in photos]
    return out


def main() -> None:
    lines = ["# The spectral fit's unclipped variances", "",
             f"`python bench/study_fit_range.py` ({machine_line()}). Eigenvalues (px²) of the "
             "least-squares Σ before `covariance_of_quadratic` clips them to 0.2-8.", "",
             "| images | n | no fit | λ_short min | λ_short max | λ_long min | λ_long max |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    groups = sets()
    for name, items in groups.items():
        fits = [unclipped(g, s) for g, s in items]
        got = [f for f in fits if f is not None]
        short, long_ = [f[0] for f in got], [f[1] for f in got]
        lines.append(f"| {name} | {len(items)} | {len(items) - len(got)} | {min(short):+.2f} | "
                     f"{max(short):+.2f} | {min(long_):+.2f} | {max(long_):+.2f} |")
    quality = {name: [q for q in (fit_quality(g) for g, _ in items) if q is not None]
               for name, items in groups.items()}
    lines += ["", "| degenerate image (96×96 unless named) | λ_short | λ_long |", "|---|---:|---:|"]
    for name, g in degenerate().items():
        f = unclipped(g, 2)
        lines.append(f"| {name} | " + ("no fit | – |" if f is None else
                                       f"{f[0]:+.2f} | {f[1]:+.2f} |"))
    lines += ["", "Other signs of a fit without information (0.9.29): angles of 12 that hold "
              "a used bin, the residual's RMS, R².", "",
              "| images | angles | residual RMS | R² |", "|---|---:|---:|---:|"]
    for name, qs in quality.items():
        a = np.array(qs)
        lines.append(f"| {name} | {a[:, 0].min():.0f}-{a[:, 0].max():.0f} | "
                     f"{a[:, 1].min():.2f}-{a[:, 1].max():.2f} | "
                     f"{a[:, 2].min():+.2f}-{a[:, 2].max():+.2f} |")
    for name, g in degenerate().items():
        q = fit_quality(g)
        lines.append(f"| {name} | " + ("no fit | – | – |" if q is None else
                                       f"{q[0]} | {q[1]:.2f} | {q[2]:+.2f} |"))
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
