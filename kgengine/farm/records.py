"""Outcome records: a finished image's files and manifest row, counted in the run's summary.

Every outcome of a training (a result, a bad image, a divergence) goes through
:func:`record`: a result's files are written atomically (report last, with the restarts'
``confidence``) into ``POOL_DIR/kernels/`` and only then is its row marked ``done`` (with
the same confidence); a first divergence queues the
row again (the next training takes the next derived seed); anything else fails the row with
its reason. A result whose files cannot be written (full disk, file-size limit, ...:
:class:`~kgengine.errors.OutputError`) puts its row back to ``pending`` with the reason and
holds it back for the rest of the run (state ``unwritten``); the next run redoes it.
:class:`FarmJob` bundles what both runners write to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kgengine.api import EstimateResult
from kgengine.errors import OutputError, TrainingDivergedError
from kgengine.farm.manifest import Manifest, Row
from kgengine.farm.poolfiles import KERNELS_DIR
from kgengine.farm.settings import FarmSettings
from kgengine.hooks import JobHooks
from kgengine.outputs import write_outputs

#: Trainings an image gets before it is marked failed for diverging (1 retry).
MAX_TRAININGS = 2


@dataclass
class FarmSummary:
    """What one :func:`kgengine.farm.runner.run_farm` call did."""

    pool_dir: Path
    added: int = 0  # new rows
    duplicates: int = 0  # inputs skipped: same content as a listed image
    skipped: int = 0  # already done before this run
    done: int = 0  # finished by this run
    failed: int = 0  # failed in this run (bad file or diverged twice)
    retried: int = 0  # divergences retried with another seed
    recovered: int = 0  # rows left running by a killed job, redone
    left_pending: int = 0  # not finished (Ray tasks lost; rerun to retry)
    collapsed: int = 0  # done, but G's kernel collapsed: confidence 0 (0.9.29)
    total: dict[str, int] = field(default_factory=dict)  # rows per state at the end
    batch: int = 0
    device: str = ""
    elapsed_s: float = 0.0
    pool_files: list[Path] = field(default_factory=list)

    @property
    def images_per_hour(self) -> float:
        """Images finished per hour of this run."""
        return 3600.0 * self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def text(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.done} done, {self.failed} failed, {self.skipped} skipped (done before)"
            + (f", {self.left_pending} left pending (rerun to retry)" if self.left_pending else "")
            + (f", {self.collapsed} collapsed (confidence 0)" if self.collapsed else "")
            + f" in {self.elapsed_s:.1f} s: {self.images_per_hour:.1f} images/hour"
            + f" (batch {self.batch}, {self.device})",
            f"pool {self.pool_dir}: " + ", ".join(f"{n} {s}" for s, n in self.total.items()),
        ]
        if self.added or self.duplicates or self.recovered or self.retried:
            lines.append(f"{self.added} new images, {self.duplicates} duplicates skipped, "
                         f"{self.recovered} interrupted images redone, "
                         f"{self.retried} diverged trainings retried")
        lines += [f"pool file: {p}" for p in self.pool_files]
        return "\n".join(lines)


def record(man: Manifest, row: Row, outcome: EstimateResult | Exception,
           settings: FarmSettings, pool_dir: Path) -> tuple[str, str]:
    """Write a finished image's files then mark its row.

    Returns:
        (state, reason): state is ``done``, ``failed``, ``retry`` or ``unwritten`` (files
        not written, row back to ``pending``); reason is "" when done.
    """
    if isinstance(outcome, EstimateResult):
        outcome.name = row.name
        outcome.report["image"] = row.path
        outcome.report["image_sha256"] = row.sha256  # as estimate's reports (0.9.27)
        outcome.report["farm"] = {"sha256": row.sha256, "job_seed": settings.seed,
                                  "attempt": row.diverged, "pool": str(pool_dir),
                                  "restarts": settings.restarts}
        outcome.report["confidence"] = outcome.confidence
        try:
            written = write_outputs(outcome, pool_dir / KERNELS_DIR)
        except OutputError as exc:
            reason = f"{exc}; left pending, rerun to retry"
            man.requeue([row.id], reason)
            return "unwritten", reason
        rel = {k: str(Path(p).relative_to(pool_dir)) for k, p in written.items()}
        man.mark_done(row.id, outcome.report["seed"], outcome.report["train_s"], rel,
                      outcome.confidence)
        return "done", ""
    if isinstance(outcome, TrainingDivergedError):
        if row.diverged + 1 < MAX_TRAININGS:
            reason = f"{outcome}; retrying with another seed"
            man.requeue([row.id], reason, diverged=True)
            return "retry", reason
        reason = f"{outcome} (attempt {row.diverged + 1} of {MAX_TRAININGS})"
        man.mark_failed(row.id, reason)
        return "failed", reason
    man.mark_failed(row.id, str(outcome))
    return "failed", str(outcome)


def count_outcome(summary: FarmSummary, hooks: JobHooks, name: str,
                  outcome: tuple[str, str]) -> None:
    """Count a :func:`record` outcome in the summary and tell the hooks (``item_finished``)."""
    state, detail = outcome
    if state == "done":
        summary.done += 1
    elif state == "failed":
        summary.failed += 1
    elif state == "unwritten":  # counted as left pending at the end of the run
        state = "failed"
    else:
        summary.retried += 1
    hooks.item_finished(name, state, detail)


@dataclass
class FarmJob:
    """What a runner writes to: the manifest, the pool folder, the summary and the hooks."""

    man: Manifest
    settings: FarmSettings
    pool_dir: Path
    summary: FarmSummary
    hooks: JobHooks
    #: ids of rows put back to ``pending`` and not to be trained again in this run
    held: set[int] = field(default_factory=set)

    def finish(self, row: Row, outcome: EstimateResult | Exception) -> None:
        """:func:`record` the outcome of ``row`` and :func:`count_outcome` it."""
        state = record(self.man, row, outcome, self.settings, self.pool_dir)
        if state[0] == "unwritten":
            self.held.add(row.id)
        elif isinstance(outcome, EstimateResult) and outcome.report.get("collapsed"):
            self.summary.collapsed += 1  # done (recorded), with confidence 0
        count_outcome(self.summary, self.hooks, row.name, state)

    def pending(self) -> list[Row]:
        """The ``pending`` rows to train in this run (:meth:`Manifest.pending` less the held
        ones)."""
        return [r for r in self.man.pending() if r.id not in self.held]

    def hold(self, rows: list[Row], reason: str) -> None:
        """Put ``rows`` back to ``pending`` with ``reason``, not to be trained again in this
        run (a rerun retries them)."""
        self.man.requeue([r.id for r in rows], reason)
        self.held |= {r.id for r in rows}

    def still_running(self, rows: list[Row]) -> list[Row]:
        """Those of ``rows`` still ``running`` in the manifest (claimed, not yet recorded)."""
        running = {r.id for r in self.man.rows("running")}
        return [r for r in rows if r.id in running]

    def give_back(self, rows: list[Row], reason: str) -> None:
        """Put those of ``rows`` still running back to ``pending`` with ``reason``."""
        still = self.still_running(rows)
        if still:
            self.man.requeue([r.id for r in still], reason)
