"""The resumable run store: one JSON file per finished (image, seed) estimation.

``OUTDIR/runs/im_N_seed{S}.json`` holds the kernel, the wall time, the confidence (None
without restarts) and the estimator's report of one run, written atomically, so an
interrupted job resumes where it stopped. Every file also records the store's *identity*
(scale, method, iterations, restarts, stop rule, kernel clean-up): one ``OUTDIR`` holds one
configuration, and a run made with another one is refused rather than mixed in. A run
stored before an identity key existed has that key's :data:`LEGACY_IDENTITY` value. Since
0.9.25 a run also records the SHA-256 of the LR image it was made from (``lr_sha256``): a
run of another image of the same name (another dataset's ``OUTDIR``, or a changed one) is
refused too, rather than scored against this dataset's true kernel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kgengine.accuracy.dataset import EvalImage
from kgengine.atomic import save_json
from kgengine.errors import KGEngineError
from kgengine.farm.seeds import content_hash_or_none
from kgengine.kernel import check_kernel

#: Identity keys added after runs were first stored, with the value older runs were made with.
LEGACY_IDENTITY: dict[str, Any] = {"restarts": 1, "stop": "full", "n_filtering": 40,
                                   "elongation_power": 1.0, "width_prior": None,
                                   "elongation_choice": False, "spectral_mix": 0.0,
                                   "spectral_confidence": False, "width_refine": False,
                                   "width_release": False, "clean_release": False}


class ResumeMismatchError(KGEngineError):
    """``OUTDIR/runs`` holds a run made with other settings (scale, iterations, variant,
    restarts, stop rule, kernel clean-up, elongation shrink or choice, width calibration,
    its refinement or its prior's release, the clean-up's release, spectral mix or
    confidence rule)."""


class RunStore:
    """The finished runs of one configuration under ``out_dir/runs``.

    Args:
        out_dir: the job's output folder.
        identity: what a run depends on, e.g. ``{"scale": 2, "method": "kernelgan",
            "iters": 3000, "restarts": 1, "stop": "full"}``; stored in every run and
            compared on load.
    """

    def __init__(self, out_dir: str | os.PathLike, identity: dict[str, Any]) -> None:
        self.root = Path(out_dir) / "runs"
        self.identity = dict(identity)

    def path(self, image: EvalImage, seed: int) -> Path:
        """Where the run of ``image`` with ``seed`` is stored."""
        return self.root / f"{image.name}_seed{seed}.json"

    def load(self, image: EvalImage, seed: int) -> dict[str, Any] | None:
        """The stored run, its ``kernel`` as an (h, w) float64 array; None if absent or damaged.

        Raises:
            ResumeMismatchError: the run was made with another identity.
        """
        path = self.path(image, seed)
        if not path.is_file():
            return None
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
            kernel = np.asarray(run["kernel"], dtype=np.float64)
            check_kernel(kernel, str(path))  # NaN, 1-D or zero-sum: damaged too
            if run["seed"] != seed or not isinstance(run["wall_s"], int | float):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable or damaged (BadKernelError is a ValueError): estimate again
        got = {key: run.get(key, LEGACY_IDENTITY.get(key)) for key in self.identity}
        if got != self.identity:
            raise ResumeMismatchError(
                f"{path}: made with {got}, not {self.identity}; "
                "use another output folder for this setting"
            )
        made_from, now = run.get("lr_sha256"), content_hash_or_none(image.lr_path)
        if isinstance(made_from, str) and now is not None and made_from != now:
            raise ResumeMismatchError(
                f"{path}: made from another image than {image.lr_path} (sha256 "
                f"{made_from[:12]}, now {now[:12]}: another dataset's output folder, or the "
                "image changed); use another output folder")
        run["kernel"] = kernel
        return run

    def save(
        self, image: EvalImage, seed: int, kernel: Any, wall_s: float, report: dict[str, Any],
        confidence: float | None = None,
    ) -> dict[str, Any]:
        """Check ``kernel`` and save it as the run of (``image``, ``seed``), atomically.

        Args:
            kernel: the estimated (h, w) kernel; saved as float64, as given (the metrics
                normalise it).
            wall_s: the estimation's wall time in seconds.
            report: the estimator's JSON-able report (``ms_per_iter`` is copied to the run).
            confidence: the run's confidence in [0, 1] (:class:`kgengine.api.EstimateResult`);
                None where unknown.
        Returns:
            The run as stored, with ``kernel`` as an (h, w) float64 array.
        Raises:
            BadKernelError: ``kernel`` is not 2-D, not finite, or has no positive sum.
        """
        check_kernel(kernel, f"{image.lr_path}: the estimated kernel")
        # as given (not renormalised), C-ordered: the array a later load() returns
        kernel = np.ascontiguousarray(kernel, dtype=np.float64)
        run = {
            "image": image.name,
            "index": image.index,
            "lr_sha256": content_hash_or_none(image.lr_path),
            "seed": seed,
            **self.identity,
            "wall_s": wall_s,
            "ms_per_iter": report.get("ms_per_iter"),
            "confidence": None if confidence is None else float(confidence),
            "report": report,
            "kernel": kernel.tolist(),
        }
        save_json(self.path(image, seed), run)
        run["kernel"] = kernel
        return run
