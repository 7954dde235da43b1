"""When to stop training an image: its kernel has stopped changing (``--stop auto``).

Every ``every`` iterations the trainer measures the relative change of each image's raw
(composed) kernel since the previous check::

    delta_t = ||K_t - K_{t-every}||_F / ||K_t||_F

and stops an image once ``delta`` stayed below ``tol`` for ``patience`` checks in a row, not
before ``min_iters``. The decision depends only on the image's own kernels, so it is the same
in any batch. The defaults (tol 5e-3, patience 2, not before the second lr decay at 1500)
were chosen on the development set with ``bench/bench_stop.py`` (``bench/data/stop_auto.md``:
x2, 20 images x 3 seeds, mean aligned kernel PSNR −0.001 dB vs full runs, worst run
−0.18 dB, 1824 of 3000 iterations on average).

Since 0.9.12 ``auto`` is the default of one run (the API, ``estimate``, a new farm pool and
``kgengine eval``), measured again on the kernel that is saved today, after the width
calibration and the spectral mix (``bench/study_stop.py``, ``bench/data/stop_study.md``):
over 240 runs (the development set x2 and x4 at seeds 0-2, the check set, the sharp set)
the mean change is −0.005 to +0.002 dB per set, no run loses more than 0.08 dB, and
37-40 % of the iterations are saved. Restarts are not affected: each trains 1250 iterations
(``restart_iters``, since 0.9.18; 1500 before, where the rule could stop at the earliest),
before the rule's first possible stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StopRule:
    """Stop once ``delta < tol`` ``patience`` checks in a row, at or after ``min_iters``."""

    tol: float = 5e-3
    patience: int = 2
    min_iters: int = 1500
    every: int = 100

    def __post_init__(self) -> None:
        if not (self.tol > 0 and self.patience >= 1 and self.min_iters >= 0 and self.every >= 1):
            raise ValueError(f"bad stop rule {self}: need tol > 0, patience >= 1, "
                             "min_iters >= 0, every >= 1")


def stop_setting(rule: StopRule | None) -> Any:
    """How a rule is recorded in reports and compared on resume: "full" or its fields."""
    return asdict(rule) if rule is not None else "full"


def stop_rule_of(stop: str | dict | StopRule | None) -> StopRule | None:
    """``"full"``/None -> None, ``"auto"`` -> the default :class:`StopRule`, a rule -> itself,
    a dict (:func:`stop_setting`) -> that rule."""
    if stop is None or isinstance(stop, StopRule):
        return stop
    if isinstance(stop, dict):
        return StopRule(**stop)
    if stop == "full":
        return None
    if stop == "auto":
        return StopRule()
    raise ValueError(f"stop: expected 'full', 'auto' or a StopRule, got {stop!r}")


def kernel_change(k: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """``||k - prev||_F / ||k||_F`` per image; k, prev (B, K, K) -> (B,) float64."""
    num = np.linalg.norm((k - prev).reshape(len(k), -1), axis=1)
    den = np.maximum(np.linalg.norm(k.reshape(len(k), -1), axis=1), 1e-30)
    return num / den


def stop_iteration(iters: Sequence[int], deltas: Sequence[float | None], rule: StopRule,
                   full: int) -> int:
    """The iteration at which ``rule`` stops a run with these checks, else ``full``.

    Args:
        iters: check iterations (multiples of ``rule.every``), increasing.
        deltas: the change at each check (None where there is no previous kernel).
    """
    streak = 0
    for t, d in zip(iters, deltas, strict=True):
        streak = streak + 1 if d is not None and d < rule.tol else 0
        if streak >= rule.patience and t >= rule.min_iters:
            return int(t)
    return int(full)


class StopTracker:
    """The trainer's side of :func:`stop_iteration`, one check at a time for B images."""

    def __init__(self, rule: StopRule, b: int) -> None:
        self.rule = rule
        self.prev: np.ndarray | None = None
        self.streak = np.zeros(b, np.int64)
        self.stopped_at = np.zeros(b, np.int64)  # 0 = still training

    def check(self, done: int, kernels: np.ndarray, rows: np.ndarray | None = None
              ) -> np.ndarray:
        """Record the kernels (R, K, K) of images ``rows`` (R,) (default: all B) after
        ``done`` iterations; returns the images that stop now (bool (B,)). Images left out
        keep their state (the trainer leaves out those that stopped)."""
        rows = np.arange(len(self.streak)) if rows is None else np.asarray(rows)
        if self.prev is not None:
            below = kernel_change(kernels, self.prev[rows]) < self.rule.tol
            self.streak[rows] = np.where(below, self.streak[rows] + 1, 0)
        else:
            self.prev = np.zeros((len(self.streak), *kernels.shape[1:]), kernels.dtype)
        self.prev[rows] = kernels
        now = np.zeros(len(self.streak), bool)
        now[rows] = (self.stopped_at[rows] == 0) & (self.streak[rows] >= self.rule.patience)
        now &= done >= self.rule.min_iters
        self.stopped_at[now] = done
        return now
