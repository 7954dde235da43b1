"""Study: kgengine 0.9.8 on real photos, where no kernel is known.

Why. Every accuracy figure of the README comes from synthetic LR images (DIV2KRK's recipe:
Gaussian kernels). A user runs kgengine on photos as they come out of a camera or a web
crawl. Without a true kernel, accuracy cannot be scored there, but three things can be
measured and compared with the synthetic sets, where they are known to go with accuracy:

- the **confidence** (``kgengine.confidence``; ρ +0.5 to +0.75 with the aligned kernel PSNR
  on the synthetic sets): what a real photo scores, and what ``--min-confidence 0.5`` keeps;
- the **seed agreement**: the aligned kernel PSNR between the kernels of two seeds of the
  same photo (mean over the pairs of seeds), one run and ``--restarts 4``: how reproducible a
  real photo's kernel is; and, since that PSNR depends on the kernels' width, their relative
  L2 difference (:func:`seed_difference`);
- the **kernels' shapes**: the widths and elongations found (the pool a user would build).

What. The 40 HR photos of ``../shared/data/hr`` (24 Kodak film scans, 768×512; 16 Urban100
photos, about 1024 px on the long side) taken as LR images themselves, x2, default config:
one run (3000 iterations) at seeds 0-2 and ``--restarts 4`` at seeds 0-1. The synthetic
figures are those of 0.9.8's kernels on the development set at x2 (``kgengine_v098[r4].json``,
seeds 0-2), the seed agreement computed the same way from them (restarts: seeds 0-1 only, as
here).

Run: ``python bench/study_real.py --train`` (about 50 min on 2 cores, resumable: the
kernels go to ``bench/data/real_kernels.json`` after every batch), then
``python bench/study_real.py`` -> ``bench/data/real_study.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from kgengine.atomic import save_json, save_text
from kgengine.imageio import read_image
from kgengine.kernel import principal_axes
from kgengine.metrics import aligned_kernel_psnr
from kgengine.spectral import VAR_RANGE, spectral_covariance
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_width as sw  # noqa: E402
from devset import HR_DIR  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
STORE = DATA / "real_kernels.json"
OUT = DATA / "real_study.md"
KINDS = {"one": (1, (0, 1, 2)), "r4": (4, (0, 1))}  # kind -> (restarts, seeds)
BATCH = 8  # trainings per call (a restarts call trains 4 per photo)
CANVAS = 17  # the development set's x2 canvas (bench_vs_authors.py)


def photos() -> list[Path]:
    return sorted(HR_DIR.glob("*.png"))


def load() -> dict:
    return json.loads(STORE.read_text()) if STORE.exists() else {"runs": {}}


def train() -> None:
    """Estimate every (kind, photo, seed) not stored yet, ``BATCH`` trainings per call."""
    from kgengine.api import estimate_kernels

    store = load()
    for kind, (restarts, seeds) in KINDS.items():
        for seed in seeds:
            todo = [p for p in photos() if f"{kind}/{p.stem}/s{seed}" not in store["runs"]]
            per_call = max(1, BATCH // restarts)
            for i in range(0, len(todo), per_call):
                chunk = todo[i : i + per_call]
                t0 = time.perf_counter()
                results = estimate_kernels([str(p) for p in chunk], seeds=[seed] * len(chunk),
                                           device="cpu", restarts=restarts, on_diverge="return")
                for p, res in zip(chunk, results, strict=True):
                    ok = not isinstance(res, Exception)
                    store["runs"][f"{kind}/{p.stem}/s{seed}"] = {
                        "kernel": np.round(res.kernel_x2, 9).tolist() if ok else None,
                        "confidence": res.confidence if ok else None}
                save_json(STORE, store)
                print(f"{kind} s{seed} {[p.stem for p in chunk]}: "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)


def _shape(k: np.ndarray) -> tuple[float, float]:
    """(sqrt(var_long · var_short) in px, var_long / var_short) of a kernel's moments."""
    v1, v2, _ = principal_axes(k)
    return float(np.sqrt(np.sqrt(v1 * v2))), float(v1 / v2)


def seed_agreement(kernels: dict[int, np.ndarray]) -> float | None:
    """Mean aligned kernel PSNR between the kernels of every pair of seeds (None: < 2)."""
    pairs = list(itertools.combinations(sorted(kernels), 2))
    if not pairs:
        return None
    return float(np.mean([aligned_kernel_psnr(kernels[a], kernels[b], size=CANVAS).psnr
                          for a, b in pairs]))


def seed_difference(kernels: dict[int, np.ndarray]) -> float | None:
    """Mean over the pairs of seeds of ``‖a − b‖₂ / ‖(a + b)/2‖₂`` (centred kernels, one
    canvas): the seed agreement without the PSNR's dependence on the width (the PSNR of
    sum-1 kernels of width σ falls as 20·log10 of 1/σ for the same relative error)."""
    pairs = list(itertools.combinations(sorted(kernels), 2))
    if not pairs:
        return None
    return float(np.mean([np.linalg.norm(kernels[a] - kernels[b])
                          / np.linalg.norm((kernels[a] + kernels[b]) / 2) for a, b in pairs]))


