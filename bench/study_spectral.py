"""Study: a closed-form Gaussian kernel from the LR spectrum alone, mixed into KernelGAN's
(0.9.6's ``spectral_mix``, :mod:`kgengine.spectral`).

Why. The width calibration (:mod:`kgengine.width`) compares ``log P_D − log P_LR`` with a
kernel's ``log |K|²`` and searches the kernel's width. Without aliasing, ``P_D(f) =
|K(f/2)|² P_LR(f/2)``, so the same model needs no downscaled copies at all::

    s(f) = log P_LR(f/2) − log P_LR(f) = c + (log|K(f/4)|² − log|K(f/2)|²)      (x2)

and for a Gaussian kernel of covariance Σ (HR pixels), ``log|K(ν)|² = −4π² νᵀΣν``, so
``s(f) = c + 4π²·(1/4 − 1/16)·fᵀΣf`` (x4: ``1/4 − 1/64``): linear in the three entries of Σ,
a least-squares fit (:func:`kgengine.spectral.spectral_covariance`).

What. On the same kernels as ``bench/study_width.py`` (0.9.5's saved kernel: clean-up,
combination, shrink, elongation choice, width calibration), the spectral Gaussian alone,
0.9.6's mix (w = 0.5, the noise floor subtracted from the spectra, no mix where the two
areas differ by more than 2×: :func:`kgengine.spectral.mix_spectral`) and, for context, the
first try (:func:`first_try_covariance`: no floor subtraction, no area check) at w = 0.25,
0.5 and 0.75; scored (aligned kernel PSNR) against 0.9.5's kernel, on the development set
(seeds 0-2) and the check set (seed 0), ``--restarts 4`` and one run; then both with noise
or JPEG added to the LR image that the calibration and the fit read (the calibration's
choices on those images come from ``width_study.json``'s cache). ``--derive`` writes the
stores ``kgengine_v096.json`` / ``kgengine_v096r4.json`` for ``bench/bench_vs_authors.py``.

Run::

    python bench/study_spectral.py           # -> bench/data/spectral_study.md (about 6 min)
    python bench/study_spectral.py --derive  # -> kgengine_v096.json, kgengine_v096r4.json
    python bench/study_spectral.py --shapes  # -> spectral_shapes.md (disk and motion kernels)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.kernel import analytic_x4
from kgengine.spectral import gaussian_of, mix_spectral, spectral_covariance
from kgengine.sysinfo import machine_line
from kgengine.width import ELONGATION_MARGIN, SCALES, refine_scale, scale_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_width as sw  # noqa: E402
from study_elongation import truth  # noqa: E402

OUT = sw.DATA / "spectral_study.md"
FIRST_WEIGHTS = (0.25, 0.5, 0.75)  # the first try's grid (both sets looked at)
SHIPPED = 0.5  # KernelGANConfig.spectral_mix


def first_try_covariance(lr_gray: np.ndarray, scale: int) -> np.ndarray | None:
    """The first version of :func:`kgengine.spectral.spectral_covariance`: the same fit on
    the spectrum as measured, without subtracting the noise floor."""
    return spectral_covariance(lr_gray, scale, subtract_floor=False)


def saved_095(kind: str, setname: str, how: str | None = None, refine: bool = False
              ) -> dict[tuple[int, str, int], tuple[np.ndarray, float]]:
    """(scale, image, seed) -> (0.9.5's saved x2 kernel, the isotropic Gaussian's PSNR), its
    choices read from the width study's cache (``how``: on a perturbed image; ``refine``:
    0.9.8's scale between the grid's points, :func:`kgengine.width.refine_scale`)."""
    cache = json.loads(sw.CACHE.read_text())
    rows, robust = cache["rows"], cache.get("robust", {})
    weight = sw.SHIPPED * np.log2(SCALES) ** 2
    shrunk, unshrunk = sw.finished(kind, setname), sw.finished(kind + "-keep", setname)
    out = {}
    for (sc, name, seed), k in shrunk.items():
        key = f"{setname}/x{sc}/{name}/s{seed}"
        a, b = rows[f"{kind}/{key}"], rows[f"{kind}-keep/{key}"]
        ja = np.asarray(a["scores"] if how is None else robust[how][f"{kind}/{key}"]) + weight
        jb = np.asarray(b["scores"] if how is None else robust[how][f"{kind}-keep/{key}"]) + weight
        keep = jb.min() + ELONGATION_MARGIN < ja.min()
        j = jb if keep else ja
        base = unshrunk[(sc, name, seed)] if keep else k
        s = refine_scale(j) if refine else float(SCALES[int(j.argmin())])
        out[(sc, name, seed)] = (scale_kernel(base, s), a["iso"])
    return out


def _image(setname: str, sc: int, name: str, how: str | None) -> np.ndarray:
    gray = sw.lr_gray(setname, sc, name)
    return gray if how is None else sw.perturbed(gray, how, int(name.split("_")[1]))


def _seed_sd(values: dict[tuple[str, int], float]) -> float:
    by: dict[str, list[float]] = {}
    for (name, _), v in values.items():
        by.setdefault(name, []).append(v)
    return float(np.mean([np.std(v) for v in by.values() if len(v) == 3]))


def scored(kind: str, setname: str, sc: int, how: str | None = None
           ) -> dict[str, dict[tuple[str, int], float]]:
    """PSNR per run of: 0.9.5's kernel ("base"), 0.9.6's mix ("shipped"), the spectral
    Gaussian alone ("alone"), the first try's mixes ("first w"), and the Gaussian ("iso")."""
    saved = saved_095(kind, setname, how)
    fits: dict[str, tuple] = {}
    out: dict[str, dict[tuple[str, int], float]] = {}
    for (s, name, seed), (k, iso_psnr) in saved.items():
        if s != sc:
            continue
        gray = None
        if name not in fits:
            gray = _image(setname, sc, name, how)
            cov, first = spectral_covariance(gray, sc), first_try_covariance(gray, sc)
            fits[name] = (gray, None if cov is None else gaussian_of(cov),
                          None if first is None else gaussian_of(first))
        gray, alone, first = fits[name]
        gt = truth(rc.SETS[setname][0], sc, name)
        run = (name, seed)
        base = rc._psnr(k, gt, sc)
        out.setdefault("base", {})[run] = base
        out.setdefault("iso", {})[run] = iso_psnr
        out.setdefault("shipped", {})[run] = rc._psnr(mix_spectral(gray, k, sc, SHIPPED)[0],
                                                      gt, sc)
        out.setdefault("alone", {})[run] = base if alone is None else rc._psnr(alone, gt, sc)
        for w in FIRST_WEIGHTS:
            out.setdefault(f"first {w:g}", {})[run] = (
                base if first is None else rc._psnr((1 - w) * k + w * first, gt, sc))
    return out


