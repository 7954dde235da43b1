"""Study: the authors' code against kgengine on kernels that are not Gaussians.

Why. kgengine's comparison with the authors' code (``bench/bench_vs_authors.py``) uses
Gaussian kernels only, the family of the spectrum's closed-form fit that kgengine mixes into
its saved kernel. So "kgengine is ahead of the authors' code" was measured only where that
fit's model is true. ``bench/study_shapes.py``'s images (16 Urban100 crops, x2, each degraded
by a defocus disc, a motion segment and a lens halo) test it where the model is false; until
now kgengine ran there alone.

What. The authors' KernelGAN (the reference, built by ``../shared/baseline/build.sh``) runs
once per (shape, image) at seed 0, 3000 iterations, one thread per run, on the LR image saved
as an 8-bit PNG (``bench/run_authors.py``'s runner). Its kernels (their own clean-up
included) are kept in ``bench/data/shapes_authors.json``, rewritten atomically after every
run, so a killed job loses at most the runs in flight and the next call goes on. Jobs go image
by image, the three shapes of an image together, so a partial store covers every shape.

Scored against the true kernel (aligned kernel PSNR, 17×17 canvas, as in
``bench/study_shapes.py``), on the images the reference ran on:

- the authors' code;
- kgengine's training with the authors' clean-up (n = 40) and nothing else (3000 iterations,
  seed 0; raw kernels of ``bench/data/shapes_kernels.json``): is the training faithful on
  these shapes too?
- kgengine, one run as ``estimate`` trains it today (``--stop auto``, seed 0; raw kernels of
  ``bench/data/shapes_kernels_auto.json``, the API's post-processing);
- kgengine ``--restarts 4`` (seed 0, restarts of 1250 iterations; raw kernels of
  ``bench/data/restart_shapes.json``);
- the fixed isotropic σ = 1.3 Gaussian.

Each is also scored by LR re-synthesis PSNR (the HR crop degraded by the kernel against the
LR image, :func:`kgengine.metrics.lr_resynthesis_psnr`), beside the true kernel's (the
ceiling).

Run: ``python bench/study_shapes_authors.py --baseline /tmp/kg_ref [--images N]
[--workers 2]`` (8-12 min per run on one core; two at a time), then
``python bench/study_shapes_authors.py`` -> ``bench/data/shapes_authors.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kgengine.api import finish_kernel, restart_seed
from kgengine.atomic import save_json, save_text
from kgengine.kernel import center_kernel, gaussian_kernel
from kgengine.metrics import lr_resynthesis_psnr
from kgengine.sysinfo import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_restart_cleanup as rc  # noqa: E402
import study_restart_shapes as rs  # noqa: E402
import study_shapes as sh  # noqa: E402
from study_stop import api_result  # noqa: E402

STORE = sh.DATA / "shapes_authors.json"
OUT = sh.DATA / "shapes_authors.md"


def jobs(n_images: int) -> list[tuple[str, int]]:
    """(shape, image index): image by image, the three shapes of an image together."""
    return [(s, i) for i in range(min(n_images, len(sh.images()))) for s in sh.SHAPES]


def key_of(shape: str, i: int) -> str:
    return f"{shape}/{sh.images()[i].stem}"


def run_reference(baseline: Path, n_images: int, workers: int) -> None:
    """The reference on every job of :func:`jobs` not stored yet, ``workers`` at a time."""
    note = ("the authors' KernelGAN (../shared/baseline, sefibk/KernelGAN) on "
            "bench/study_shapes.py's LR images, seed 0, 3000 iterations; kernels as its "
            ".mat files give them (x2)")
    stored = json.loads(STORE.read_text())["runs"] if STORE.exists() else {}
    todo = [j for j in jobs(n_images) if key_of(*j) not in stored]
    run_references(baseline, STORE, note, 2, workers,
                   [(key_of(s, i), lambda s=s, i=i: sh.lr_image(s, i, sh.images()[i]))
                    for s, i in todo])


def run_references(baseline: Path, store_path: Path, note: str, scale: int, workers: int,
                   todo: list[tuple[str, Callable[[], np.ndarray]]]) -> None:
    """The reference (seed 0, 3000 iterations, one thread) at ``scale`` on each (key, a
    function making the LR image) of ``todo``, ``workers`` at a time, each record added to
    the JSON store ``store_path`` (made with ``note``) as it comes, atomically."""
    from PIL import Image
    from run_authors import run_one

    lock = threading.Lock()
    if not store_path.exists():
        save_json(store_path, {"note": note, "runs": {}})

    def one(job: tuple[str, Path]) -> None:
        key, png = job
        record = run_one(baseline, png, scale, 0, 3000)
        with lock:
            current = json.loads(store_path.read_text())
            current["runs"][key] = record
            save_json(store_path, current)
            print(f"{key} done in {record['seconds']} s ({len(current['runs'])} stored)",
                  flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        items = []
        for key, make in todo:  # here, not in the threads: Numba's workqueue is not thread-safe
            png = Path(tmp) / f"{key.replace('/', '_')}.png"
            Image.fromarray(np.round(make() * 255).astype(np.uint8)).save(png)
            items.append((key, png))
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, items))


#: The estimators scored, in the tables' order.
COLUMNS = ("authors", "faithful", "one", "restarts", "iso")


def kgengine_stores() -> tuple[dict, dict, dict]:
    """kgengine's stored raw kernels, read once: the restarts (``bench/study_restart_shapes.py``),
    the one runs of ``--stop auto`` and of 3000 iterations (``bench/study_shapes.py``)."""
    return tuple(json.loads(path.read_text())["runs"]
                 for path in (rs.STORE, sh.STORE_AUTO, sh.STORE))


def score(key: str, record: dict, stores: tuple[dict, dict, dict]) -> dict | None:
    """One (shape, image): for each of :data:`COLUMNS` (the reference, kgengine's training
    with the authors' clean-up, kgengine's one run and restarts, σ 1.3) its aligned kernel
    PSNR and its LR re-synthesis PSNR (``<column>_lr``), and the true kernel's LR
    re-synthesis PSNR (``truth_lr``, the ceiling) and the reference's kernel's after
    re-centring (``centred_lr``: it saves its kernels half a pixel off the middle, which
    the aligned kernel PSNR forgives and a degradation does not); None where kgengine's
    restarts or one run are not stored, or a restart diverged. ``stores``:
    :func:`kgengine_stores`."""
    shape, stem = key.split("/")
    group, one, full = stores[0].get(f"{key}/s0"), stores[1].get(key), stores[2].get(key)
    if group is None or one is None or full is None or any(k is None for k in group["1250"]):
        return None
    i = [p.stem for p in sh.images()].index(stem)
    truth, lr = sh.shape_kernel(shape, i), rs.lr_of(shape, i)
    kernels = {
        "authors": np.asarray(record["kernel"]),
        "faithful": finish_kernel(np.asarray(full), 40),
        "one": api_result([one["raw"]], lr, [0], one["iters_used"], False).kernel_x2,
        "restarts": api_result(group["1250"], lr, [restart_seed(0, r) for r in range(rs.K)],
                               1250, False).kernel_x2,
        "iso": gaussian_kernel(13, 1.3)}
    hr = sh.hr_crop(sh.images()[i])
    out: dict = {"shape": shape,
                 "truth_lr": lr_resynthesis_psnr(hr, lr, truth, 2).psnr}
    for name, k in kernels.items():
        out[name] = rc._psnr(k, truth, 2)
        out[f"{name}_lr"] = lr_resynthesis_psnr(hr, lr, k, 2).psnr
    out["centred_lr"] = lr_resynthesis_psnr(hr, lr, center_kernel(kernels["authors"]), 2).psnr
    return out


def _paired(a: np.ndarray, b: np.ndarray) -> str:
    d = a - b
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return f"{d.mean():+.2f} ± {se:.2f}"


def kernel_table(rows: list[dict]) -> list[str]:
    lines = ["| kernel | images | authors' code | kgengine's training, the authors' clean-up "
             "(− authors ± SE) | kgengine one run | one − authors (± SE) | "
             "kgengine `--restarts 4` | restarts − authors (± SE) | isotropic σ = 1.3 | "
             "below σ 1.3: authors / one / restarts |", "|---|---:|---:|---:|---:|---:|---:|"
             "---:|---:|---:|"]
    for shape in (*sh.SHAPES, "all"):
        sel = [r for r in rows if shape in ("all", r["shape"])]
        if not sel:
            continue
        col = {c: np.array([r[c] for r in sel]) for c in COLUMNS}
        below = " / ".join(str(int((col[c] < col["iso"]).sum()))
                           for c in ("authors", "one", "restarts"))
        lines.append(f"| {shape} | {len(sel)} | {col['authors'].mean():.2f} | "
                     f"{col['faithful'].mean():.2f} "
                     f"({_paired(col['faithful'], col['authors'])}) | "
                     f"{col['one'].mean():.2f} | {_paired(col['one'], col['authors'])} | "
                     f"{col['restarts'].mean():.2f} | "
                     f"{_paired(col['restarts'], col['authors'])} | {col['iso'].mean():.2f} | "
                     f"{below} |")
    return lines


def resynthesis_table(rows: list[dict]) -> list[str]:
    lines = ["| kernel | images | the true kernel (ceiling) | authors' code, as saved | "
             "authors' code, re-centred | kgengine's training, the authors' clean-up (− "
             "re-centred authors ± SE) | kgengine one run (− ditto) | kgengine `--restarts 4` "
             "(− ditto) | isotropic σ = 1.3 (− ditto) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for shape in (*sh.SHAPES, "all"):
        sel = [r for r in rows if shape in ("all", r["shape"])]
        if not sel:
            continue
        col = {c: np.array([r[f"{c}_lr"] for r in sel])
               for c in (*COLUMNS, "truth", "centred")}
        cells = [f"{col[c].mean():.2f} ({_paired(col[c], col['centred'])})"
                 for c in ("faithful", "one", "restarts", "iso")]
        lines.append(f"| {shape} | {len(sel)} | {col['truth'].mean():.2f} | "
                     f"{col['authors'].mean():.2f} | {col['centred'].mean():.2f} | "
                     + " | ".join(cells) + " |")
    return lines


def report() -> str:
    runs = json.loads(STORE.read_text())["runs"]
    stores = kgengine_stores()
    scored = {k: score(k, v, stores) for k, v in runs.items()}
    rows = [r for r in scored.values() if r is not None]
    per = ["| run | authors' code | kgengine's training, the authors' clean-up | one run | "
           "restarts | σ 1.3 | LR re-synthesis: authors / one run / restarts / σ 1.3 |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    per += [f"| {k} | {r['authors']:.2f} | {r['faithful']:.2f} | {r['one']:.2f} | "
            f"{r['restarts']:.2f} | {r['iso']:.2f} | "
            + " / ".join(f"{r[f'{c}_lr']:.2f}" for c in ("authors", "one", "restarts", "iso"))
            + " |" for k, r in scored.items() if r is not None]
    seconds = [v["seconds"] for v in runs.values()]
    machine = next(iter(runs.values()))["machine"] if runs else "-"
    return "\n".join([
        "# The authors' code against kgengine on kernels that are not Gaussians", "",
        "`python bench/study_shapes_authors.py` (module docstring). Aligned kernel PSNR "
        "(17×17 canvas), seed 0 of every run; ± the standard error of the paired "
        "differences. kgengine's kernels are the stored ones of `bench/study_shapes.py "
        "--train-auto` (one run) and `bench/study_restart_shapes.py` (restarts of 1250); "
        f"scored on {machine_line()}.", "", *kernel_table(rows), "",
        "## LR re-synthesis PSNR", "",
        "The same kernels: the HR crop degraded by each kernel against the LR image, at the "
        "best sub-sampling phase, 8 LR px shaved "
        "(`kgengine.metrics.lr_resynthesis_psnr`); the true kernel's score is the ceiling "
        "(8-bit quantisation of the LR image). The reference saves its kernels half a pixel "
        "off the middle (the aligned kernel PSNR forgives that, a degradation does not; "
        "`kgengine pool import` re-centres such kernels): Δ is against its re-centred "
        "kernel.", "", *resynthesis_table(rows), "",
        "The authors' code: `SEED=0 ITERS=3000 THREADS=1 BASELINE_DIR=... "
        "../shared/baseline/run.sh IMG OUT` on each LR image (an 8-bit PNG), "
        f"{np.mean(seconds) if seconds else float('nan'):.0f} s per run on {machine}, "
        "2 runs at a time.", "", "## Per run", "", *per, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, default=None,
                   help="run the reference (folder made by ../shared/baseline/build.sh)")
    p.add_argument("--images", type=int, default=16, help="the first N images (all 16)")
    p.add_argument("--workers", type=int, default=2, help="reference runs at once")
    a = p.parse_args(argv)
    if a.baseline is not None:
        run_reference(a.baseline, a.images, a.workers)
    save_text(OUT, report())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
