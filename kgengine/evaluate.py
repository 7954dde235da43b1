"""The accuracy evaluation job behind ``kgengine eval`` (ALGORITHM.md sections 8-9).

Input: a folder in the DIV2KRK layout (``lr_x{s}/im_N.png``, ``gt_k_x{s}/kernel_N.mat`` with
key ``Kernel``, optionally ``gt/im_N.png`` or DIV2KRK's ``gt/img_N_gt.png``), e.g. one made by
:func:`kgengine.synth.make_div2krk_like` or the published DIV2KRK.

For every image ``N`` (or the chosen ids) and seed, the estimator runs on ``lr_x{s}/im_N.png``
(x4: ``x4=True``, the x4 kernel is derived from the x2 one). Each run is saved atomically to
``OUTDIR/runs/im_N_seed{S}.json`` (kernel, wall time, the estimator's report) and skipped
when present, so an interrupted job resumes where it stopped. One ``OUTDIR`` holds one
configuration: a run file made with another scale, iteration count or variant is refused.

Every estimate is scored against the true kernel with :func:`~kgengine.metrics.kernel_psnr`,
:func:`~kgengine.metrics.aligned_kernel_psnr` and, where the HR image exists,
:func:`~kgengine.metrics.lr_resynthesis_psnr` (with the true kernel's score as the ceiling).
Two fixed baselines are scored on the same images (see :func:`baseline_kernels`). The kernel
PSNRs of one image share one zero-padded canvas, the largest kernel of the comparison (13×13
at x2, 37×37 at x4 with the default 13×13 estimator), so that methods compare.

Outputs in ``OUTDIR``: ``results.json`` (settings, machine, every row, errors, summary),
``report.md`` (tables and plain statements) and ``kernels.png`` (true vs estimated kernels
of the worst and best images). An image that fails (unreadable file, bad kernel, estimator
error) is reported in both and skipped; the job fails only when every image fails.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kgengine.atomic import save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.errors import KGEngineError
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, bicubic_taps_x2, gaussian_kernel
from kgengine.metrics import aligned_kernel_psnr, common_size, kernel_psnr, lr_resynthesis_psnr

#: Names of the baseline methods in rows and tables.
ISO = "isotropic-1.3"
BICUBIC = "bicubic"
#: Metrics reported per row (all PSNR in dB, higher is better).
METRICS = ("kernel_psnr", "aligned_kernel_psnr", "lr_psnr")
METRIC_NAMES = {
    "kernel_psnr": "kernel PSNR",
    "aligned_kernel_psnr": "aligned kernel PSNR",
    "lr_psnr": "LR re-synthesis PSNR",
}
METRIC_TITLES = {
    "kernel_psnr": "Kernel PSNR (dB)",
    "aligned_kernel_psnr": "Aligned kernel PSNR (dB, ±1.5 px)",
    "lr_psnr": "LR re-synthesis PSNR (dB)",
}

Estimator = Callable[..., Any]
Progress = Callable[[int, int, str], None]


class ResumeMismatchError(KGEngineError):
    """``OUTDIR/runs`` holds a run made with other settings (scale, iterations, variant)."""


@dataclass(frozen=True)
class EvalImage:
    """One image of a DIV2KRK-layout dataset."""

    index: int
    name: str  # "im_N"
    lr_path: Path
    kernel_path: Path
    hr_path: Path | None


@dataclass(frozen=True)
class EvalSettings:
    """What a run depends on; stored in every run file and checked on resume."""

    scale: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)
    iters: int | None = None  # None: the config's default (3000)
    device: str = "auto"
    authors_defects: bool = False
    ids: tuple[int, ...] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """Row label of the estimator: ``kernelgan`` or ``kernelgan-authors``."""
        return "kernelgan-authors" if self.authors_defects else "kernelgan"

    def kernelgan_config(self) -> KernelGANConfig:
        """The estimator's config: authors' defects 1-3 or kgengine's fixes, plus iters."""
        cfg = KernelGANConfig.authors() if self.authors_defects else KernelGANConfig()
        if self.iters is not None:
            cfg = cfg.replace(iters=self.iters)
        return cfg


