"""Study: a closed-form Gaussian kernel from the LR spectrum alone, mixed into KernelGAN's.

Why. The width calibration (:mod:`kgengine.width`) compares ``log P_D − log P_LR`` with a
kernel's ``log |K|²`` and searches the kernel's width. Without aliasing, ``P_D(f) =
|K(f/2)|² P_LR(f/2)``, so the same model needs no downscaled copies at all::

    s(f) = log P_LR(f/2) − log P_LR(f) = c + (log|K(f/4)|² − log|K(f/2)|²)      (x2)

and for a Gaussian kernel of covariance Σ (HR pixels), ``log|K(ν)|² = −4π² νᵀΣν``, so
``s(f) = c + 4π²·(1/4 − 1/16)·fᵀΣf`` (x4: ``1/4 − 1/64``): linear in the three entries of Σ.
A least-squares fit of ``s`` over the polar bins of the calibration (same band, same noise
mask) gives Σ in closed form, with no training and no search (:func:`spectral_covariance`;
its eigenvalues clipped to [0.2, 8] px²).

What. On the same kernels as ``bench/study_width.py`` (0.9.5's saved kernel: clean-up,
combination, shrink, elongation choice, width calibration), the spectral Gaussian alone,
and the mixtures ``(1 − w)·k + w·g`` with ``w`` in :data:`WEIGHTS`, scored (aligned kernel
PSNR) against 0.9.5's kernel, on the development set (seeds 0-2) and the check set (seed 0),
``--restarts 4`` and one run; then w = 0.5 with noise or JPEG added to the LR image that
both the calibration and the fit read (the calibration's choices on those images come from
``width_study.json``'s cache). Measured, not adopted (README).

Run::

    python bench/study_spectral.py      # -> bench/data/spectral_study.md (about 5 min)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from kgengine.atomic import save_text
from kgengine.kernel import anisotropic_gaussian
from kgengine.sysinfo import machine_line
from kgengine.width import (
    _A_MID,
    _R_MID,
    BAND,
    ELONGATION_MARGIN,
    MAX_SIDE,
    NOISE_MARGIN,
    SCALES,
    _polar_log_power,
    scale_kernel,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_width as sw  # noqa: E402
from study_elongation import truth  # noqa: E402

OUT = sw.DATA / "spectral_study.md"
WEIGHTS = (0.25, 0.5, 0.75, 1.0)
VAR_RANGE = (0.2, 8.0)  # px², the fitted covariance's eigenvalues are clipped to it


def spectral_covariance(lr_gray: np.ndarray, scale: int) -> np.ndarray | None:
    """Σ (2×2, HR pixels², (row, col)) of the Gaussian kernel that the LR image's spectrum
    fits (module docstring), or None when fewer than 8 bins are usable.

    Least squares of ``s(f) = log P_LR(f/2) − log P_LR(f)`` on ``[1, f_y², 2 f_x f_y, f_x²]``
    over the polar bins within :data:`kgengine.width.BAND` and above the noise mask
    (``log P_LR(f/2)``: linear interpolation along the radius at the same angle); the
    coefficients divided by ``4π²(1/4 − 1/16)`` (x2) or ``4π²(1/4 − 1/64)`` (x4) are Σ.
    """
    top, left = ((n - min(n, MAX_SIDE)) // 2 for n in lr_gray.shape)
    img = np.asarray(lr_gray, np.float64)[top : top + MAX_SIDE, left : left + MAX_SIDE]
    lp, count, floor = _polar_log_power(img[None])
    lp = lp[0]
    half = np.stack([np.interp(_R_MID / 2, _R_MID, lp[:, a]) for a in range(len(_A_MID))], 1)
    use = ((count > 0) & ((_R_MID > BAND[0]) & (_R_MID < BAND[1]))[:, None]
           & (lp >= floor[0] + np.log(NOISE_MARGIN)))
    if use.sum() < 8:
        return None
    fy = (_R_MID[:, None] * np.sin(_A_MID)[None, :])[use]
    fx = (_R_MID[:, None] * np.cos(_A_MID)[None, :])[use]
    x = np.stack([np.ones_like(fy), fy**2, 2 * fx * fy, fx**2], 1)
    beta = np.linalg.lstsq(x, (half - lp)[use], rcond=None)[0]
    c = 4 * np.pi**2 * (1 / 4 - (1 / 16 if scale == 2 else 1 / 64))
    w, v = np.linalg.eigh(np.array([[beta[1], beta[2]], [beta[2], beta[3]]]) / c)
    return v @ np.diag(np.clip(w, *VAR_RANGE)) @ v.T


def spectral_kernel(lr_gray: np.ndarray, scale: int) -> np.ndarray | None:
    """The 13×13 Gaussian of :func:`spectral_covariance` (None where it is None)."""
    cov = spectral_covariance(lr_gray, scale)
    if cov is None:
        return None
    w, v = np.linalg.eigh(cov)
    # the long axis (v[:, 1], (row, col)) as anisotropic_gaussian's angle
    return anisotropic_gaussian(13, w[1], w[0], float(np.arctan2(v[0, 1], v[1, 1])))


def saved_095(kind: str, setname: str, how: str | None = None
              ) -> dict[tuple[int, str, int], tuple[np.ndarray, float]]:
    """(scale, image, seed) -> (0.9.5's saved x2 kernel, the isotropic Gaussian's PSNR), its
    choices read from the study cache (``how``: on a perturbed image)."""
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
        out[(sc, name, seed)] = (scale_kernel(base, float(SCALES[int(j.argmin())])), a["iso"])
    return out


def _seed_sd(values: dict[tuple[str, int], float]) -> float:
    by: dict[str, list[float]] = {}
    for (name, _), v in values.items():
        by.setdefault(name, []).append(v)
    return float(np.mean([np.std(v) for v in by.values() if len(v) == 3]))


def clean_table() -> list[str]:
    lines = ["| runs | n | 0.9.5 | spectral Gaussian alone | "
             + " | ".join(f"mix w = {w:g}" for w in WEIGHTS[:-1])
             + " | below iso: 0.9.5 → w = 0.5 | seed SD: 0.9.5 → w = 0.5 |",
             "|---|---:|---:|---:|" + "---:|" * (len(WEIGHTS) - 1) + "---:|---:|"]
    for kind, label in (("r4", "`--restarts 4`"), ("one", "one run")):
        for setname in ("dev", "check"):
            saved = saved_095(kind, setname)
            spec: dict[tuple[int, str], np.ndarray | None] = {}
            for sc in (2, 4):
                base, mixes, iso = {}, {w: {} for w in WEIGHTS}, {}
                for (s, name, seed), (k, iso_psnr) in saved.items():
                    if s != sc:
                        continue
                    if (sc, name) not in spec:
                        spec[(sc, name)] = spectral_kernel(sw.lr_gray(setname, sc, name), sc)
                    gt = truth(rc.SETS[setname][0], sc, name)
                    base[(name, seed)] = rc._psnr(k, gt, sc)
                    g = spec[(sc, name)]
                    for w in WEIGHTS:
                        mixes[w][(name, seed)] = (rc._psnr((1 - w) * k + w * g, gt, sc)
                                                  if g is not None else base[(name, seed)])
                    iso[(name, seed)] = iso_psnr
                keys = sorted(base)
                b = np.array([base[k] for k in keys])
                cells = []
                for w in (1.0, *WEIGHTS[:-1]):
                    m = np.array([mixes[w][k] for k in keys])
                    cells.append(f"{m.mean():.2f} ({sw._pm(m - b)})")
                i = np.array([iso[k] for k in keys])
                half = np.array([mixes[0.5][k] for k in keys])
                sd = (f"{_seed_sd(base):.2f} → {_seed_sd(mixes[0.5]):.2f}" if setname == "dev"
                      else "–")
                lines.append(f"| {label}, {setname} x{sc} | {len(keys)} | {b.mean():.2f} | "
                             + " | ".join(cells)
                             + f" | {(b < i).sum()} → {(half < i).sum()} | {sd} |")
    return lines


def robust_table() -> list[str]:
    lines = ["| `--restarts 4`, LR image | dev x2 Δ | dev x4 Δ | check x2 Δ | check x4 Δ "
             "| below iso (dev x2 / x4, check x2 / x4), 0.9.5 → w = 0.5 |",
             "|---|---:|---:|---:|---:|---:|"]
    for how in (None, *sw.PERTURBATIONS):
        cells, below = [], []
        for setname in ("dev", "check"):
            saved = saved_095("r4", setname, how)
            for sc in (2, 4):
                spec: dict[str, np.ndarray | None] = {}
                d, b_n, m_n = [], 0, 0
                for (s, name, _), (k, iso_psnr) in saved.items():
                    if s != sc:
                        continue
                    if name not in spec:
                        gray = sw.lr_gray(setname, sc, name)
                        if how is not None:
                            gray = sw.perturbed(gray, how, int(name.split("_")[1]))
                        spec[name] = spectral_kernel(gray, sc)
                    gt = truth(rc.SETS[setname][0], sc, name)
                    pb = rc._psnr(k, gt, sc)
                    pm = pb if spec[name] is None else rc._psnr(0.5 * k + 0.5 * spec[name], gt, sc)
                    d.append(pm - pb)
                    b_n += int(pb < iso_psnr)
                    m_n += int(pm < iso_psnr)
                cells.append(sw._pm(np.asarray(d)))
                below.append(f"{b_n} → {m_n}")
        lines.append(f"| {how or 'as made (no noise)'} | " + " | ".join(cells) + " | "
                     + ", ".join(below) + " |")
    return lines


def main() -> int:
    text = "\n".join([
        "# A closed-form spectral Gaussian, mixed into KernelGAN's kernel (not adopted)", "",
        f"`python bench/study_spectral.py` (module docstring). {machine_line()}. Aligned "
        "kernel PSNR (canvases of `bench/bench_vs_authors.py`); Δ against 0.9.5's saved kernel "
        "on the same runs (± SE of the paired differences). The weight's grid was looked at "
        "on both sets.", "",
        "## Clean LR images", "", *clean_table(), "",
        "## Noise and JPEG in the LR image (w = 0.5)", "", *robust_table(), "",
        "The calibration's choices and the fit both read the perturbed image; KernelGAN was "
        "trained on the clean one. The fit has no noise model beyond the calibration's mask, "
        "and at σ = 3/255 it loses several dB at x4: why it is not adopted.", ""])
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
