"""The eval job's Markdown report and kernel grid, from a ``results.json`` dict.

- :func:`render_report`: ``report.md`` (settings, machine, one table per metric, the losses
  to the isotropic baseline in plain sentences, confidence vs accuracy with restarts, a
  per-image table, skipped images).
- :func:`write_kernel_grid`: ``kernels.png``, true vs estimated kernels of the worst and best
  images (:func:`kgengine.plotting.kernel_grid_png`).
- :func:`summary_table`: one README-style table for several results (scales, variants).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kgengine.accuracy.scoring import BICUBIC, ISO, METRICS
from kgengine.plotting import kernel_grid_png

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
        f"{st['config'].get('iters')} (stop: {st.get('stop', 'full')}); restarts per run: "
        f"{st.get('restarts', 1)}; variant: "
        f"{'defects 1-3 fixed' if st.get('fix_defects') else 'authors defects 1-3 (default)'}",
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
    if summ.get("confidence_vs_accuracy") is not None:
        lines += ["", "## Confidence vs accuracy", "",
                  confidence_statement(summ["confidence_vs_accuracy"])]
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


def confidence_statement(corr: dict) -> str:
    """One sentence on :func:`~kgengine.accuracy.summary.confidence_correlation`'s result."""
    what = (f"Spearman rank correlation between the runs' confidence and the "
            f"{METRIC_NAMES.get(corr['metric'], corr['metric'])} over all (image, seed) runs")
    if corr["rho"] is None:
        return (f"- {what}: undefined (n = {corr['n']}; it needs at least 3 runs and values "
                "that vary).")
    return (f"- {what}: ρ = {corr['rho']:.3f} (p = {corr['p_value']:.3g}, n = {corr['n']}). "
            "Positive: the confident runs are the accurate ones.")


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