# --------------------------------------------------------------------------------- dataset
_LR_RE = re.compile(r"^im_(\d+)\.png$")


def list_dataset(
    dataset_dir: str | os.PathLike, scale: int, ids: Sequence[int] | None = None
) -> list[EvalImage]:
    """The images of a DIV2KRK-layout folder at ``scale``, sorted by index.

    Raises:
        KGEngineError: missing folders, no images, or a requested id that is absent.
    """
    root = Path(dataset_dir)
    if scale not in (2, 4):
        raise KGEngineError(f"scale must be 2 or 4, got {scale}")
    lr_dir, k_dir = root / f"lr_x{scale}", root / f"gt_k_x{scale}"
    for d in (lr_dir, k_dir):
        if not d.is_dir():
            raise KGEngineError(f"{root}: no {d.name}/ folder (expected the DIV2KRK layout)")
    found: dict[int, Path] = {}
    for p in lr_dir.iterdir():
        m = _LR_RE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        raise KGEngineError(f"{lr_dir}: no im_N.png images")
    if ids is not None:
        missing = sorted(set(ids) - set(found))
        if missing:
            raise KGEngineError(f"{lr_dir}: no image for ids {missing}")
        found = {i: found[i] for i in ids}
    out = []
    for i in sorted(found):
        hr = None
        for cand in (f"im_{i}.png", f"img_{i}_gt.png", f"img_{i}.png"):
            if (root / "gt" / cand).is_file():
                hr = root / "gt" / cand
                break
        out.append(EvalImage(i, f"im_{i}", found[i], k_dir / f"kernel_{i}.mat", hr))
    return out


