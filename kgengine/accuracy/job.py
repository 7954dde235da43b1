"""The accuracy job behind ``kgengine eval`` (docs/ALGORITHM.md sections 8-9).

For every image ``N`` of a DIV2KRK-layout folder (or the chosen ids) and every seed, the
estimator runs on ``lr_x{s}/im_N.png`` (x4: the x4 kernel is derived from the x2 one). The
job goes in four passes:

1. load the true kernels (an image whose kernel is unusable is skipped);
2. resume: load the finished runs from ``OUTDIR/runs`` (:class:`RunStore`; a run made with
   another scale, iteration count, variant or number of restarts is refused);
3. estimate the missing (image, seed) runs, ``batch`` at a time, through the one
   :class:`~kgengine.accuracy.estimators.BatchEstimator` protocol, saving each run at once;
4. score every image and both baselines (:func:`~kgengine.accuracy.scoring.score_image`).

With ``restarts = K > 1`` every run trains K seeds of its image and combines them
(:func:`kgengine.api.estimate_kernels`). Each row records the run's ``confidence`` (where the
estimator gives one) and the summary adds the Spearman rank correlation between confidence
and aligned kernel PSNR
(:func:`~kgengine.accuracy.summary.confidence_correlation`).

Outputs in ``OUTDIR``: ``results.json`` (settings, machine, every row, errors, summary),
``report.md`` and ``kernels.png``. An image that fails (unreadable file, bad kernel,
estimator error) is reported in both and skipped; the job fails only when every image fails.
Progress goes to a :class:`~kgengine.hooks.JobHooks`: one item per (image, seed) run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kgengine.accuracy.dataset import EvalImage, list_dataset, load_gt_kernel
from kgengine.accuracy.estimators import BatchEstimator, KernelResult, default_estimator
from kgengine.accuracy.report import render_report, write_kernel_grid
from kgengine.accuracy.runs import RunStore
from kgengine.accuracy.scoring import score_image
from kgengine.accuracy.summary import summarise
from kgengine.atomic import exclusive_lock, remove_stale_tmp, save_json, save_text
from kgengine.config import KernelGANConfig
from kgengine.errors import BadImageError, KGEngineError
from kgengine.hooks import JobHooks
from kgengine.sysinfo import machine_info

#: One ``eval`` at a time writes into an output folder (:func:`exclusive_lock`).
LOCK_FILE = ".eval.lock"

RunKey = tuple[str, int]  # (image name, seed)


@dataclass(frozen=True)
class EvalSettings:
    """What a run depends on; stored in ``results.json`` and checked on resume.

    Attributes:
        scale: 2 or 4.
        seeds: estimator seeds; the spread across seeds is reported.
        iters: training iterations; None: the config's default (3000).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        authors_defects: the authors' code defects 1-3 (the default since 0.2; kept for
            scripts, the same as ``False``).
        fix_defects: fix defects 1-3 (kgengine 0.1's default; measured worse).
        ids: only these image numbers (None: all).
        config: the resolved :class:`KernelGANConfig` as a dict (filled in by :func:`run_eval`).
        restarts: trainings per run (K ≥ 1), combined into its kernel with a confidence.
        stop: "full" (every iteration) or "auto" (stop each training once its kernel stopped
            changing, :class:`kgengine.stopping.StopRule`); passed to the estimator only when
            not "full", so an estimator without early stopping works unchanged (the default
            here; ``kgengine eval``, which runs KernelGAN, defaults to "auto" since 0.9.12, as
            ``estimate`` does).
    """

    scale: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)
    iters: int | None = None
    device: str = "auto"
    authors_defects: bool = False
    fix_defects: bool = False
    ids: tuple[int, ...] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    restarts: int = 1
    stop: str = "full"

    @property
    def method(self) -> str:
        """Row label of the estimator: ``kernelgan`` or ``kernelgan-fixed`` (defects fixed),
        with ``-restarts<K>`` appended for K > 1 and ``-stopauto`` with ``stop="auto"``."""
        label = "kernelgan-fixed" if self.fix_defects else "kernelgan"
        label = label if self.restarts == 1 else f"{label}-restarts{self.restarts}"
        return label if self.stop == "full" else f"{label}-stop{self.stop}"

    def kernelgan_config(self) -> KernelGANConfig:
        """The estimator's config: the default (authors' defects 1-3) or their fixes, plus
        iters."""
        cfg = KernelGANConfig.defects_fixed() if self.fix_defects else KernelGANConfig()
        if self.iters is not None:
            cfg = cfg.with_iters(self.iters)
        return cfg

    def run_identity(self) -> dict[str, Any]:
        """What every stored run must share: ``scale``, ``method``, resolved ``iters``,
        ``restarts``, ``stop``, the kernel clean-up's n (``n_filtering``: the one applied,
        :meth:`KernelGANConfig.clean_n`), ``elongation_power`` and the width calibration
        (``width_prior``: None when it is off) and whether it chose the elongation
        (``elongation_choice``, :meth:`KernelGANConfig.chooses_elongation`), the spectral
        mix's weight (``spectral_mix``), the confidence's rule (``spectral_confidence``) and
        whether the calibration's scale was refined (``width_refine``: False when it is
        off) and its pull released on sharp spectra (``width_release``: False when it is
        off), and whether the clean-up's n is lowered on sharp spectra (``clean_release``)."""
        cfg = self.kernelgan_config()
        return {"scale": self.scale, "method": self.method,
                "iters": cfg.run_iters(self.restarts),
                "restarts": self.restarts, "stop": self.stop,
                "n_filtering": cfg.clean_n(self.restarts),
                "elongation_power": cfg.elongation_power,
                "width_prior": cfg.width_prior if cfg.width_calibration else None,
                "elongation_choice": cfg.chooses_elongation(),
                "spectral_mix": cfg.spectral_mix,
                "spectral_confidence": cfg.spectral_confidence,
                "width_refine": cfg.width_calibration and cfg.width_refine,
                "width_release": cfg.width_calibration and cfg.width_release,
                "clean_release": cfg.clean_release}