def clean_table() -> list[str]:
    cols = ["shipped", "alone", *(f"first {w:g}" for w in FIRST_WEIGHTS)]
    lines = ["| runs | n | 0.9.5 | **0.9.6 mix** | spectral Gaussian alone | "
             + " | ".join(f"first try, w = {w:g}" for w in FIRST_WEIGHTS)
             + " | below iso: 0.9.5 → 0.9.6 | seed SD: 0.9.5 → 0.9.6 |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(FIRST_WEIGHTS) + "---:|---:|"]
    for kind, label in (("r4", "`--restarts 4`"), ("one", "one run")):
        for setname in ("dev", "check"):
            for sc in (2, 4):
                r = scored(kind, setname, sc)
                keys = sorted(r["base"])
                b = np.array([r["base"][k] for k in keys])
                iso = np.array([r["iso"][k] for k in keys])
                cells = []
                for c in cols:
                    m = np.array([r[c][k] for k in keys])
                    cells.append(f"{m.mean():.2f} ({sw._pm(m - b)})")
                m = np.array([r["shipped"][k] for k in keys])
                sd = (f"{_seed_sd(r['base']):.2f} → {_seed_sd(r['shipped']):.2f}"
                      if setname == "dev" else "–")
                lines.append(f"| {label}, {setname} x{sc} | {len(keys)} | {b.mean():.2f} | "
                             + " | ".join(cells)
                             + f" | {(b < iso).sum()} → {(m < iso).sum()} | {sd} |")
    return lines


def robust_table() -> list[str]:
    lines = ["| `--restarts 4`, LR image | mix | dev x2 Δ | dev x4 Δ | check x2 Δ | check x4 Δ "
             "| below iso (dev x2 / x4, check x2 / x4), 0.9.5 → mix |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for how in (None, *sw.PERTURBATIONS):
        res = {(st, sc): scored("r4", st, sc, how) for st in ("dev", "check") for sc in (2, 4)}
        for col, label in (("shipped", "0.9.6"), ("first 0.5", "first try, w = 0.5")):
            cells, below = [], []
            for r in res.values():
                keys = sorted(r["base"])
                b = np.array([r["base"][k] for k in keys])
                m = np.array([r[col][k] for k in keys])
                iso = np.array([r["iso"][k] for k in keys])
                cells.append(sw._pm(m - b))
                below.append(f"{(b < iso).sum()} → {(m < iso).sum()}")
            lines.append(f"| {how or 'as made (no noise)'} | {label} | " + " | ".join(cells)
                         + " | " + ", ".join(below) + " |")
    return lines


def derive() -> list[Path]:
    """``kgengine_v096.json`` (one run) and ``kgengine_v096r4.json`` (``--restarts 4``): the
    development set's kernels as 0.9.6 saves them (0.9.5's, then the spectral mix; x4: the
    analytic x4 kernel), in ``bench/bench_vs_authors.py``'s format; variants ``v096`` and
    ``v096r4`` (0.9.5's settings and ``spectral_mix=0.5``). The restarts' confidence is
    0.9.5's store's."""
    cfg = KernelGANConfig(spectral_confidence=False, width_refine=False)  # 0.9.6's settings
    paths = []
    for kind, name, old in (("one", "v096", "v095"), ("r4", "v096r4", "v095r4")):
        conf = json.loads((sw.DATA / f"kgengine_{old}.json").read_text())["runs"]
        runs = {}
        for (sc, image, seed), (k, _) in saved_095(kind, "dev").items():
            key = f"x{sc}/{image}/s{seed}"
            k2 = mix_spectral(sw.lr_gray("dev", sc, image), k, sc, cfg.spectral_mix)[0]
            runs[key] = {"kernel": np.round(analytic_x4(k2) if sc == 4 else k2, 9).tolist(),
                         "confidence": conf[key]["confidence"]}
        path = sw.DATA / f"kgengine_{name}.json"
        save_json(path, {"variant": name, "config": cfg.to_dict(), "runs": runs,
                         "note": "derived by bench/study_spectral.py --derive from the width "
                                 "study's kernels (0.9.6: 0.9.5's kernel with the LR "
                                 "spectrum's Gaussian mixed in)"})
        paths.append(path)
    return paths


SHAPE_IMAGES = ("urban_005", "urban_015", "urban_030", "urban_045", "urban_060", "urban_075")
SHAPES_OUT = sw.DATA / "spectral_shapes.md"


def shape_kernel(shape: str, size: int = 13, oversample: int = 8) -> np.ndarray:
    """A non-Gaussian (size, size) x2 kernel, sum 1: ``"disk"`` (uniform, radius 2.2 px) or
    ``"motion"`` (a segment of 8 px at 30°, 1 px wide), area-sampled ``oversample``² times."""
    n = size * oversample
    c = (n - 1) / 2
    y, x = (np.mgrid[0:n, 0:n] - c) / oversample
    if shape == "disk":
        fine = (np.hypot(y, x) <= 2.2).astype(float)
    else:
        t = np.deg2rad(30.0)
        along, across = x * np.cos(t) - y * np.sin(t), x * np.sin(t) + y * np.cos(t)
        fine = ((np.abs(along) <= 4.0) & (np.abs(across) <= 0.5)).astype(float)
    k = fine.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return k / k.sum()


def shapes() -> str:
    """One run (3000 iterations, seed 0) on six Urban100 photos (central 512² crop, x2, 8
    bits) degraded with each non-Gaussian kernel; 0.9.5's saved kernel (``spectral_mix=0``)
    against 0.9.6's (the same kernel, mixed): what the Gaussian fit costs off its family."""
    import torch

    from kgengine.api import estimate_kernels
    from kgengine.degrade import degrade
    from kgengine.imageio import read_image
    from kgengine.kernel import gaussian_kernel

    cfg = KernelGANConfig(spectral_mix=0.0)
    lines = ["| kernel | image | 0.9.5 | 0.9.6 (mixed?) | Δ | isotropic σ = 1.3 |",
             "|---|---|---:|---:|---:|---:|"]
    deltas: dict[str, list[float]] = {}
    for shape in ("disk", "motion"):
        k_true = shape_kernel(shape)
        lrs = []
        for name in SHAPE_IMAGES:
            hr = read_image(Path("../shared/data/hr") / f"{name}.png")
            top, left = ((n - 512) // 2 for n in hr.shape[:2])
            hr = hr[top : top + 512, left : left + 512]
            lrs.append((np.round(degrade(hr, k_true, 2) * 255) / 255).astype(np.float32))
        torch.manual_seed(0)
        results = estimate_kernels(lrs, seeds=[0] * len(lrs), device="cpu", config=cfg)
        for name, lr, res in zip(SHAPE_IMAGES, lrs, results, strict=True):
            mixed, info = mix_spectral(lr.mean(axis=2), res.kernel_x2, 2, SHIPPED)
            old, new = rc._psnr(res.kernel_x2, k_true, 2), rc._psnr(mixed, k_true, 2)
            iso = rc._psnr(gaussian_kernel(13, 1.3), k_true, 2)
            deltas.setdefault(shape, []).append(new - old)
            lines.append(f"| {shape} | {name} | {old:.2f} | {new:.2f} "
                         f"({'yes' if info['mixed'] else 'no'}) | {new - old:+.2f} | {iso:.2f} |")
    summary = [f"- {shape}: mean Δ {np.mean(d):+.2f} dB over {len(d)} images"
               for shape, d in deltas.items()]
    return "\n".join(["# The spectral mix on kernels that are not Gaussian", "",
                      f"`python bench/study_spectral.py --shapes`. {machine_line()}. Aligned "
                      "kernel PSNR (17×17 canvas) against the true kernel.", "", *lines, "",
                      *summary, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--derive", action="store_true", help="write kgengine_v096[r4].json")
    p.add_argument("--shapes", action="store_true", help="write spectral_shapes.md")
    a = p.parse_args(argv)
    if a.derive:
        for path in derive():
            print(path)
        return 0
    if a.shapes:
        text = shapes()
        save_text(SHAPES_OUT, text)
        print(text)
        return 0
    text = "\n".join([
        "# A closed-form spectral Gaussian, mixed into KernelGAN's kernel (0.9.6)", "",
        f"`python bench/study_spectral.py` (module docstring). {machine_line()}. Aligned "
        "kernel PSNR (canvases of `bench/bench_vs_authors.py`); Δ against 0.9.5's saved kernel "
        "on the same runs (± SE of the paired differences). The first try's weights were "
        "looked at on both sets; the floor subtraction and the area check were added after "
        "its noise rows below, also with both sets in view.", "",
        "## Clean LR images", "", *clean_table(), "",
        "## Noise and JPEG in the LR image", "", *robust_table(), "",
        "The calibration's choices and the fit both read the perturbed image; KernelGAN was "
        "trained on the clean one.", ""])
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
