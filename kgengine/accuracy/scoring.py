"""Scoring: the two fixed baselines and the metrics of one kernel, one image.

Every estimate is scored against the true kernel with :func:`~kgengine.metrics.kernel_psnr`,
:func:`~kgengine.metrics.aligned_kernel_psnr` and, where the HR image exists,
:func:`~kgengine.metrics.lr_resynthesis_psnr` (with the true kernel's score as the ceiling).
The kernel PSNRs of one image share one zero-padded canvas, the largest kernel of the
comparison (13×13 at x2, 37×37 at x4 with the default 13×13 estimator), so that methods
compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kgengine.accuracy.dataset import EvalImage, check_scale
from kgengine.errors import KGEngineError
from kgengine.imageio import read_image
from kgengine.kernel import analytic_x4, bicubic_taps, common_size, gaussian_kernel
from kgengine.metrics import aligned_kernel_psnr, kernel_psnr, lr_resynthesis_psnr

#: Names of the baseline methods in rows and tables.
ISO = "isotropic-1.3"
BICUBIC = "bicubic"
#: Metrics reported per row (all PSNR in dB, higher is better).
METRICS = ("kernel_psnr", "aligned_kernel_psnr", "lr_psnr")


def baseline_kernels(scale: int) -> dict[str, np.ndarray]:
    """The two fixed baselines at ``scale``, float64 kernels summing to 1.

    - ``isotropic-1.3``: ``gaussian_kernel(13, 1.3)`` (13×13) at x2; its ``analytic_x4``
      (37×37) at x4 (the x4 kernel of a x2 estimator that always answers σ = 1.3).
    - ``bicubic``: ``outer(w, w)`` of :func:`kgengine.kernel.bicubic_taps` (MATLAB
      ``imresize``), 8×8 at x2 and 16×16 at x4. Even-sized, it is used as ``degrade`` uses
      it: its centre of mass lies half an HR pixel up-left of the convention's centre. The
      plain kernel PSNR counts that offset, the aligned PSNR removes it, the re-synthesis
      PSNR keeps it (a real half-pixel displacement of MATLAB's sampling grid relative to
      kgengine's).

    Raises:
        KGEngineError: ``scale`` is not 2 or 4.
    """
    check_scale(scale)
    iso = gaussian_kernel(13, 1.3)
    taps = bicubic_taps(scale)
    return {ISO: iso if scale == 2 else analytic_x4(iso), BICUBIC: np.outer(taps, taps)}


def score_kernel(
    est: np.ndarray,
    gt: np.ndarray,
    scale: int,
    hr: np.ndarray | None = None,
    lr: np.ndarray | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """All metrics of one kernel: kernel PSNR, aligned PSNR (+ shift), re-synthesis PSNR.

    Args:
        est: (h1, w1) estimated kernel.
        gt: (h2, w2) true kernel.
        scale: 2 or 4.
        hr: (H, W, 3) float HR image in [0, 1], or None.
        lr: (H/s, W/s, 3) float LR image in [0, 1], or None.
        size: the kernel canvas ``S`` (see :mod:`kgengine.metrics`); default: the common size.
    Returns:
        ``kernel_psnr``, ``aligned_kernel_psnr``, ``aligned_shift`` [dy, dx], ``lr_psnr`` and
        ``lr_offset`` [dy, dx] (both None without ``hr`` and ``lr``); PSNRs in dB.
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


def score_image(
    image: EvalImage, gt: np.ndarray, runs: Sequence[dict[str, Any]], scale: int, method: str
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Score the runs of one image and the two baselines on one kernel canvas.

    Args:
        image: the dataset image (its HR image, if any, enables re-synthesis).
        gt: (h, w) float64 true kernel.
        runs: the stored runs of ``image`` (:class:`~kgengine.accuracy.runs.RunStore`), each
            with ``seed``, ``kernel`` ((h, w) float64), ``wall_s``, ``ms_per_iter`` and
            (optionally) ``confidence``.
        scale: 2 or 4.
        method: the estimator's row label.
    Returns:
        (rows, kernels): one row per baseline (``confidence`` None), then one per run (its
            ``confidence``, None without restarts); and the kernels by label
        (``"gt"``, the baselines, ``"seed S"``) for the kernel grid.
    """
    hr = lr = ceiling = None
    if image.hr_path is not None:
        hr, lr = read_image(image.hr_path), read_image(image.lr_path)
        try:
            ceiling = lr_resynthesis_psnr(hr, lr, gt, scale).psnr
        except ValueError as exc:  # sizes that do not match: name both files
            raise KGEngineError(f"{image.hr_path}: does not fit {image.lr_path} at "
                                f"x{scale} ({exc})") from None
    baselines = baseline_kernels(scale)
    # One canvas for every method of this image, so that their kernel PSNRs compare.
    size = common_size(gt, *baselines.values(), *(run["kernel"] for run in runs))
    base = {"image": image.name, "index": image.index, "kernel_canvas": size,
            "lr_psnr_ceiling": ceiling}
    rows: list[dict[str, Any]] = []
    kernels: dict[str, np.ndarray] = {"gt": gt}
    for name, k in baselines.items():
        rows.append({**base, "seed": None, "method": name, "wall_s": 0.0, "ms_per_iter": None,
                     "confidence": None, **score_kernel(k, gt, scale, hr, lr, size)})
        kernels[name] = k
    for run in runs:
        rows.append({**base, "seed": run["seed"], "method": method, "wall_s": run["wall_s"],
                     "ms_per_iter": run.get("ms_per_iter"), "confidence": run.get("confidence"),
                     **score_kernel(run["kernel"], gt, scale, hr, lr, size)})
        kernels[f"seed {run['seed']}"] = run["kernel"]
    return rows, kernels
