"""Study: is a kernel elongated along the LR image's edges less accurate (a confidence)?

KernelGAN's long axis is often wrong (docs/HISTORY.md, "How far any combination rule could go"). The
hypothesis: it errs toward the image's dominant edge direction, so an estimate elongated
along the edges deserves less confidence. Score per run, with ``e`` the estimate's
elongation (second-moment ``var_long / var_short``) and ``φ`` the angle between its long
axis and the dominant gradient direction of the LR image (global structure tensor)::

    edge_score = −log(e) · sin²(φ)       (0 for an isotropic estimate; lowest when elongated
                                           along the edges, i.e. across the gradient)

Reported per set and scale: Spearman ρ of ``edge_score``, of ``−log(e)`` and of the
estimate's area with the aligned kernel PSNR (and with its gain over the isotropic σ = 1.3
Gaussian), and, on the elongated true kernels (``e ≥ 1.5``), the median angle of the
estimate's and the true long axis to the gradient. The sets are the stored kernels, so
nothing is trained: the development set (kgengine 0.7's one run and 0.8's restarts before
the elongation shrink, and the authors' code) and the check set of
``bench/study_confidence.py`` (kgengine 0.5's one run, nothing tuned on it).

Run: ``python bench/study_edge_axis.py`` (writes ``bench/data/edge_axis_study.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.stats import spearmanr

from kgengine.atomic import save_text
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, gaussian_kernel, principal_axes
from kgengine.metrics import aligned_kernel_psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import DEFAULT_OUT, ensure_devset  # noqa: E402
from study_confidence import ensure_checkset  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
CANVAS = {2: 17, 4: 37}  # as bench_vs_authors
STORES = [("development set, kgengine 0.7 one run (unshrunk)", "dev", "kgengine_v07.json"),
          ("development set, kgengine 0.8 `--restarts 4` (unshrunk)", "dev", "kgengine_v08r4.json"),
          ("development set, the authors' code", "dev", "authors_kernels.json"),
          ("**check set**, kgengine 0.5 one run", "check", "check_kernels.json")]


def gradient_direction(gray: np.ndarray) -> float:
    """The dominant gradient direction of a (H, W) image, degrees in [0, 180): the leading
    eigenvector of ``J = mean([gx², gx·gy], [gx·gy, gy²])``, x along columns, y along rows
    (the axes of :func:`kgengine.kernel.principal_axes`)."""
    gy, gx = np.gradient(gray)
    j = np.array([[np.mean(gx * gx), np.mean(gx * gy)], [np.mean(gx * gy), np.mean(gy * gy)]])
    v = np.linalg.eigh(j)[1][:, 1]
    return float(np.degrees(np.arctan2(v[1], v[0])) % 180.0)


def axis_angle(a: float, b: float) -> float:
    """The angle between two axes given in degrees, in [0, 90]."""
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


def rows_for(setdir: Path, runs: dict, scale: int) -> list[dict]:
    """Per (image, seed) run with a kernel: PSNR, gain over the Gaussian and the measures."""
    iso = gaussian_kernel(13, 1.3)
    iso = analytic_x4(iso) if scale == 4 else iso
    rows, cache = [], {}
    for key, k in runs.items():
        s, name, _ = key.split("/")
        if int(s[1:]) != scale or k is None:
            continue
        if name not in cache:
            gt = np.asarray(loadmat(setdir / f"gt_k_x{scale}" / f"kernel_{name.split('_')[1]}.mat")
                            ["Kernel"])
            lr = read_image(setdir / f"lr_x{scale}" / f"{name}.png").mean(axis=2)
            cache[name] = (gt, gradient_direction(lr),
                           aligned_kernel_psnr(iso, gt, size=CANVAS[scale]).psnr)
        gt, grad_deg, iso_psnr = cache[name]
        k = np.asarray(k, np.float64)
        psnr = aligned_kernel_psnr(k, gt, size=CANVAS[scale]).psnr
        var_l, var_s, theta = principal_axes(k)
        t_l, t_s, t_theta = principal_axes(gt)
        phi = axis_angle(np.degrees(theta), grad_deg)
        rows.append({"psnr": psnr, "gain": psnr - iso_psnr, "log_e": np.log(var_l / var_s),
                     "area": np.sqrt(var_l * var_s), "phi": phi, "true_e": t_l / t_s,
                     "true_phi": axis_angle(np.degrees(t_theta), grad_deg),
                     "edge": -np.log(var_l / var_s) * np.sin(np.radians(phi)) ** 2})
    return rows


def table_row(label: str, rows: list[dict]) -> str:
    """ρ of the measures with PSNR / gain, and the median axis angles of elongated truths."""
    col = {key: np.array([r[key] for r in rows]) for key in rows[0]}

    def rho(a: np.ndarray) -> str:
        return f"{spearmanr(a, col['psnr'])[0]:+.2f} / {spearmanr(a, col['gain'])[0]:+.2f}"

    el = col["true_e"] >= 1.5
    return (f"| {label} | {len(rows)} | **{rho(col['edge'])}** | {rho(-col['log_e'])} "
            f"| {rho(col['area'])} | {int(el.sum())} | {np.median(col['phi'][el]):.0f}° "
            f"| {np.median(col['true_phi'][el]):.0f}° |")


def report() -> str:
    sets = {"dev": ensure_devset(DEFAULT_OUT), "check": ensure_checkset()}
    lines = ["# Is a kernel elongated along the image's edges less accurate?", "",
             "`python bench/study_edge_axis.py` (module docstring: score, sets). ρ = Spearman "
             "with aligned kernel PSNR / with its gain over the isotropic Gaussian; canvas "
             f"x2 {CANVAS[2]}×{CANVAS[2]}, x4 {CANVAS[4]}×{CANVAS[4]}.", "",
             "| set | runs | ρ(edge score) | ρ(−log elongation) | ρ(area) "
             "| elongated true kernels | median angle, estimate to gradient "
             "| median angle, truth to gradient |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for scale in (2, 4):
        for label, which, store in STORES:
            runs = json.loads((DATA / store).read_text())["runs"]
            runs = {k: (v["kernel"] if isinstance(v, dict) else v) for k, v in runs.items()}
            rows = rows_for(sets[which], runs, scale)
            if len(rows) >= 3:
                lines.append(table_row(f"x{scale} {label}", rows))
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)  # --help
    text = report()
    save_text(DATA / "edge_axis_study.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
