"""Study: what does KernelGAN's training add to the spectrum's own estimate?

Why. Since 0.9.6 the saved kernel is the mean of KernelGAN's (finished, calibrated) kernel
``k`` and the LR spectrum's closed-form Gaussian ``g`` (:mod:`kgengine.spectral`), and the
width calibration (:mod:`kgengine.width`) sizes ``k`` from the same spectrum. Neither needs
training. So: how well does an estimate do that never trains KernelGAN, and which part of
``k`` matters?

What. On the same runs as ``bench/study_spectral.py`` (0.9.6's saved kernels; development set
seeds 0-2, check set seed 0; ``--restarts 4`` and one run), aligned kernel PSNR and runs below
the isotropic σ = 1.3 Gaussian of:

- **0.9.6/0.9.7's kernel** (the shipped mix);
- **KernelGAN's shape dropped**: ``k`` made isotropic with its area kept
  (``shrink_elongation(k, 0)``), then mixed with ``g`` as shipped: what is left of KernelGAN
  is its (calibrated) width;
- **no training at all**: ``g`` alone; and ``g`` mixed with an isotropic Gaussian whose width
  the calibration chooses from a σ = 1.3 start, with the shipped pull toward the start
  (λ = 0.3) or none (λ = 0). The pull toward σ = 1.3, the benchmark's isotropic baseline
  itself, is a prior tuned to this benchmark's kernels, not something a user's photos share.

The training-free rows do not depend on the kind of run; they are compared with each kind.

Run: ``python bench/study_contribution.py`` (about 2 min) -> ``bench/data/contribution_study.md``.
"""

from __future__ import annotations

import argparse
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from kgengine.atomic import save_text
from kgengine.kernel import gaussian_kernel, shrink_elongation
from kgengine.spectral import gaussian_of, mix_covariance, spectral_covariance
from kgengine.sysinfo import machine_line
from kgengine.width import calibrate_width

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_spectral as ss  # noqa: E402
import study_width as sw  # noqa: E402
from study_elongation import truth  # noqa: E402

OUT = sw.DATA / "contribution_study.md"
COLUMNS = [("shipped", "0.9.6/0.9.7 kernel"),
           ("shape_dropped", "KernelGAN's shape dropped (its width kept), mixed with g"),
           ("g_alone", "no training: g alone"),
           ("iso_prior", "no training: g mixed with a calibrated isotropic Gaussian, λ = 0.3"),
           ("iso_free", "no training: the same, λ = 0")]


def _row(job: tuple) -> dict:
    kind, setname, sc, name, k = job
    k = np.asarray(k)
    gray = sw.lr_gray(setname, sc, name)
    gt = truth(rc.SETS[setname][0], sc, name)
    cov = spectral_covariance(gray, sc)
    start = gaussian_kernel(13, 1.3)
    kernels = {
        "shipped": mix_covariance(k, cov, ss.SHIPPED)[0],
        "shape_dropped": mix_covariance(shrink_elongation(k, 0.0), cov, ss.SHIPPED)[0],
        "g_alone": gaussian_of(cov),
        "iso_prior": mix_covariance(calibrate_width(gray, start, sc, 0.3).kernel, cov,
                                    ss.SHIPPED)[0],
        "iso_free": mix_covariance(calibrate_width(gray, start, sc, 0.0).kernel, cov,
                                   ss.SHIPPED)[0]}
    return {"kind": kind, "set": setname, "scale": sc,
            "iso": rc._psnr(start, gt, sc),
            **{c: rc._psnr(kk, gt, sc) for c, kk in kernels.items()}}


def rows(workers: int = 2) -> list[dict]:
    jobs = [(kind, setname, sc, name, k.tolist())
            for kind in ("r4", "one") for setname in ("dev", "check")
            for (sc, name, _), (k, _) in ss.saved_095(kind, setname).items()]
    with Pool(workers) as pool:
        return pool.map(_row, jobs, chunksize=4)


def table(all_rows: list[dict]) -> list[str]:
    head = " | ".join(label for _, label in COLUMNS)
    lines = [f"| runs (n) | {head} |", "|---|" + "---:|" * len(COLUMNS)]
    for kind, label in (("r4", "`--restarts 4`"), ("one", "one run")):
        for setname in ("dev", "check"):
            for sc in (2, 4):
                r = [x for x in all_rows
                     if (x["kind"], x["set"], x["scale"]) == (kind, setname, sc)]
                base = np.array([x["shipped"] for x in r])
                iso = np.array([x["iso"] for x in r])
                cells = []
                for c, _ in COLUMNS:
                    v = np.array([x[c] for x in r])
                    diff = "" if c == "shipped" else f" ({sw._pm(v - base)})"
                    cells.append(f"{v.mean():.2f}{diff}, {(v < iso).sum()} below")
                lines.append(f"| {label}, {setname} x{sc} ({len(r)}) | " + " | ".join(cells)
                             + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)  # --help
    text = "\n".join([
        "# What KernelGAN's training adds to the spectrum's estimate", "",
        f"`python bench/study_contribution.py` (module docstring). {machine_line()}. Aligned "
        "kernel PSNR (canvases of `bench/bench_vs_authors.py`), its difference from the "
        "shipped kernel on the same runs (± SE, paired) and the runs below the isotropic "
        "σ = 1.3 Gaussian. Every kernel of this benchmark is a Gaussian, the family of `g` and "
        "of the training-free estimates.", "", *table(rows()), ""])
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