def run_eval(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: EvalSettings | None = None,
    *,
    estimator: BatchEstimator | None = None,
    hooks: JobHooks | None = None,
    grid_images: int = 3,
    batch: int = 1,
) -> dict[str, Any]:
    """Run the whole evaluation and write ``results.json``, ``report.md`` and ``kernels.png``.

    Args:
        dataset_dir: a DIV2KRK-layout folder.
        out_dir: output folder (runs are resumed from ``out_dir/runs``).
        settings: scale, seeds, iters, device, variant, ids, restarts (:class:`EvalSettings`).
        estimator: a :class:`~kgengine.accuracy.estimators.BatchEstimator`; default KernelGAN
            (:func:`~kgengine.accuracy.estimators.default_estimator`). Wrap a one-image
            estimator with :func:`~kgengine.accuracy.estimators.per_image`.
        hooks: progress (one item per (image, seed) run) and messages (skipped images).
        grid_images: how many worst and best images the kernel grid shows.
        batch: hand the estimator this many (image, seed) runs at once; results do not
            depend on it, only the wall time.
    Returns:
        The ``results.json`` content.
    Raises:
        KGEngineError: bad dataset folder, ``batch`` or ``restarts`` below 1, resume
            mismatch, or every image failed.
    """
    settings = settings or EvalSettings()
    hooks = hooks or JobHooks()
    if batch < 1:
        raise KGEngineError(f"batch must be at least 1, got {batch}")
    if settings.restarts < 1:
        raise KGEngineError(f"restarts must be at least 1, got {settings.restarts}")
    if settings.stop not in ("full", "auto"):
        raise KGEngineError(f"stop: expected full or auto, got {settings.stop!r}")
    images = list_dataset(dataset_dir, settings.scale, settings.ids)
    settings = replace(settings, config=settings.kernelgan_config().to_dict())
    out = Path(out_dir)
    with exclusive_lock(out, LOCK_FILE, "another kgengine eval is writing into this folder"):
        for folder in (out, out / "runs"):  # a run killed mid-write (SIGKILL) left them
            remove_stale_tmp(folder)
        return _evaluate(dataset_dir, out, settings, images, estimator, hooks, grid_images,
                         batch)