def load_gt_kernel(path: str | os.PathLike) -> np.ndarray:
    """Load the true kernel from a ``.mat`` file (key ``Kernel``), normalised to sum 1.

    Raises:
        KGEngineError: ``"<path>: <problem>"`` for a missing/unreadable file or bad kernel.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise KGEngineError(f"{path}: no such kernel file")
    try:
        data = loadmat(path)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise KGEngineError(f"{path}: cannot read .mat file ({type(exc).__name__})") from None
    if "Kernel" not in data:
        raise KGEngineError(f"{path}: no 'Kernel' variable in the .mat file")
    k = np.asarray(data["Kernel"], dtype=np.float64)
    if k.ndim != 2 or min(k.shape) < 1 or not np.isfinite(k).all() or k.sum() <= 0:
        raise KGEngineError(f"{path}: 'Kernel' is not a finite 2-D kernel with positive sum")
    return k / k.sum()


# -------------------------------------------------------------------------------- baselines
def bicubic_taps(scale: int) -> np.ndarray:
    """The ``4·scale`` taps of MATLAB's antialiased bicubic downscaler by ``scale``.

    ``w[i] = cubic(x_i / s) / s`` with ``x_i = i − (2s − ½)``, ``i = 0 … 4s−1`` and Keys'
    cubic (a = −0.5); for ``s = 2`` these are :func:`kgengine.kernel.bicubic_taps_x2`.
    """
    x = (np.arange(4 * scale) - (2 * scale - 0.5)) / scale
    a = -0.5
    ax = np.abs(x)
    w = np.where(
        ax <= 1,
        (a + 2) * ax**3 - (a + 3) * ax**2 + 1,
        np.where(ax < 2, a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a, 0.0),
    )
    return w / scale


def baseline_kernels(scale: int) -> dict[str, np.ndarray]:
    """The two fixed baselines at ``scale``.

    - ``isotropic-1.3``: ``gaussian_kernel(13, 1.3)`` at x2; its ``analytic_x4`` (37×37) at
      x4 (the x4 kernel of a x2 estimator that always answers σ = 1.3).
    - ``bicubic``: ``outer(w, w)`` of :func:`bicubic_taps` (MATLAB ``imresize``), 8×8 at x2
      and 16×16 at x4. Even-sized, it is used as ``degrade`` uses it: its centre of mass lies
      half an HR pixel up-left of the convention's centre. The plain kernel PSNR counts that
      offset, the aligned PSNR removes it, the re-synthesis PSNR keeps it (it is a real
      half-pixel displacement of MATLAB's sampling grid relative to kgengine's).
    """
    iso = gaussian_kernel(13, 1.3)
    if scale == 2:
        taps = bicubic_taps_x2()
        return {ISO: iso, BICUBIC: np.outer(taps, taps)}
    if scale == 4:
        taps = bicubic_taps(4)
        return {ISO: analytic_x4(iso), BICUBIC: np.outer(taps, taps)}
    raise KGEngineError(f"scale must be 2 or 4, got {scale}")


# -------------------------------------------------------------------------------- estimating
def default_estimator() -> Estimator:
    """``kgengine.api.estimate_kernel``, imported on first use."""
    try:
        from kgengine.api import estimate_kernel
    except ImportError as exc:
        raise KGEngineError(f"the KernelGAN estimator is not available ({exc})") from None
    return estimate_kernel


def run_path(out_dir: str | os.PathLike, image: EvalImage, seed: int) -> Path:
    """Where the run of ``image`` with ``seed`` is stored."""
    return Path(out_dir) / "runs" / f"{image.name}_seed{seed}.json"


def _resolved_iters(settings: EvalSettings) -> int:
    return settings.kernelgan_config().iters


def load_run(path: Path, settings: EvalSettings) -> dict | None:
    """The stored run at ``path`` (None if absent or unreadable); refuses other settings."""
    import json

    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        kernel = np.asarray(run["kernel"], dtype=np.float64)
    except (ValueError, KeyError, TypeError):
        return None  # damaged: estimate again
    want = {"scale": settings.scale, "method": settings.method, "iters": _resolved_iters(settings)}
    got = {key: run.get(key) for key in want}
    if got != want:
        raise ResumeMismatchError(
            f"{path}: made with {got}, not {want}; use another output folder for this setting"
        )
    run["kernel"] = kernel
    return run


def estimate_run(
    image: EvalImage, seed: int, settings: EvalSettings, estimator: Estimator, out_dir: Path
) -> dict:
    """Estimate the kernel of ``image`` with ``seed`` and save the run atomically."""
    x4 = settings.scale == 4
    t0 = time.perf_counter()
    res = estimator(
        str(image.lr_path),
        x4=x4,
        iters=settings.iters,
        seed=seed,
        device=settings.device,
        config=settings.kernelgan_config(),
    )
    return save_run(image, seed, settings, res, time.perf_counter() - t0, out_dir)


def save_run(
    image: EvalImage, seed: int, settings: EvalSettings, res: Any, wall: float, out_dir: Path
) -> dict:
    """Check an estimator result and save it as the run of (image, seed), atomically."""
    x4 = settings.scale == 4
    kernel = res.kernel_x4 if x4 else res.kernel_x2
    if kernel is None:
        raise KGEngineError(f"{image.lr_path}: the estimator returned no x{settings.scale} kernel")
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or not np.isfinite(kernel).all() or kernel.sum() <= 0:
        raise KGEngineError(f"{image.lr_path}: the estimator returned an invalid kernel")
    report = dict(getattr(res, "report", {}) or {})
    run = {
        "image": image.name,
        "index": image.index,
        "seed": seed,
        "scale": settings.scale,
        "method": settings.method,
        "iters": _resolved_iters(settings),
        "wall_s": wall,
        "ms_per_iter": report.get("ms_per_iter"),
        "report": report,
        "kernel": kernel.tolist(),
    }
    save_json(run_path(out_dir, image, seed), run)
    run["kernel"] = kernel
    return run


# -------------------------------------------------------------------------------- scoring
def score_kernel(
    est: np.ndarray,
    gt: np.ndarray,
    scale: int,
    hr: np.ndarray | None = None,
    lr: np.ndarray | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """All metrics of one kernel: kernel PSNR, aligned PSNR (+ shift), re-synthesis PSNR.

    ``size`` is the kernel canvas (see :mod:`kgengine.metrics`); re-synthesis needs ``hr``
    and ``lr``, otherwise ``lr_psnr`` is None.
    """
    aligned = aligned_kernel_psnr(est, gt, size=size)
    row: dict[str, Any] = {
        "kernel_psnr": kernel_psnr(est, gt, size=size),
        "aligned_kernel_psnr": aligned.psnr,
        "aligned_shift": list(aligned.shift),
        "lr_psnr": None,
        "lr_offset": None,
    }
    if hr is not None and lr is not None:
        res = lr_resynthesis_psnr(hr, lr, est, scale)
        row["lr_psnr"], row["lr_offset"] = res.psnr, list(res.offset)
    return row


def evaluate_image(
    image: EvalImage,
    settings: EvalSettings,
    estimator: Estimator,
    out_dir: Path,
    progress: Progress | None = None,
    done: int = 0,
    total: int = 0,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Estimate (or resume) every seed of ``image`` and score it and the baselines.

    Returns:
        (rows, kernels): one row per (method, seed) and the kernels by label
        (``"gt"``, the baselines, ``"seed S"``) for the kernel grid.
    """
    gt = load_gt_kernel(image.kernel_path)
    runs = []
    for i, seed in enumerate(settings.seeds):
        run = load_run(run_path(out_dir, image, seed), settings)
        if run is None:
            run = estimate_run(image, seed, settings, estimator, out_dir)
        runs.append(run)
        if progress is not None:
            progress(done + i + 1, total, f"{image.name} seed {seed}")
    hr = lr = None
    ceiling = None
    if image.hr_path is not None:
        hr = read_image(image.hr_path)
        lr = read_image(image.lr_path)
        ceiling = lr_resynthesis_psnr(hr, lr, gt, settings.scale).psnr
    baselines = baseline_kernels(settings.scale)
    # One canvas for every method of this image, so that their kernel PSNRs compare.
    size = common_size(gt, *baselines.values(), *(run["kernel"] for run in runs))
    base = {
        "image": image.name,
        "index": image.index,
        "kernel_canvas": size,
        "lr_psnr_ceiling": ceiling,
    }
    rows: list[dict] = []
    kernels: dict[str, np.ndarray] = {"gt": gt}
    for name, k in baselines.items():
        rows.append(
            {**base, "seed": None, "method": name, "wall_s": 0.0, "ms_per_iter": None,
             **score_kernel(k, gt, settings.scale, hr, lr, size)}
        )
        kernels[name] = k
    for run in runs:
        rows.append(
            {**base, "seed": run["seed"], "method": settings.method, "wall_s": run["wall_s"],
             "ms_per_iter": run.get("ms_per_iter"),
             **score_kernel(run["kernel"], gt, settings.scale, hr, lr, size)}
        )
        kernels[f"seed {run['seed']}"] = run["kernel"]
    return rows, kernels


