"""Statistics over the scored rows of an eval job: per method, across seeds, vs the baseline."""

from __future__ import annotations

import statistics
import warnings
from typing import Any

import numpy as np

from kgengine.accuracy.scoring import BICUBIC, ISO, METRICS


def stats(values: list[float]) -> dict[str, float | None]:
    """``mean``, ``median``, ``worst`` (the minimum: every metric is higher-is-better), ``n``.

    All but ``n`` are None for an empty list.
    """
    if not values:
        return {"mean": None, "median": None, "worst": None, "n": 0}
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "worst": float(np.min(values)),
        "n": len(values),
    }


def summarise(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """Per method and metric: mean, median, worst (min) over rows; seed spread; losses.

    - ``methods``: ``{method: {metric: stats}}`` for the estimator and both baselines.
    - ``seed_std``: for the estimator, the sample standard deviation of a metric across the
      seeds of one image, ``sqrt(Σ (x_s − x̄)² / (n − 1))``, averaged over images (None with
      one seed).
    - ``loses_to_iso``: per metric, the images whose seed-mean score is below the isotropic
      baseline's, and the number of (image, seed) runs below it.
    - ``lr_ceiling``: the same statistics of the true kernel's re-synthesis PSNR.
    - ``timing``: the estimator's runs, total and median wall time, median ms per iteration
      and images per hour (``3600 / mean wall time``).
    - ``confidence_vs_accuracy``: :func:`confidence_correlation` (None without confidences).
    """
    out: dict[str, Any] = {"methods": {}}
    for m in (method, ISO, BICUBIC):
        mrows = [r for r in rows if r["method"] == m]
        out["methods"][m] = {
            metric: stats([r[metric] for r in mrows if r[metric] is not None])
            for metric in METRICS
        }
    out["seed_std"], out["loses_to_iso"] = _seed_spread_and_losses(rows, method)
    ceilings = {r["image"]: r["lr_psnr_ceiling"] for r in rows if r["lr_psnr_ceiling"] is not None}
    out["lr_ceiling"] = stats(list(ceilings.values()))
    out["timing"] = _timing(rows, method)
    out["confidence_vs_accuracy"] = confidence_correlation(rows, method)
    return out


#: Fewest runs for which a rank correlation is reported.
MIN_CORRELATION_RUNS = 3


def confidence_correlation(rows: list[dict[str, Any]], method: str,
                           metric: str = "aligned_kernel_psnr") -> dict[str, Any] | None:
    """Spearman's rank correlation between the runs' confidence and ``metric``.

    Over every (image, seed) row of ``method`` that has both a confidence and the metric
    (``scipy.stats.spearmanr``: Pearson's correlation of the ranks, ties given their mean
    rank). High when the confident runs are the accurate ones.

    Returns:
        None when no row has a confidence; else ``{"metric", "n", "rho", "p_value"}``, with
        ``rho`` and ``p_value`` None when ``n`` < :data:`MIN_CORRELATION_RUNS` or either
        variable is constant (the correlation is undefined).
    """
    pairs = [(float(r["confidence"]), float(r[metric])) for r in rows
             if r["method"] == method and r.get("confidence") is not None
             and r.get(metric) is not None]
    pairs = [(c, v) for c, v in pairs if np.isfinite(c) and np.isfinite(v)]
    if not pairs:
        return None
    out: dict[str, Any] = {"metric": metric, "n": len(pairs), "rho": None, "p_value": None}
    if len(pairs) >= MIN_CORRELATION_RUNS:
        from scipy.stats import spearmanr  # scipy.stats is slow to import: only when needed

        conf, vals = zip(*pairs, strict=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input: NaN, reported as None
            rho, p_value = spearmanr(conf, vals)
        if np.isfinite(rho):
            out["rho"], out["p_value"] = float(rho), float(p_value)
    return out


def _seed_spread_and_losses(
    rows: list[dict[str, Any]], method: str
) -> tuple[dict[str, float | None], dict[str, dict[str, Any]]]:
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] == method:
            by_image.setdefault(r["image"], []).append(r)
    iso = {r["image"]: r for r in rows if r["method"] == ISO}
    seed_std: dict[str, float | None] = {}
    loses: dict[str, dict[str, Any]] = {}
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
    return seed_std, loses


def _timing(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    walls = [r["wall_s"] for r in rows if r["method"] == method]
    ms = [r["ms_per_iter"] for r in rows if r["method"] == method and r["ms_per_iter"]]
    return {
        "runs": len(walls),
        "total_wall_s": float(np.sum(walls)) if walls else 0.0,
        "median_wall_s": float(np.median(walls)) if walls else None,
        "median_ms_per_iter": float(np.median(ms)) if ms else None,
        "images_per_hour": 3600.0 / float(np.mean(walls)) if walls and np.mean(walls) > 0 else None,
    }