def _evaluate(dataset_dir: str | os.PathLike, out: Path, settings: EvalSettings,
              images: list[EvalImage], estimator: BatchEstimator | None, hooks: JobHooks,
              grid_images: int, batch: int) -> dict[str, Any]:
    """:func:`run_eval` holding the output folder's lock, from its resume on."""
    t_start = time.perf_counter()
    store = RunStore(out, settings.run_identity())
    gts, errors = _load_true_kernels(images)
    usable = [im for im in images if im.name in gts]
    est = _Estimation(settings, store, estimator or default_estimator(), hooks)
    todo = est.resume(usable)
    for start in range(0, len(todo), batch):
        est.chunk(todo[start : start + batch])
    rows, kernels = _score(images, gts, est, errors)
    if not rows:
        first = next(iter(errors.values()))
        raise KGEngineError(f"{dataset_dir}: every image failed; first error: {first}")
    results = {
        "kgengine_eval": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": str(Path(dataset_dir).resolve()),
        "settings": {**asdict(settings), "method": settings.method},
        "machine": machine_info(settings.device),
        "eval_wall_s": time.perf_counter() - t_start,
        "n_images": len(kernels),
        "rows": rows,
        "errors": [{"image": im.name, "error": errors[im.name]} for im in images
                   if im.name in errors],
        "summary": summarise(rows, settings.method),
        "grid_png": "kernels.png",
    }
    write_kernel_grid(out / "kernels.png", rows, kernels, settings.method, grid_images)
    save_json(out / "results.json", results)
    save_text(out / "report.md", render_report(results))
    return results


def describe(exc: BaseException) -> str:
    """One line for a failed image: a :class:`KGEngineError`'s message, else ``Type: message``."""
    return str(exc) if isinstance(exc, KGEngineError) else f"{type(exc).__name__}: {exc}"


