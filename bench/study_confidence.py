"""Study: does the LR image's gradient anisotropy predict how accurate a kernel is?

On the development set the restarts' agreement (``confidence``) did not rank runs by
accuracy (Spearman ρ ≈ 0), while the anisotropy of the LR image's global structure tensor
did (``bench/study_consensus.py``): images whose gradients share one direction (façades,
stripes) mislead KernelGAN. That was found by looking at the development set, so it is
checked here on images nobody looked at:

- **check set**: ``make_div2krk_like`` with set seed 1 (new kernels) on the 20 Kodak photos
  that are *not* in the development set and the 16 Urban100 photos (same photos, new
  kernels: content and kernel are paired afresh), x2 and x4;
- kgengine's default (one run, seed 0) on each image, kept in
  ``bench/data/check_kernels.json`` (resumable);
- per set and scale: Spearman ρ of each ground-truth-free measure with the aligned kernel
  PSNR and with its gain over the isotropic Gaussian (σ = 1.3), and, as a check for
  confounding, ρ of the true kernel's elongation with the same.

The hypothesis, written before the check set was trained: ``1 − anisotropy`` of the LR image
has ρ ≥ 0.5 with the aligned kernel PSNR on the check set at x2.

Run: ``python bench/study_confidence.py --train`` (about 16 min per scale on one core),
then ``python bench/study_confidence.py`` (writes ``bench/data/confidence_study.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.stats import spearmanr

from kgengine.atomic import save_json, save_text
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, gaussian_kernel, principal_axes
from kgengine.metrics import aligned_kernel_psnr
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import DEFAULT_OUT, HR_DIR, dev_sources, ensure_devset, ensure_set  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
CHECK_OUT = Path("bench_out/checkset")
CHECK_SEED = 1
STORE = DATA / "check_kernels.json"
CANVAS = {2: 17, 4: 37}  # as bench_vs_authors


def check_sources(hr_dir: Path = HR_DIR) -> list[Path]:
    """The Kodak photos the development set does not use, and the 16 Urban100 photos."""
    used = {p.name for p in dev_sources(hr_dir)}
    kodak = [p for p in sorted(hr_dir.glob("kodim*.png")) if p.name not in used]
    return sorted(kodak + list(hr_dir.glob("urban_*.png")))


def ensure_checkset(out: Path = CHECK_OUT, hr_dir: Path = HR_DIR) -> Path:
    """Build the check set into ``out`` unless it is there already (same sources)."""
    return ensure_set(out, check_sources(hr_dir), CHECK_SEED)


def gradient_anisotropy(gray: np.ndarray) -> float:
    """``(λ1 − λ2) / (λ1 + λ2)`` of the global structure tensor
    ``J = mean([gx², gx·gy], [gx·gy, gy²])`` of a (H, W) float image: 0 when the gradients
    point every way equally, 1 when they all share one direction."""
    gy, gx = np.gradient(gray)
    j = np.array([[np.mean(gx * gx), np.mean(gx * gy)], [np.mean(gx * gy), np.mean(gy * gy)]])
    lo, hi = np.linalg.eigvalsh(j)
    return float((hi - lo) / (hi + lo))


def elongation(k: np.ndarray) -> float:
    """``var_long / var_short`` of a kernel's second moments (:func:`principal_axes`)."""
    var_long, var_short, _ = principal_axes(k)
    return float(var_long / var_short)


def train(out: Path, scales: list[int], batch: int) -> None:
    """kgengine's default, one run (seed 0), on every check-set image not yet in the store."""
    from kgengine.api import estimate_kernels

    store = json.loads(STORE.read_text()) if STORE.exists() else {"runs": {}}
    names = [m["name"] for m in json.loads((out / "synth.json").read_text())["images"]]
    for scale in scales:
        todo = [n for n in names if f"x{scale}/{n}/s0" not in store["runs"]]
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            t0 = time.perf_counter()
            res = estimate_kernels([out / f"lr_x{scale}" / f"{n}.png" for n in chunk],
                                   seeds=[0] * len(chunk), x4=scale == 4, device="cpu",
                                   on_diverge="return")
            for n, r in zip(chunk, res, strict=True):
                k = getattr(r, "kernel_x4" if scale == 4 else "kernel_x2", None)
                store["runs"][f"x{scale}/{n}/s0"] = (
                    None if k is None else np.round(k, 9).tolist())
            store["machine"] = machine_line()
            save_json(STORE, store)
            print(f"x{scale}: {len(store['runs'])} runs "
                  f"({(time.perf_counter() - t0) / len(chunk):.0f} s/image)", flush=True)


