"""The farm's driver: inputs -> manifest rows -> batched trainings -> per-image files -> pool.

:func:`run_farm` does, in order (holding ``POOL_DIR/farm.lock``):

1. **Settings.** The job settings (seed, x4, dtype, mode, restarts and the full training
   config) are stored in the manifest by the first run; a later run takes the stored value
   of every option it does not give and refuses one that differs
   (:mod:`kgengine.farm.settings`).
2. **Clean-up and recovery.** Leftover ``.*.tmp`` files of atomic writes cut by a kill are
   removed; ``done`` rows whose files are missing or unreadable are queued again with the
   reason (:func:`~kgengine.farm.poolfiles.heal_done_rows`); rows left ``running`` by a
   killed job go back to ``pending``.
3. **Inputs.** Listed files edited since they were hashed get their new identity, a done
   one is queued again (:mod:`kgengine.farm.recheck`). INPUTs are expanded
   (:mod:`kgengine.farm.inputs`; files inside pool folders, this one included, are left
   out) and the new files added as rows
   (:mod:`kgengine.farm.intake`: content hash, duplicates, unreadable files, names that are
   not UTF-8).
4. **Training.** Pending rows, grouped by image size, are trained ``batch`` at a time in one
   batched model (each image ``restarts`` times, combined into one kernel and a confidence),
   here (:mod:`kgengine.farm.local`) or as Ray tasks (:mod:`kgengine.farm.ray_runner`); each
   outcome is recorded as it comes (:mod:`kgengine.farm.records`: files first, then the
   row). The batch size, when not given, comes from :mod:`kgengine.farm.batching`. An
   image whose files cannot be written (full disk, ...) is reported and left ``pending``
   for the next run; the others go on.
5. **Pool.** ``POOL_DIR/kernel_pool.npz`` (and ``kernel_pool_x4.npz`` with x4) is rebuilt
   atomically from all ``done`` rows, in manifest order
   (:func:`~kgengine.farm.poolfiles.rebuild_pool`; a row whose files went bad is left out
   and queued again).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kgengine.api import resolve_device
from kgengine.atomic import ensure_dir
from kgengine.config import KernelGANConfig
from kgengine.farm.batching import default_batch
from kgengine.farm.inputs import expand_inputs
from kgengine.farm.intake import add_inputs
from kgengine.farm.local import train_local
from kgengine.farm.manifest import Manifest, lock_pool_dir
from kgengine.farm.poolfiles import (
    check_manifest_kept,
    heal_done_rows,
    rebuild_pool,
    remove_partial_files,
)
from kgengine.farm.ray_runner import check_reachable, train_ray
from kgengine.farm.recheck import recheck_rows
from kgengine.farm.records import FarmJob, FarmSummary
from kgengine.farm.settings import check_mode, resolve_settings
from kgengine.hooks import JobHooks
from kgengine.sysinfo import auto_threads


def run_farm(
    inputs: Sequence[str | os.PathLike],
    pool_dir: str | os.PathLike,
    *,
    batch: int | None = None,
    seed: int | None = None,
    x4: bool | None = None,
    iters: int | None = None,
    config: KernelGANConfig | None = None,
    overrides: dict[str, Any] | None = None,
    dtype: str | None = None,
    mode: str | None = None,
    restarts: int | None = None,
    stop: str | None = None,
    device: str = "auto",
    recursive: bool = False,
    retry_failed: bool = False,
    ray_address: str | None = None,
    ray_cpus: float = 1.0,
    threads: int | None = None,
    hooks: JobHooks | None = None,
) -> FarmSummary:
    """Estimate one kernel per input image into the pool folder ``pool_dir`` (resumable).

    Args:
        inputs: image files, folders and ``.txt`` lists (:mod:`kgengine.farm.inputs`); may be
            empty to resume the images already listed in the manifest.
        pool_dir: the pool folder (manifest, ``kernels/``, ``kernel_pool.npz``).
        batch: images per batched training (default:
            :func:`~kgengine.farm.batching.auto_batch`).
        seed, x4, iters, config, dtype, mode: job settings; None = the pool's stored value
            (defaults 0, False, 3000, paper config, "float32", "composed" for a new pool).
        overrides: config fields to change (``--set key=value``), applied to ``config`` or,
            without it, to the pool's stored config (a new pool's: the default).
        restarts: trainings per image (K ≥ 1, in the same batch), combined into its kernel;
            each image's confidence (the restarts' agreement) goes into the manifest, its
            report and the pool. A job setting like the above (default 1; an older pool
            without it has 1).
        stop: "auto" (stop an image once its kernel stopped changing,
            :class:`kgengine.stopping.StopRule`) or "full" (every iteration); a job setting
            (a new pool's default is "auto" since 0.9.12; an older pool without it has "full").
        device: "auto", "cpu", "cuda" or "cuda:N" (for Ray: what each task uses).
        recursive: descend into sub-folders of folder INPUTs.
        retry_failed: put the pool's failed images back in the queue first.
        ray_address: None = train here; "auto" / "host:port" / "ray://..." = submit batches
            to that Ray cluster; "local" = start a local Ray instance.
        ray_cpus: CPUs each Ray task requests (and its torch threads).
        threads: torch CPU threads for local training (None or 0: the default, torch's,
            capped at the idle cores, :func:`kgengine.sysinfo.auto_threads`; restored
            after). On a busy machine fewer threads than cores can be much faster.
        hooks: progress callbacks (``total``: images to train in this run; ``item_finished``
            per image with state done, failed or retry; ``batch_started`` /
            ``batch_progress`` in iterations; ``log``: duplicates, unreadable files, Ray).
    Raises:
        KGEngineError: bad INPUT, ``restarts < 1``, settings differing from the pool's,
            another farm running on ``pool_dir``, ``cuda`` requested without a GPU, or
            nothing answering at ``ray_address``.
        OutputError: ``pool_dir`` is a file or cannot be created, or a pool file cannot be
            written.
    """
    hooks = hooks or JobHooks()
    if ray_address is not None:
        check_reachable(ray_address)  # before anything is written
    paths = expand_inputs(inputs, recursive, exclude=[pool_dir], log=hooks.log)  # that too
    pool_dir = ensure_dir(pool_dir)
    check_manifest_kept(pool_dir)
    t0 = time.perf_counter()
    summary = FarmSummary(pool_dir)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads) if threads else auto_threads(old_threads))
    try:
        with lock_pool_dir(pool_dir), Manifest(pool_dir) as man:
            settings = resolve_settings(man.settings(), seed=seed, x4=x4, iters=iters,
                                        config=config, overrides=overrides, dtype=dtype,
                                        mode=mode, restarts=restarts, stop=stop)
            job = FarmJob(man, settings, pool_dir, summary, hooks)
            before = _prepare(job, paths, retry_failed)
            try:
                if ray_address is None:
                    _train_here(job, batch, device)
                else:
                    hooks.total(before["pending"])
                    train_ray(job, batch, device, ray_address, ray_cpus)
            except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: the done images are in
                rebuild_pool(man, pool_dir, settings.x4, hooks.log)  # the pool (0.9.29: not)
                raise
            summary.pool_files = rebuild_pool(man, pool_dir, settings.x4, hooks.log)
            summary.total = man.counts()
            summary.left_pending = summary.total["pending"]
    finally:
        torch.set_num_threads(old_threads)
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _prepare(job: FarmJob, paths: list[Path], retry_failed: bool) -> dict[str, int]:
    """Steps 1 to 3 of the module docstring: settings, clean-up and recovery, new inputs
    (``paths``: the INPUTs expanded, :func:`~kgengine.farm.inputs.expand_inputs`).

    Returns:
        the rows per state before training.
    """
    man, summary = job.man, job.summary
    check_mode(job.settings)
    if man.settings() is None:
        man.set_settings(job.settings.to_dict())
    remove_partial_files(job.pool_dir)
    heal_done_rows(man, job.pool_dir, job.settings.x4)
    summary.recovered = man.recover()
    if retry_failed:
        man.retry_failed()
    failed_before = man.counts()["failed"]
    recheck_rows(man, job.pool_dir, job.settings.seed, job.hooks.log)  # files edited since
    summary.added, summary.duplicates, bad_names = add_inputs(man, paths, job.settings,
                                                              job.hooks.log)
    before = man.counts()
    # unreadable new files, and files failed for a name the manifest cannot hold
    summary.failed = before["failed"] - failed_before + bad_names
    summary.skipped = before["done"]
    return before


def _train_here(job: FarmJob, batch: int | None, device: str) -> None:
    """Train the pending rows in this process (batch size: given, or the default here)."""
    dev = resolve_device(device)
    pending = job.man.pending()
    if batch is None:
        batch = default_batch(dev, job.settings, pending)
    job.summary.batch, job.summary.device = batch, str(dev)
    job.hooks.total(len(pending))
    job.summary.batch = train_local(job, batch, str(dev))