def _load_true_kernels(images: Sequence[EvalImage]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    gts: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for image in images:
        try:
            gts[image.name] = load_gt_kernel(image.kernel_path)
        except KGEngineError as exc:
            errors[image.name] = describe(exc)
    return gts, errors


@dataclass
class _Estimation:
    """Passes 2 and 3: the runs found or made, and the runs that failed (by (image, seed))."""

    settings: EvalSettings
    store: RunStore
    estimator: BatchEstimator
    hooks: JobHooks
    runs: dict[RunKey, dict[str, Any]] = field(default_factory=dict)
    failures: dict[RunKey, str] = field(default_factory=dict)

    def resume(self, images: Sequence[EvalImage]) -> list[tuple[EvalImage, int]]:
        """Load the stored runs of ``images``; return the (image, seed) runs still to make.

        Raises:
            ResumeMismatchError: a stored run was made with other settings.
        """
        self.hooks.total(len(images) * len(self.settings.seeds))
        todo = []
        for image in images:
            for seed in self.settings.seeds:
                run = self.store.load(image, seed)
                if run is None:
                    todo.append((image, seed))
                    continue
                self.runs[(image.name, seed)] = run
                self.hooks.item_finished(_run_name(image, seed), "skipped", "resumed")
        return todo

    def chunk(self, chunk: Sequence[tuple[EvalImage, int]]) -> None:
        """Estimate one chunk; if the whole call fails, retry its runs one at a time. Where
        it fails on one named image (a :class:`BadImageError` naming its LR file: too small,
        unreadable), that image's runs fail and the others are retried as one batch."""
        cfg = self.settings.kernelgan_config()
        n_iters = cfg.run_iters(self.settings.restarts)
        self.hooks.batch_started([_run_name(im, s) for im, s in chunk], n_iters)
        t0 = time.perf_counter()
        # estimators written before --stop existed need not take it
        extra = {} if self.settings.stop == "full" else {"stop": self.settings.stop}
        try:
            results = self.estimator(
                [(str(im.lr_path), s) for im, s in chunk], x4=self.settings.scale == 4,
                iters=self.settings.iters, device=self.settings.device, config=cfg,
                callback=self.hooks.batch_progress, restarts=self.settings.restarts, **extra,
            )
            if len(results) != len(chunk):
                raise KGEngineError(f"the estimator returned {len(results)} results "
                                    f"for {len(chunk)} runs")
        except Exception as exc:  # noqa: BLE001 - one bad image must not stop a long job
            bad = [run for run in chunk if isinstance(exc, BadImageError)
                   and exc.path == str(run[0].lr_path)]
            if len(chunk) == 1:
                results = [exc]
            elif bad:
                for image, seed in bad:
                    self._record(image, seed, exc, 0.0)
                rest = [run for run in chunk if run not in bad]
                if rest:
                    self.chunk(rest)
                return
            else:
                self.hooks.log(f"batch of {len(chunk)} failed ({describe(exc)}); "
                               "running them one by one")
                for one in chunk:
                    self.chunk([one])
                return
        self.hooks.batch_progress(n_iters)
        wall = (time.perf_counter() - t0) / len(chunk)
        for (image, seed), res in zip(chunk, results, strict=True):
            self._record(image, seed, res, wall)

    def _record(
        self, image: EvalImage, seed: int, res: KernelResult | Exception, wall: float
    ) -> None:
        name = _run_name(image, seed)
        try:
            if isinstance(res, Exception):
                raise res
            kernel = res.kernel_x4 if self.settings.scale == 4 else res.kernel_x2
            if kernel is None:
                raise KGEngineError(
                    f"{image.lr_path}: the estimator returned no x{self.settings.scale} kernel"
                )
            report = dict(getattr(res, "report", {}) or {})
            confidence = getattr(res, "confidence", None)
            if confidence is None:
                confidence = report.get("confidence")
            self.runs[(image.name, seed)] = self.store.save(image, seed, kernel, wall, report,
                                                            confidence)
        except Exception as exc:  # noqa: BLE001 - recorded; the image is skipped when scored
            self.failures[(image.name, seed)] = describe(exc)
            self.hooks.item_finished(name, "failed", f"{name}: {describe(exc)}")
        else:
            self.hooks.item_finished(name, "done", "")


def _score(
    images: Sequence[EvalImage], gts: dict[str, np.ndarray], est: _Estimation,
    errors: dict[str, str],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Pass 4: rows and grid kernels of every image; adds the skipped images to ``errors``."""
    rows: list[dict[str, Any]] = []
    kernels: dict[str, dict[str, np.ndarray]] = {}
    seeds = est.settings.seeds
    for image in images:
        failed = [est.failures[k] for s in seeds if (k := (image.name, s)) in est.failures]
        if image.name not in errors and failed:
            errors[image.name] = failed[0]
        if image.name not in errors:
            try:
                runs = [est.runs[(image.name, s)] for s in seeds]
                img_rows, kernels[image.name] = score_image(
                    image, gts[image.name], runs, est.settings.scale, est.settings.method
                )
                rows.extend(img_rows)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop a long job
                errors[image.name] = describe(exc)
        est.hooks.log(f"skipped {image.name}: {errors[image.name]}")
    return rows, kernels


def _run_name(image: EvalImage, seed: int) -> str:
    return f"{image.name} seed {seed}"
