"""Study: do crops with gradients in every direction give KernelGAN a better kernel axis?

Why. On several development images both kgengine and the authors' code get the kernel's long
axis wrong at every seed (docs/HISTORY.md, "How far any combination rule could go"). Blur along an
edge is invisible: a crop whose gradients all point one way constrains the kernel across that
edge only. The authors' crop map favours strong ``|∂x|``, ``|∂y|`` and gradient magnitude, so
on images dominated by one edge direction (buildings) most crops say little about the other.

What. The same trainer, with the crop map built from the smaller eigenvalue of the local
structure tensor (Shi-Tomasi "cornerness") instead of the gradient magnitudes:
``J = box_w * [[gx², gx·gy], [gx·gy, gy²]]``, ``λ_min = (a + c)/2 − √(((a − c)/2)² + b²)``,
normalised to mean 1, then the authors' crop blur and border (``kgengine.probmap.crop_map``).
It patches ``kgengine.probmap.gradient_map`` in this process only. One run per (image, seed),
the shipped clean-up (n = 50, β = 0.4), scored against the authors' stored kernels and
kgengine 0.9's shipped kernels of the same (image, seed) (``bench/data/kgengine_v09.json``:
another sample of the shipped trainer, on another host, so the pairing removes the images'
difficulty, not the chaos).

Run::

    OMP_NUM_THREADS=1 python bench/study_crop_map.py --train --part 0/2 &
    OMP_NUM_THREADS=1 python bench/study_crop_map.py --train --part 1/2
    python bench/study_crop_map.py        # -> bench/data/crop_map_study.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import kgengine.probmap as probmap
from kgengine.api import estimate_kernels, finish_restarts
from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.kernel import analytic_x4, axis_difference, gaussian_kernel, principal_axes
from kgengine.metrics import aligned_kernel_psnr
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
from devset import DEFAULT_OUT, ensure_devset  # noqa: E402
from study_elongation import truth  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
CANVAS = {2: 17, 4: 37}
VARIANTS = ("shipped", "corner")
SHIPPED = DATA / "kgengine_v09.json"
OUT = DATA / "crop_map_study.md"


def corner_map(img: np.ndarray, window: int = 5, percent: float = 0.97,
               clip_magnitude: bool = False) -> np.ndarray:
    """Mean-1 map of the structure tensor's smaller eigenvalue of an (H, W, 3) image (the
    signature of :func:`kgengine.probmap.gradient_map`; ``percent`` and ``clip_magnitude``
    unused)."""
    grey = img @ np.array([0.299, 0.587, 0.114])
    gy, gx = np.gradient(grey)
    a, b, c = (ndimage.uniform_filter(v, size=window, mode="constant")
               for v in (gx * gx, gx * gy, gy * gy))
    lam = np.clip((a + c) / 2 - np.sqrt(((a - c) / 2) ** 2 + b * b), 0.0, None)
    lam = probmap._zero_border(lam, window)
    mean = lam.mean()
    return lam / mean if mean > 0 else np.ones_like(lam)


def store_path(variant: str, part: str | None = None) -> Path:
    suffix = f"_part{part.replace('/', 'of')}" if part else ""
    return DATA / f"raw_cropmap_{variant}{suffix}.json"


def jobs(scales: tuple[int, ...] = (2, 4), seeds: tuple[int, ...] = (0, 1, 2)):
    names = [f"im_{i}" for i in range(1, 21)]
    return [(sc, n, s) for s in seeds for sc in scales for n in names]


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def train(variant: str, part: str, batch: int = 4) -> None:
    root = ensure_devset()
    if variant == "corner":
        probmap.gradient_map = corner_map
    i, m = (int(v) for v in part.split("/"))
    path = store_path(variant, part if m > 1 else None)
    store = json.loads(path.read_text()) if path.exists() else {
        "note": f"raw kernels, one run, crop map {variant!r}, bench/study_crop_map.py",
        "runs": {}}
    done = set(store["runs"]) | {k for f in DATA.glob(f"raw_cropmap_{variant}*.json")
                                 for k in json.loads(f.read_text())["runs"]}
    todo = [j for k, j in enumerate(jobs()) if k % m == i
            and f"x{j[0]}/{j[1]}/s{j[2]}" not in done]
    chunks = [c for sc in (2, 4) for c in _chunks([j for j in todo if j[0] == sc], batch)]
    for chunk in chunks:
        sc = chunk[0][0]
        t0 = time.perf_counter()
        res = estimate_kernels([root / f"lr_x{sc}" / f"{n}.png" for _, n, _ in chunk],
                               seeds=[s for _, _, s in chunk], device="cpu",
                               on_diverge="return")
        for (sc_, n, s), out in zip(chunk, res, strict=True):
            raw = getattr(out, "raw_kernel", None)
            store["runs"][f"x{sc_}/{n}/s{s}"] = None if raw is None else np.round(
                raw, 12).tolist()
        save_json(path, store)
        print(f"{variant}: {len(store['runs'])} runs ({time.perf_counter() - t0:.0f} s)",
              flush=True)


def load(variant: str) -> dict[str, np.ndarray]:
    runs: dict = {}
    for p in sorted(DATA.glob(f"raw_cropmap_{variant}*.json")):
        runs.update(json.loads(p.read_text())["runs"])
    return {k: np.asarray(v) for k, v in runs.items() if v is not None}


def _diff(d: np.ndarray) -> str:
    return f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(d.size):.2f}" if d.size > 1 else "–"


def score() -> str:
    cfg = KernelGANConfig()
    authors = json.loads((DATA / "authors_kernels.json").read_text())["runs"]
    corner = load("corner")
    shipped = {k: np.asarray(v["kernel"]) for k, v in
               json.loads(SHIPPED.read_text())["runs"].items() if v and v.get("kernel")}
    keys = sorted(set(shipped) & set(corner))
    lines = ["# Crop map: gradient magnitudes (shipped) or cornerness\n",
             "`python bench/study_crop_map.py` (module docstring). One run per (image, seed), "
             "3000 iterations, the shipped clean-up; aligned kernel PSNR, Δ ± SE of the paired "
             f"differences. Machine: {machine_line('cpu')}.\n"]
    for sc in (2, 4):
        rows = []
        for key in (k for k in keys if k.startswith(f"x{sc}/")):
            name = key.split("/")[1]
            gt = truth(DEFAULT_OUT, sc, name)
            row = {"iso": aligned_kernel_psnr(analytic_x4(gaussian_kernel(13, 1.3)) if sc == 4
                                              else gaussian_kernel(13, 1.3), gt,
                                              size=CANVAS[sc]).psnr}
            k2, _, _ = finish_restarts([corner[key]], cfg.n_filtering,
                                       elongation_power=cfg.elongation_power)
            row["corner"] = aligned_kernel_psnr(analytic_x4(k2) if sc == 4 else k2, gt,
                                                size=CANVAS[sc]).psnr
            row["shipped"] = aligned_kernel_psnr(shipped[key], gt, size=CANVAS[sc]).psnr
            if key in authors:
                row["authors"] = aligned_kernel_psnr(np.asarray(authors[key]["kernel"]), gt,
                                                     size=CANVAS[sc]).psnr
            rows.append(row)
        if not rows:
            continue
        lines += [f"\n## x{sc} ({len(rows)} runs)\n",
                  "| crop map | mean | Δ vs shipped | Δ vs authors' code | runs below iso |",
                  "|---|---:|---:|---:|---:|"]
        for v in ("authors",) + VARIANTS:
            sub = [r for r in rows if v in r]
            d_ship = np.array([r[v] - r["shipped"] for r in sub])
            d_auth = np.array([r[v] - r["authors"] for r in sub if "authors" in r])
            lines.append(f"| {v} | {np.mean([r[v] for r in sub]):.2f} | {_diff(d_ship)} | "
                         f"{_diff(d_auth)} | {sum(r[v] < r['iso'] for r in sub)} |")
    lines += ["", axis_line(corner, authors)]
    return "\n".join(lines) + "\n"


def axis_line(corner: dict[str, np.ndarray], authors: dict) -> str:
    """How often the long axis is > 30° off, x2, on the runs with an elongated true kernel
    (var1 ≥ 1.5·var2): the corner map, kgengine 0.7's kernels (``kgengine_v07.json``: the
    shipped trainer before the elongation shrink, which keeps the axis) and the authors'."""
    cfg = KernelGANConfig()
    v07 = {k: np.asarray(v["kernel"]) for k, v in
           json.loads((DATA / "kgengine_v07.json").read_text())["runs"].items()
           if v and v.get("kernel")}
    errors: dict[str, list[float]] = {"corner map": [], "shipped (0.7)": [], "authors' code": []}
    for key in sorted(k for k in corner if k.startswith("x2/")):
        name = key.split("/")[1]
        gt = truth(DEFAULT_OUT, 2, name)
        t1, t2, t_theta = principal_axes(gt)
        if t1 < 1.5 * t2:
            continue
        found = {"corner map": finish_restarts([corner[key]], cfg.n_filtering)[0],
                 "shipped (0.7)": v07.get(key),
                 "authors' code": np.asarray(authors[key]["kernel"]) if key in authors else None}
        for label, k in found.items():
            if k is not None:
                errors[label].append(np.degrees(axis_difference(t_theta, principal_axes(k)[2])))
    return "Long axis more than 30° off, x2, runs with an elongated true kernel: " + "; ".join(
        f"{label} {int((np.asarray(e) > 30).sum())} of {len(e)} (median {np.median(e):.0f}°)"
        for label, e in errors.items()) + "."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", action="store_true")
    p.add_argument("--part", default="0/1")
    a = p.parse_args(argv)
    if a.train:
        train("corner", a.part)
        return 0
    text = score()
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