# ------------------------------------------------------------------------------- the job
def prefetch_runs(
    images: Sequence[EvalImage], settings: EvalSettings, out_dir: Path, batch: int,
    on_error: Callable[[str], None] | None = None,
) -> None:
    """Train the missing (image, seed) runs ``batch`` at a time in one batched model.

    The batched trainer gives the same kernels as single runs (same seeds), so this only
    changes the wall time. Failures are left for the per-image pass to report.
    """
    from kgengine.api import estimate_kernels

    todo = [(im, s) for im in images for s in settings.seeds
            if not run_path(out_dir, im, s).is_file()]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        t0 = time.perf_counter()
        try:
            results = estimate_kernels(
                [str(im.lr_path) for im, _ in chunk], seeds=[s for _, s in chunk],
                x4=settings.scale == 4, device=settings.device,
                config=settings.kernelgan_config(), on_diverge="return",
            )
        except KGEngineError as exc:  # e.g. one bad image: fall back to single runs
            if on_error is not None:
                on_error(f"batch of {len(chunk)} failed ({exc}); running them one by one")
            continue
        wall = (time.perf_counter() - t0) / len(chunk)
        for (im, s), res in zip(chunk, results, strict=True):
            if not isinstance(res, KGEngineError):
                save_run(im, s, settings, res, wall, out_dir)


