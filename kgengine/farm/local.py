"""The local runner: every pending row trained ``batch`` at a time in this process.

Pending rows come smallest image first (:meth:`Manifest.pending`), so a batch holds images of
similar size. A chunk of rows is claimed (``running``), its images read (a bad one is marked
``failed`` with its reason and the batch goes on without it) and trained in one batched
model; each outcome is recorded as it comes (:mod:`kgengine.farm.records`). A batch that runs
out of GPU (or host) memory is queued again with a halved batch size
(:func:`~kgengine.farm.batching.back_off`); a stop (Ctrl-C) or an unexpected error gives
the claimed rows back. Rows whose files could not be written are held back until the next
run (:meth:`FarmJob.pending`).
"""

from __future__ import annotations

import torch

from kgengine.errors import BadImageError
from kgengine.farm.batching import back_off
from kgengine.farm.manifest import Row
from kgengine.farm.records import FarmJob
from kgengine.farm.training import attempt_seed, read_images, train_batch
from kgengine.prepare import min_image_side


def train_local(job: FarmJob, batch: int, device: str) -> int:
    """Train every pending row of ``job``, ``batch`` at a time, on ``device``.

    Returns:
        the final batch size (lower than ``batch`` after running out of GPU memory).
    """
    while rows := job.pending():
        start = 0
        while start < len(rows):
            chunk = rows[start : start + batch]
            start += len(chunk)
            job.man.claim([r.id for r in chunk])
            try:
                train_chunk(job, chunk, device)
            except (torch.cuda.OutOfMemoryError, MemoryError) as exc:  # MemoryError: the host's
                batch = back_off(job, chunk, batch, gpu=not isinstance(exc, MemoryError))
            except BaseException as exc:
                # stopped (Ctrl-C) or an unexpected error: give the claimed rows back
                job.give_back(chunk, f"interrupted: {type(exc).__name__}")
                raise
    return batch


def train_chunk(job: FarmJob, chunk: list[Row], device: str) -> None:
    """Read, train and record one claimed chunk of rows."""
    cfg = job.settings.config
    images, idx, bad = read_images([r.path for r in chunk], min_image_side(cfg))
    for i, exc in bad.items():
        job.finish(chunk[i], exc)
    ok = [chunk[i] for i in idx]
    if not ok:
        return
    job.hooks.batch_started([r.name for r in ok], cfg.run_iters(job.settings.restarts))
    try:
        outcomes = train_batch(images, [attempt_seed(job.settings, r) for r in ok],
                               [r.name for r in ok], job.settings, device,
                               callback=job.hooks.batch_progress)
    except BadImageError as exc:  # refused by prepare_image: fail it, redo the others
        bad_rows = [r for r in ok if r.name == exc.path]
        if not bad_rows:
            raise
        job.finish(bad_rows[0], exc)
        job.man.requeue([r.id for r in ok if r is not bad_rows[0]],
                        "batch redone without a bad image")
        return
    for row, outcome in zip(ok, outcomes, strict=True):
        job.finish(row, outcome)
