"""The degradation job: :func:`degrade_folder`, a folder of HR images + a kernel pool ->
LR/HR training pairs (see :mod:`kgengine.degradation`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgengine.atomic import ensure_dir
from kgengine.degradation.config import PipelineConfig
from kgengine.degradation.folder import (
    check_out_path,
    clean_stale_tmp,
    lock_out_dir,
    missing_top,
    remove_unused,
)
from kgengine.degradation.manifest import (
    MANIFEST,
    check_settings,
    hr_change,
    hr_identity,
    is_done,
    read_manifest,
    record_settings,
    rival_entries,
    void_pair,
    write_manifest,
)
from kgengine.degradation.pipeline import Pipeline
from kgengine.degradation.pipeline_runner import run_pipeline_pairs
from kgengine.degradation.plan import PairPlan, list_hr_files, make_plan
from kgengine.degradation.runner import DegradeReport, check_provider, open_session, run_pairs
from kgengine.errors import KGEngineError, brief_list, shown
from kgengine.hooks import JobHooks
from kgengine.pool import KernelPool

#: The settings of a job without a pipeline (the ONNX degrader).
NO_PIPELINE = {"pipeline": None, "real_noise_fingerprint": None}


def degrade_folder(
    hr_dir: str | os.PathLike,
    kernels: str | os.PathLike | KernelPool,
    out_dir: str | os.PathLike,
    *,
    scale: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    batch: int = 8,
    provider: str = "auto",
    threads: int | None = None,
    hooks: JobHooks | None = None,
    pipeline: PipelineConfig | None = None,
    copy_hr: bool = False,
    min_confidence: float | None = None,
    top: float | None = None,
) -> DegradeReport:
    """Make LR/HR pairs from every HR image in ``hr_dir`` (see :mod:`kgengine.degradation`).

    Args:
        hr_dir: folder of HR images (its files, not sub-folders).
        kernels: a :class:`KernelPool`, or what :func:`kgengine.pool.load_pool` reads.
        out_dir: output folder (created; resumable; one job at a time, see
            :mod:`kgengine.degradation.folder`).
        scale: downscaling factor; default: the pool's.
        noise: sigma of additive Gaussian noise on the LR, in [0, 1] units (0 = none);
            without ``pipeline`` only (a pipeline has its own ``gaussian_sigma``).
        seed: picks each image's kernel and noise (with its file name).
        batch: up to this many equal-size images per onnxruntime call (with a pipeline:
            pairs per manifest append).
        provider: ``auto|tensorrt|cuda|cpu`` (:func:`kgengine.providers.make_session`);
            not used with a pipeline.
        threads: CPU threads for onnxruntime, >= 0 (None or 0: the default, all usable
            cores).
        hooks: ``total`` (files found), ``item_finished`` per file (``skipped`` when already
            there, ``done``, or ``failed`` with the one-line reason naming the file), and
            ``log`` (the provider or pipeline used; stale temporary files removed).
        pipeline: degrade through :class:`~kgengine.degradation.pipeline.Pipeline` with this
            config (CPU, ``kgengine.ops.downscale``) instead of the ONNX degrader.
        copy_hr: write every pair's HR to ``out_dir/hr/<stem>.png`` as 8-bit RGB (uncropped
            8-bit RGB PNGs without an EXIF rotation copied byte for byte), so ``hr/`` and
            ``lr/`` hold the same file names (a paired folder for BasicSR/traiNNer);
            default: only cropped HRs are written there.
        min_confidence: use only the pool's kernels whose confidence is known and >= this
            (:func:`kgengine.pool.filter_pool`); manifest rows count in that filtered pool.
            Recorded in the settings: a resume with another threshold is refused.
        top: instead of ``min_confidence``, use the pool's most confident fraction ``top``
            in (0, 1] (:func:`kgengine.pool.top_threshold`); the threshold it gives is what
            the settings record, so a resume with the same ``top`` and pool goes on.
    Every argument, the pool, the HR folder, ``out_dir`` (not a file) and the provider
    (:func:`~kgengine.degradation.runner.check_provider`) are checked before ``out_dir`` is
    created or written (:func:`plan_job`, then :func:`run_job`); its settings are recorded
    only once the onnxruntime session runs. A folder that holds no pairs does not pin the
    settings of the run that left it.

    Raises:
        KGEngineError: bad arguments, pool, folder, or provider (not for bad HR files).
    """
    hooks = hooks or JobHooks()
    job = plan_job(hr_dir, kernels, out_dir, scale=scale, noise=noise, seed=seed, batch=batch,
                   provider=provider, threads=threads, pipeline=pipeline, copy_hr=copy_hr,
                   min_confidence=min_confidence, top=top, log=hooks.log)
    return run_job(job, hooks)


@dataclass(frozen=True)
class DegradeJob:
    """A checked degradation job (:func:`plan_job`): what :func:`run_job` needs."""

    plan: PairPlan
    pipe: Pipeline | None
    files: list[Path]
    out_dir: Path
    settings: dict[str, Any]
    batch: int
    provider: str
    threads: int | None
    copy_hr: bool


def plan_job(
    hr_dir: str | os.PathLike,
    kernels: str | os.PathLike | KernelPool,
    out_dir: str | os.PathLike,
    *,
    scale: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    batch: int = 8,
    provider: str = "auto",
    threads: int | None = None,
    pipeline: PipelineConfig | None = None,
    copy_hr: bool = False,
    min_confidence: float | None = None,
    top: float | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> DegradeJob:
    """Check every argument of :func:`degrade_folder` (same names), load the pool and list
    the HR files, writing nothing: a caller can report a bad pool or folder before it
    shows any progress. ``log``: the kernels ``top`` keeps, on one line.

    Raises:
        KGEngineError: bad arguments, pool, folder, or provider.
    """
    hr_dir, out_dir = Path(hr_dir), Path(out_dir)
    if not 0 <= noise <= 1:  # NaN too
        raise KGEngineError(f"noise must be a sigma in [0, 1] (image range), got {noise}")
    if pipeline is not None and noise > 0:
        raise KGEngineError("noise: with a pipeline, set its gaussian_sigma instead")
    if threads is not None and threads < 0:
        raise KGEngineError(f"threads must be >= 0 (0: all usable cores), got {threads}")
    check_provider(provider, runs=pipeline is None)
    check_out_path(out_dir)
    plan = make_plan(kernels, scale, noise, seed, batch, min_confidence, top)
    if top is not None:
        log(f"--top {top}: confidence >= {plan.min_confidence:.4g}, "
            f"{len(plan.pool)} kernels kept")
    pipe = Pipeline(plan.pool, pipeline, scale=plan.scale) if pipeline is not None else None
    if pipe is None:
        _check_onnx_kernel_size(plan.pool, kernels)
    files = list_hr_files(hr_dir)
    settings = {**plan.settings(hr_dir), "copy_hr": copy_hr,
                **(pipe.settings() if pipe else NO_PIPELINE)}
    return DegradeJob(plan, pipe, files, out_dir, settings, batch, provider, threads or None,
                      copy_hr)


def _check_onnx_kernel_size(pool: KernelPool, kernels: object) -> None:
    """Refuse, naming the pool, kernels larger than the ONNX degrader takes."""
    from kgengine.export.graph import MAX_KERNEL_SIZE

    if pool.kernel_size > MAX_KERNEL_SIZE:
        where = "the kernel pool" if isinstance(kernels, KernelPool) else shown(kernels)
        raise KGEngineError(f"{where}: kernel size {pool.kernel_size} is above the ONNX "
                            f"degrader's limit {MAX_KERNEL_SIZE} (pipeline options such as "
                            "--jpeg take larger kernels)")


def run_job(job: DegradeJob, hooks: JobHooks) -> DegradeReport:
    """Run a job of :func:`plan_job` (see :func:`degrade_folder`): create ``out_dir``, lock
    it, remove a killed run's temporary files, make the pairs; a job stopped before it
    wrote a file takes away the folders it created.

    Raises:
        KGEngineError: another job holds the folder, settings differ from those the folder
            holds, or the provider cannot run here.
    """
    out_dir = job.out_dir
    created = missing_top(out_dir)
    try:
        ensure_dir(out_dir)
        with lock_out_dir(out_dir):
            stale = clean_stale_tmp(out_dir)
            if stale:
                hooks.log(f"removed {len(stale)} temporary files of an interrupted run")
            return _run(job.plan, job.pipe, job.files, out_dir, hooks, job.settings,
                        batch=job.batch, provider=job.provider, threads=job.threads,
                        copy_hr=job.copy_hr)
    except KGEngineError:
        remove_unused(out_dir, created)  # a job stopped before writing a file leaves nothing
        raise


def _run(plan: PairPlan, pipe: Pipeline | None, files: list[Path], out_dir: Path,
         hooks: JobHooks, settings: dict, *, batch: int, provider: str, threads: int | None,
         copy_hr: bool) -> DegradeReport:
    """Check the settings, skip the pairs already there, start the session, record the
    settings, make the others, rewrite the manifest sorted."""
    record = check_settings(out_dir, settings)
    entries = read_manifest(out_dir / MANIFEST)
    _void_rivals(out_dir, entries, files, hooks.log)
    for p in files:  # an HR file edited in place: its old pair goes before the redo
        change = hr_change(entries[p.name], p) if p.name in entries else None
        if change:
            void_pair(out_dir, entries.pop(p.name))
            hooks.log(f"{shown(p)}: redone, its HR file changed since its pair was made "
                      f"({change})")
        elif "hr_sha256" in entries.get(p.name, {}):  # touched, same bytes: not hashed again
            entries[p.name].update(hr_identity(p, entries[p.name]["hr_sha256"]))
    there = {p for p in files if is_done(out_dir, entries.get(p.name))}
    todo = [p for p in files if p not in there]
    choice = open_session(plan, out_dir, provider, threads) if todo and pipe is None else None
    if record:
        record_settings(out_dir, settings)
    write_manifest(out_dir / MANIFEST, entries)  # clean: before appending after a torn line
    report = DegradeReport(out_dir, len(files), 0, len(there))
    hooks.total(len(files))
    for p in sorted(there):
        hooks.item_finished(shown(p.name), "skipped", "")
    if not todo:
        return report
    if pipe is not None:
        new = run_pipeline_pairs(plan, pipe, todo, out_dir, report, hooks, batch=batch,
                                 copy_hr=copy_hr)
    else:
        new = run_pairs(plan, todo, out_dir, report, hooks, batch=batch, choice=choice,
                        copy_hr=copy_hr)
    entries.update((e["name"], e) for e in new)
    write_manifest(out_dir / MANIFEST, entries)
    return report


def _void_rivals(out_dir: Path, entries: dict[str, dict], files: list[Path],
                 log: Callable[[str], None]) -> None:
    """Remove the entries (and the files) of pairs whose files a listed HR file's pair
    also claims (:func:`~kgengine.degradation.manifest.rival_entries`: an HR file renamed
    within its stem), and the listed file's own entry with them, so that it is made again:
    which of the two wrote the files last is not known. One ``log`` line per listed file.
    Entries of HR files no longer listed that claim no listed file's pair stay."""
    for p, names in rival_entries(entries, files).items():
        for name in names:
            void_pair(out_dir, entries.pop(name))
        own = entries.pop(p.name, None)
        if own is not None:
            void_pair(out_dir, own)
        log(f"{shown(p)}: {'redone' if own else 'made'}, its pair's files lr/{shown(p.stem)}.png "
            f"were also claimed in the manifest by {brief_list(names, 3)}, no longer in the "
            "HR folder (renamed?); that entry and its files are removed")