def run_eval(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: EvalSettings | None = None,
    *,
    estimator: Estimator | None = None,
    progress: Progress | None = None,
    on_error: Callable[[str], None] | None = None,
    grid_images: int = 3,
    batch: int = 1,
) -> dict:
    """Run the whole evaluation and write ``results.json``, ``report.md`` and ``kernels.png``.

    Args:
        dataset_dir: a DIV2KRK-layout folder.
        out_dir: output folder (runs are resumed from ``out_dir/runs``).
        settings: scale, seeds, iters, device, variant, ids (:class:`EvalSettings`).
        estimator: ``f(lr_path, *, x4, iters, seed, device, config)`` returning an object with
            ``kernel_x2``, ``kernel_x4`` and ``report``; default
            ``kgengine.api.estimate_kernel``.
        progress: ``progress(done, total, label)`` after every (image, seed).
        on_error: called with a one-line message for every skipped image.
        grid_images: how many worst and best images the kernel grid shows.
        batch: with the default estimator, train this many (image, seed) runs at once
            (:func:`prefetch_runs`); results do not depend on it.
    Returns:
        The ``results.json`` content.
    Raises:
        KGEngineError: bad dataset folder, resume mismatch, or every image failed.
    """
    settings = settings or EvalSettings()
    out = Path(out_dir)
    images = list_dataset(dataset_dir, settings.scale, settings.ids)
    settings = EvalSettings(**{**asdict(settings), "config": settings.kernelgan_config().to_dict()})
    est = estimator
    rows: list[dict] = []
    kernels: dict[str, dict[str, np.ndarray]] = {}
    errors: list[dict] = []
    total = len(images) * len(settings.seeds)
    t_start = time.perf_counter()
    if estimator is None and batch > 1:
        prefetch_runs(images, settings, out, batch, on_error)
    for n, image in enumerate(images):
        try:
            if est is None and not _all_runs_present(out, image, settings):
                est = default_estimator()
            img_rows, img_kernels = evaluate_image(
                image, settings, est, out, progress, n * len(settings.seeds), total
            )
        except ResumeMismatchError:
            raise
        except KGEngineError as exc:
            errors.append({"image": image.name, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop a long job
            errors.append({"image": image.name, "error": f"{type(exc).__name__}: {exc}"})
        else:
            rows.extend(img_rows)
            kernels[image.name] = img_kernels
            continue
        if on_error is not None:
            on_error(f"skipped {image.name}: {errors[-1]['error']}")
        if progress is not None:
            progress((n + 1) * len(settings.seeds), total, f"{image.name} failed")
    if not rows:
        raise KGEngineError(
            f"{dataset_dir}: every image failed; first error: {errors[0]['error']}"
        )
    results = {
        "kgengine_eval": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": str(Path(dataset_dir).resolve()),
        "settings": {**asdict(settings), "method": settings.method},
        "machine": machine_info(settings.device),
        "eval_wall_s": time.perf_counter() - t_start,
        "n_images": len(kernels),
        "rows": rows,
        "errors": errors,
        "summary": summarise(rows, settings.method),
        "grid_png": "kernels.png",
    }
    write_kernel_grid(out / "kernels.png", rows, kernels, settings.method, grid_images)
    save_json(out / "results.json", results)
    save_text(out / "report.md", render_report(results))
    return results


def _all_runs_present(out: Path, image: EvalImage, settings: EvalSettings) -> bool:
    return all(run_path(out, image, s).is_file() for s in settings.seeds)


# -------------------------------------------------------------------------------- summary
def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "median": None, "worst": None, "n": 0}
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "worst": float(np.min(values)),
        "n": len(values),
    }