def _groups(runs: dict, kind: str, prefix: str = "") -> dict[str, dict[int, np.ndarray]]:
    out: dict[str, dict[int, np.ndarray]] = {}
    for key, run in runs.items():
        k, name, seed = key.split("/") if prefix == "" else (kind, *key.split("/")[1:])
        if prefix == "" and k != kind or run["kernel"] is None:
            continue
        out.setdefault(name, {})[int(seed[1:])] = np.asarray(run["kernel"])
    return out


def synthetic(kind: str) -> tuple[list[float], dict[str, dict[int, np.ndarray]]]:
    """The development set's x2 confidences and kernels of 0.9.8 (``kgengine_v098[r4]``)."""
    name = "v098r4" if kind == "r4" else "v098"
    runs = json.loads((DATA / f"kgengine_{name}.json").read_text())["runs"]
    x2 = {k: v for k, v in runs.items() if k.startswith("x2/")}
    conf = [v["confidence"] for v in x2.values() if v["confidence"] is not None]
    seeds = KINDS[kind][1]  # the seeds the real photos have, for the seed agreement
    groups = {n: {s: k for s, k in ks.items() if s in seeds}
              for n, ks in _groups(x2, kind, prefix="x2").items()}
    return conf, groups


def _q(v: list[float]) -> str:
    a = np.asarray(v, float)
    if a.size == 0:
        return "–"
    return f"{np.median(a):.2f} ({np.quantile(a, 0.25):.2f}-{np.quantile(a, 0.75):.2f})"


def _spectrum(images: dict[str, np.ndarray]) -> str:
    """Median width √σ₁σ₂ (px) of the spectrum's Gaussian over the images, and the share
    whose fit has its smaller variance at the clip (:data:`kgengine.spectral.VAR_RANGE`)."""
    fits = [spectral_covariance(gray, 2) for gray in images.values()]
    eig = np.array([np.linalg.eigvalsh(c) for c in fits if c is not None])
    if eig.size == 0:
        return "– | –"
    clipped = np.mean(eig[:, 0] <= VAR_RANGE[0] * (1 + 1e-9))
    return f"{np.median(np.prod(eig, axis=1) ** 0.25):.2f} | {clipped:.0%}"


def _kept(conf: list[float]) -> str:
    return f"{np.mean(np.asarray(conf) >= 0.5):.0%}" if conf else "–"


def _row(label: str, conf: list[float], g: dict[str, dict[int, np.ndarray]], fits: str) -> str:
    """One row of the table: the confidences, the kernels by image and seed, the fit cells."""
    agree = [a for a in map(seed_agreement, g.values()) if a is not None]
    diff = [a for a in map(seed_difference, g.values()) if a is not None]
    shapes = [_shape(k) for ks in g.values() for k in ks.values()]
    return (f"| {label} | {len(g)}, {len(conf)} | {_q(conf)} | {_kept(conf)} | {_q(agree)} | "
            f"{_q(diff)} | {_q([s[0] for s in shapes])} | {_q([s[1] for s in shapes])} | "
            f"{fits} |")


def report() -> str:
    runs = load()["runs"]
    lines = ["# kgengine 0.9.8 on real photos (no kernel known)", "",
             f"`python bench/study_real.py` (module docstring). {machine_line()}. The 40 HR "
             "photos of `../shared/data/hr` as LR images, x2, default config; one run at "
             "seeds 0-2, `--restarts 4` at seeds 0-1. "
             "Synthetic: 0.9.8's kernels of the development set at x2 (60 runs per kind). "
             "Medians with the quartiles in brackets.", "",
             "| runs | photos, runs | confidence | kept by `--min-confidence 0.5` | seed "
             "agreement (dB) | seed difference (relative L2) | width √σ₁σ₂ (px) | elongation "
             "σ₁²/σ₂² | the spectrum's Gaussian: width (px) | its fit at the lower clip |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    grays = {p.stem: read_image(p).mean(axis=2) for p in photos()}
    dev = json.loads((DATA / "kgengine_v098.json").read_text())["runs"]
    synth = {name: sw.lr_gray("dev", 2, name) for name in {k.split("/")[1] for k in dev}}
    for kind, label in (("one", "one run"), ("r4", "`--restarts 4`")):
        groups = _groups(runs, kind)
        for part, pick in (("Urban100", "urban"), ("Kodak", "kodim"), ("all real", "")):
            conf = [r["confidence"] for k, r in runs.items()
                    if k.startswith(f"{kind}/{pick}") and r["confidence"] is not None]
            g = {n: ks for n, ks in groups.items() if n.startswith(pick)}
            fits = _spectrum({n: v for n, v in grays.items() if n.startswith(pick)})
            lines.append(_row(f"{label}, {part}", conf, g, fits))
        conf, g = synthetic(kind)
        lines.append(_row(f"{label}, synthetic (development x2)", conf, g, _spectrum(synth)))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", action="store_true", help="estimate the runs not stored yet")
    if p.parse_args(argv).train:
        train()
        return 0
    text = report()
    save_text(OUT, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