def rows_for(setdir: Path, kernels: dict[str, list], scale: int) -> list[dict]:
    """Per (image, seed) with a kernel: its PSNR, the iso Gaussian's, and the measures."""
    iso = gaussian_kernel(13, 1.3)
    iso = analytic_x4(iso) if scale == 4 else iso
    rows, cache = [], {}
    for key, k in kernels.items():
        s, name, _ = key.split("/")
        if int(s[1:]) != scale or k is None:
            continue
        if name not in cache:
            idx = name.split("_")[1]
            gt = np.asarray(loadmat(setdir / f"gt_k_x{scale}" / f"kernel_{idx}.mat")["Kernel"])
            lr = read_image(setdir / f"lr_x{scale}" / f"{name}.png").mean(axis=2)
            cache[name] = (gt, 1.0 - gradient_anisotropy(lr), elongation(gt),
                           aligned_kernel_psnr(iso, gt, size=CANVAS[scale]).psnr)
        gt, isotropy, elong, iso_psnr = cache[name]
        p = aligned_kernel_psnr(np.asarray(k, dtype=np.float64), gt, size=CANVAS[scale]).psnr
        rows.append({"image": name, "psnr": p, "gain": p - iso_psnr, "isotropy": isotropy,
                     "elongation": elong})
    return rows


def rho_line(label: str, rows: list[dict]) -> str:
    """One table row: n, ρ(1 − anisotropy, PSNR / gain), ρ(true elongation, PSNR / gain)."""
    def rho(a: str, b: str) -> float:
        return spearmanr([r[a] for r in rows], [r[b] for r in rows])[0]

    n_img = len({r["image"] for r in rows})
    return (f"| {label} | {len(rows)} ({n_img}) | {np.mean([r['psnr'] for r in rows]):.2f} "
            f"| **{rho('isotropy', 'psnr'):+.2f}** | {rho('isotropy', 'gain'):+.2f} "
            f"| {rho('elongation', 'psnr'):+.2f} | {rho('elongation', 'gain'):+.2f} "
            f"| {rho('elongation', 'isotropy'):+.2f} |")


def report(devset: Path, checkset: Path) -> str:
    check = json.loads(STORE.read_text())["runs"] if STORE.exists() else {}
    dev_one = json.loads((DATA / "kgengine_n50.json").read_text())["runs"]
    dev_r4 = json.loads((DATA / "kgengine_n50r4.json").read_text())["runs"]

    def kernels(runs: dict) -> dict:
        return {k: v["kernel"] for k, v in runs.items()}

    lines = ["# Does the LR image's gradient anisotropy predict kernel accuracy?",
             "", "`python bench/study_confidence.py` (module docstring: sets, hypothesis). "
             "kgengine's default (0.5.1-0.5.3: the same trainer and clean-up), "
             f"3000 iterations; canvas x2 {CANVAS[2]}×{CANVAS[2]}, "
             f"x4 {CANVAS[4]}×{CANVAS[4]}. Machine: {machine_line()}.", "",
             "| set, scale, runs | runs (images) | mean aligned kernel PSNR "
             "| ρ(1 − anisotropy, PSNR) | ρ(1 − anisotropy, gain over iso) "
             "| ρ(true elongation, PSNR) | ρ(true elongation, gain) "
             "| ρ(true elongation, 1 − anisotropy) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for scale in (2, 4):
        for label, setdir, runs in (
                (f"development set x{scale}, one run (seeds 0-2)", devset, kernels(dev_one)),
                (f"development set x{scale}, `--restarts 4`", devset, kernels(dev_r4)),
                (f"**check set** x{scale}, one run (seed 0)", checkset, check)):
            rows = rows_for(setdir, runs, scale)
            if len(rows) >= 3:
                lines.append(rho_line(label, rows))
    lines += ["", "ρ over runs; the development set has 3 seeds of each image, so its runs "
              "are not independent (16-20 images).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", action="store_true", help="first train the check set's runs")
    p.add_argument("--scales", default="2,4")
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args(argv)
    checkset = ensure_checkset()
    if args.train:
        train(checkset, [int(s) for s in args.scales.split(",")], args.batch)
    text = report(ensure_devset(DEFAULT_OUT), checkset)
    save_text(DATA / "confidence_study.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
