"""The accuracy benchmark: a DIV2KRK-layout set, KernelGAN on it, scores against baselines.

- :mod:`~kgengine.accuracy.synth`: a seeded synthetic set in the DIV2KRK layout.
- :mod:`~kgengine.accuracy.dataset`: the DIV2KRK layout (:class:`EvalImage`, true kernels).
- :mod:`~kgengine.accuracy.runs`: the resumable store of finished (image, seed) runs.
- :mod:`~kgengine.accuracy.estimators`: the one estimator protocol (:class:`BatchEstimator`).
- :mod:`~kgengine.accuracy.scoring`: the fixed baselines and the metrics of a kernel / image.
- :mod:`~kgengine.accuracy.summary`: statistics over the scored rows.
- :mod:`~kgengine.accuracy.report`: ``report.md``, ``kernels.png``, the README table.
- :mod:`~kgengine.accuracy.job`: :func:`run_eval`, the job behind ``kgengine eval``.

>>> from kgengine.accuracy import EvalSettings, make_div2krk_like, run_eval  # doctest: +SKIP
>>> make_div2krk_like(hr_paths, "synth", seed=0, n=20)                      # doctest: +SKIP
>>> results = run_eval("synth", "eval_x2", EvalSettings(scale=2, seeds=(0, 1, 2)))  # doctest: +SKIP
"""

from __future__ import annotations

from kgengine.accuracy.dataset import EvalImage, list_dataset, load_gt_kernel
from kgengine.accuracy.estimators import (
    BatchEstimator,
    ImageEstimator,
    KernelResult,
    default_estimator,
    kernelgan_estimator,
    per_image,
)
from kgengine.accuracy.job import EvalSettings, run_eval
from kgengine.accuracy.report import metric_table, render_report, summary_table, write_kernel_grid
from kgengine.accuracy.runs import ResumeMismatchError, RunStore
from kgengine.accuracy.scoring import (
    BICUBIC,
    ISO,
    METRICS,
    baseline_kernels,
    score_image,
    score_kernel,
)
from kgengine.accuracy.summary import confidence_correlation, summarise
from kgengine.accuracy.synth import make_div2krk_like, select_evenly

__all__ = [
    "BICUBIC",
    "ISO",
    "METRICS",
    "BatchEstimator",
    "EvalImage",
    "EvalSettings",
    "ImageEstimator",
    "KernelResult",
    "ResumeMismatchError",
    "RunStore",
    "baseline_kernels",
    "confidence_correlation",
    "default_estimator",
    "kernelgan_estimator",
    "list_dataset",
    "load_gt_kernel",
    "make_div2krk_like",
    "metric_table",
    "per_image",
    "render_report",
    "run_eval",
    "score_image",
    "score_kernel",
    "select_evenly",
    "summarise",
    "summary_table",
    "write_kernel_grid",
]