def summarise(rows: list[dict], method: str) -> dict:
    """Per method and metric: mean, median, worst (min) over rows; seed spread; losses.

    - ``seed_std``: for the estimator, the sample standard deviation (ddof = 1) of a metric
      across seeds of one image, averaged over images (None with one seed).
    - ``loses_to_iso``: per metric, the images whose seed-mean score is below the isotropic
      baseline's, and the (image, seed) runs below it.
    - ``lr_ceiling``: the same statistics of the true kernel's re-synthesis PSNR.
    """
    methods = [method, ISO, BICUBIC]
    out: dict[str, Any] = {"methods": {}}
    for m in methods:
        mrows = [r for r in rows if r["method"] == m]
        out["methods"][m] = {
            metric: _stats([r[metric] for r in mrows if r[metric] is not None])
            for metric in METRICS
        }
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] == method:
            by_image.setdefault(r["image"], []).append(r)
    iso = {r["image"]: r for r in rows if r["method"] == ISO}
    seed_std: dict[str, float | None] = {}
    loses: dict[str, dict] = {}
    for metric in METRICS:
        stds = []
        lost_images, lost_runs, n_images, n_runs = [], 0, 0, 0
        for name, rs in by_image.items():
            vals = [r[metric] for r in rs if r[metric] is not None]
            if len(vals) >= 2:
                stds.append(statistics.stdev(vals))
            ref = iso.get(name, {}).get(metric)
            if vals and ref is not None:
                n_images += 1
                n_runs += len(vals)
                lost_runs += sum(v < ref for v in vals)
                if float(np.mean(vals)) < ref:
                    lost_images.append(name)
        seed_std[metric] = float(np.mean(stds)) if stds else None
        loses[metric] = {
            "images": lost_images,
            "n_images": n_images,
            "runs": lost_runs,
            "n_runs": n_runs,
        }
    out["seed_std"] = seed_std
    out["loses_to_iso"] = loses
    ceilings = {r["image"]: r["lr_psnr_ceiling"] for r in rows if r["lr_psnr_ceiling"] is not None}
    out["lr_ceiling"] = _stats(list(ceilings.values()))
    walls = [r["wall_s"] for r in rows if r["method"] == method]
    ms = [r["ms_per_iter"] for r in rows if r["method"] == method and r["ms_per_iter"]]
    out["timing"] = {
        "runs": len(walls),
        "total_wall_s": float(np.sum(walls)) if walls else 0.0,
        "median_wall_s": float(np.median(walls)) if walls else None,
        "median_ms_per_iter": float(np.median(ms)) if ms else None,
        "images_per_hour": 3600.0 / float(np.mean(walls)) if walls and np.mean(walls) > 0 else None,
    }
    return out


