"""The degradation job: :func:`degrade_folder`, a folder of HR images + a kernel pool ->
LR/HR training pairs (see :mod:`kgengine.degradation`)."""

from __future__ import annotations

import os
from pathlib import Path

from kgengine.degradation.manifest import (
    MANIFEST,
    check_settings,
    is_done,
    open_manifest,
    write_manifest,
)
from kgengine.degradation.plan import list_hr_files, make_plan
from kgengine.degradation.runner import DegradeReport, run_pairs
from kgengine.hooks import JobHooks
from kgengine.pool import KernelPool


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
) -> DegradeReport:
    """Make LR/HR pairs from every HR image in ``hr_dir`` (see :mod:`kgengine.degradation`).

    Args:
        hr_dir: folder of HR images (its files, not sub-folders).
        kernels: a :class:`KernelPool`, or what :func:`kgengine.pool.load_pool` reads.
        out_dir: output folder (created; resumable).
        scale: downscaling factor; default: the pool's.
        noise: sigma of additive Gaussian noise on the LR, in [0, 1] units (0 = none).
        seed: picks each image's kernel and noise (with its file name).
        batch: up to this many equal-size images per onnxruntime call.
        provider: ``auto|tensorrt|cuda|cpu`` (:func:`kgengine.providers.make_session`).
        threads: CPU threads for onnxruntime (default: all usable cores).
        hooks: ``total`` (files found), ``item_finished`` per file (``skipped`` when already
            there, ``done``, or ``failed`` with the one-line reason naming the file), and
            ``log`` (the provider chosen and why faster ones were skipped).
    Raises:
        KGEngineError: bad arguments, pool, folder, or provider (not for bad HR files).
    """
    hooks = hooks or JobHooks()
    hr_dir, out_dir = Path(hr_dir), Path(out_dir)
    plan = make_plan(kernels, scale, noise, seed, batch)
    files = list_hr_files(hr_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_settings(out_dir, plan.settings(hr_dir))
    entries = open_manifest(out_dir)
    there = {p for p in files if is_done(out_dir, entries.get(p.name))}
    todo = [p for p in files if p not in there]
    report = DegradeReport(out_dir, len(files), 0, len(there))
    hooks.total(len(files))
    for p in sorted(there):
        hooks.item_finished(p.name, "skipped", "")
    if not todo:
        return report
    new = run_pairs(plan, todo, out_dir, report, hooks, batch=batch, provider=provider,
                    threads=threads)
    entries.update((e["name"], e) for e in new)
    write_manifest(out_dir / MANIFEST, entries)
    return report