def machine_info(device: str = "auto") -> dict[str, Any]:
    """CPU model, core count, torch version and the CUDA device (if any) of this machine."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": gpu,
        "device": device,
        "python": platform.python_version(),
    }


# -------------------------------------------------------------------------------- report
def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _share(k: int, n: int) -> str:
    return f"{k} of {n} ({100.0 * k / n:.0f} %)" if n else "– (no comparable images)"


def metric_table(summary: dict, method: str, metric: str) -> str:
    """A Markdown table of one metric: rows = methods (+ true kernel for re-synthesis)."""
    lines = [
        "| method | n | mean | median | worst | std across seeds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m, stats in summary["methods"].items():
        s = stats[metric]
        std = _fmt(summary["seed_std"][metric]) if m == method else "– (fixed)"
        lines.append(
            f"| {m} | {s['n']} | {_fmt(s['mean'])} | {_fmt(s['median'])} | {_fmt(s['worst'])} "
            f"| {std} |"
        )
    if metric == "lr_psnr" and summary["lr_ceiling"]["n"]:
        c = summary["lr_ceiling"]
        lines.append(
            f"| true kernel (ceiling) | {c['n']} | {_fmt(c['mean'])} | {_fmt(c['median'])} "
            f"| {_fmt(c['worst'])} | – |"
        )
    return "\n".join(lines)


def loss_statements(summary: dict, method: str) -> list[str]:
    """Plain sentences: on how many images/runs the estimator loses to the σ = 1.3 Gaussian."""
    out = []
    for metric in METRICS:
        lo = summary["loses_to_iso"][metric]
        if not lo["n_images"]:
            continue
        names = ", ".join(lo["images"]) if lo["images"] else "none"
        out.append(
            f"- By {METRIC_NAMES[metric]}, {method} loses to the fixed "
            f"isotropic σ = 1.3 Gaussian on {_share(len(lo['images']), lo['n_images'])} images "
            f"(mean over seeds; {names}) and in {_share(lo['runs'], lo['n_runs'])} single runs."
        )
    return out


def render_report(results: dict) -> str:
    """The Markdown report of a ``results.json`` dict."""
    st, summ, mach = results["settings"], results["summary"], results["machine"]
    method = st["method"]
    t = summ["timing"]
    hw = mach["gpu"] or f"{mach['cpu']} ({mach['cores']} cores)"
    sizes = sorted({r["kernel_canvas"] for r in results["rows"]})
    canvas = ", ".join(f"{n}×{n}" for n in sizes)
    lines = [
        f"# kgengine eval: x{st['scale']}, {method}",
        "",
        f"- Dataset: `{results['dataset']}` ({results['n_images']} images scored, "
        f"{len(results['errors'])} skipped)",
        f"- Seeds: {', '.join(str(s) for s in st['seeds'])}; iterations: "
        f"{st['config'].get('iters')}; variant: "
        f"{'authors defects 1-3' if st['authors_defects'] else 'kgengine (defects 1-3 fixed)'}",
        f"- Machine: {hw}; device `{mach['device']}`; torch {mach['torch']}",
        f"- Estimation wall time: {_fmt(t['total_wall_s'], 1)} s over {t['runs']} runs "
        f"(median {_fmt(t['median_wall_s'], 1)} s per run of one image, "
        f"{_fmt(t['median_ms_per_iter'], 1)} ms per iteration, "
        f"{_fmt(t['images_per_hour'], 1)} images per hour); whole job "
        f"{_fmt(results['eval_wall_s'], 1)} s",
        f"- Kernel PSNR canvas: {canvas} (zero-padded, the same for every method of an image)",
        f"- Created {results['created']}",
        "",
        "Higher is better everywhere. *worst* is the lowest value over all rows; *std across "
        "seeds* is the standard deviation over seeds of one image, averaged over images.",
        "",
    ]
    for metric in METRICS:
        if summ["methods"][method][metric]["n"] == 0 and metric == "lr_psnr":
            lines += [f"## {METRIC_TITLES[metric]}", "", "No `gt/` HR images: not measured.", ""]
            continue
        lines += [f"## {METRIC_TITLES[metric]}", "", metric_table(summ, method, metric), ""]
    lines += ["## Against the isotropic baseline", ""]
    lines += loss_statements(summ, method) or ["- No comparable rows."]
    lines += ["", "## Per image", ""]
    lines += per_image_table(results["rows"], method)
    if results["errors"]:
        lines += ["", "## Skipped images", ""]
        lines += [f"- {e['image']}: {e['error']}" for e in results["errors"]]
    lines += [
        "",
        f"![true vs estimated kernels, worst and best images]({results['grid_png']})",
        "",
    ]
    return "\n".join(lines)


def per_image_table(rows: list[dict], method: str) -> list[str]:
    """Per image: estimator kernel PSNR per seed, seed mean, the baselines and the ceiling."""
    lines = [
        f"| image | {method} kernel PSNR per seed | mean | aligned mean | LR PSNR mean "
        f"| {ISO} | {BICUBIC} | LR ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = sorted({r["image"] for r in rows}, key=lambda s: int(s.split("_")[1]))
    for name in names:
        rs = [r for r in rows if r["image"] == name]
        est = [r for r in rs if r["method"] == method]
        iso = next(r for r in rs if r["method"] == ISO)
        bic = next(r for r in rs if r["method"] == BICUBIC)
        per_seed = " / ".join(_fmt(r["kernel_psnr"]) for r in est)
        lr_vals = [r["lr_psnr"] for r in est if r["lr_psnr"] is not None]
        lines.append(
            f"| {name} | {per_seed} | {_fmt(_mean([r['kernel_psnr'] for r in est]))} "
            f"| {_fmt(_mean([r['aligned_kernel_psnr'] for r in est]))} "
            f"| {_fmt(_mean(lr_vals))} | {_fmt(iso['kernel_psnr'])} | {_fmt(bic['kernel_psnr'])} "
            f"| {_fmt(iso['lr_psnr_ceiling'])} |"
        )
    return lines


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def write_kernel_grid(
    path: Path,
    rows: list[dict],
    kernels: dict[str, dict[str, np.ndarray]],
    method: str,
    count: int = 3,
) -> Path:
    """PNG grid: for the ``count`` worst and ``count`` best images (by seed-mean kernel PSNR)
    a row [true, seed estimates..., isotropic baseline], captions with kernel PSNR."""
    from kgengine.plotting import kernel_grid_png

    score = {}
    for name in kernels:
        vals = [r["kernel_psnr"] for r in rows if r["image"] == name and r["method"] == method]
        score[name] = float(np.mean(vals))
    order = sorted(score, key=score.get)  # worst first
    if len(order) > 2 * count:
        order = order[:count] + order[-count:]
    grid, titles = [], []
    for rank, name in enumerate(order):
        tag = "worst" if rank < len(order) / 2 else "best"
        ks = kernels[name]
        row, tit = [ks["gt"]], [f"{name} ({tag})\ntrue"]
        for r in rows:
            if r["image"] == name and r["method"] == method:
                row.append(ks[f"seed {r['seed']}"])
                tit.append(f"seed {r['seed']}\n{_fmt(r['kernel_psnr'], 1)} dB")
        iso = next(r for r in rows if r["image"] == name and r["method"] == ISO)
        row.append(ks[ISO])
        tit.append(f"iso 1.3\n{_fmt(iso['kernel_psnr'], 1)} dB")
        grid.append(row)
        titles.append(tit)
    return kernel_grid_png(path, grid, titles)


def summary_table(results_list: Sequence[dict]) -> str:
    """One README-style Markdown table for several eval results (e.g. x2/x4, both variants).

    Columns: kernel PSNR mean, its difference to the isotropic baseline's mean, median, worst,
    aligned mean, LR PSNR mean (true kernel: the ceiling), seed std, images lost to the
    isotropic baseline, and estimation wall time.
    """
    lines = [
        "| scale | method | kernel PSNR mean | Δ vs iso | median | worst | aligned mean "
        "| LR PSNR mean | seed std | loses to iso (images) | wall time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    seen: set[tuple[int, str]] = set()  # baselines and ceiling: once per scale
    for res in results_list:
        st, summ = res["settings"], res["summary"]
        method = st["method"]
        iso_mean = summ["methods"][ISO]["kernel_psnr"]["mean"]
        for m, stats in summ["methods"].items():
            if m != method and (st["scale"], m) in seen:
                continue
            seen.add((st["scale"], m))
            k, a, lr = stats["kernel_psnr"], stats["aligned_kernel_psnr"], stats["lr_psnr"]
            delta = k["mean"] - iso_mean if k["mean"] is not None and iso_mean is not None else None
            if m == method:
                lo = summ["loses_to_iso"]["kernel_psnr"]
                lost = _share(len(lo["images"]), lo["n_images"])
                std = _fmt(summ["seed_std"]["kernel_psnr"])
                wall = f"{_fmt(summ['timing']['total_wall_s'], 0)} s"
            else:
                lost, std, wall = "–", "–", "–"
            lines.append(
                f"| x{st['scale']} | {m} | {_fmt(k['mean'])} | {_fmt(delta)} "
                f"| {_fmt(k['median'])} | {_fmt(k['worst'])} | {_fmt(a['mean'])} "
                f"| {_fmt(lr['mean'])} | {std} | {lost} | {wall} |"
            )
        c = summ["lr_ceiling"]
        if c["n"] and (st["scale"], "ceiling") not in seen:
            seen.add((st["scale"], "ceiling"))
            lines.append(
                f"| x{st['scale']} | true kernel | – | – | – | – | – | {_fmt(c['mean'])} "
                "| – | – | – |"
            )
    return "\n".join(lines)
