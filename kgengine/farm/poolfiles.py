"""The pool folder's files: layout, clean-up after a kill, and the pool file rebuild.

``POOL_DIR/`` holds ``manifest.sqlite`` (:mod:`kgengine.farm.manifest`), ``kernels/`` (each
done image's files, :func:`kgengine.outputs.write_outputs`) and ``kernel_pool.npz`` (plus
``kernel_pool_x4.npz`` with x4), rebuilt from the ``done`` rows at the end of every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kgengine.farm.manifest import Manifest
from kgengine.pool import make_pool, save_pool

#: Per-image output folder inside POOL_DIR.
KERNELS_DIR = "kernels"
#: Pool files inside POOL_DIR.
POOL_X2, POOL_X4 = "kernel_pool.npz", "kernel_pool_x4.npz"


def remove_partial_files(pool_dir: Path) -> int:
    """Delete leftover ``.<name>.<random>.tmp`` files of atomic writes cut by a kill.

    Returns the number of files removed.
    """
    n = 0
    for folder in (pool_dir, pool_dir / KERNELS_DIR):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def requeue_missing_outputs(man: Manifest, pool_dir: Path) -> int:
    """``done`` rows whose report file is gone (deleted by hand) -> ``pending``.

    Returns the number of rows queued again.
    """
    lost = [r.id for r in man.rows("done")
            if not (pool_dir / r.output_paths.get("report", "?")).is_file()]
    if lost:
        man.requeue(lost, "output files missing; redone")
    return len(lost)


def rebuild_pool(man: Manifest, pool_dir: Path, x4: bool) -> list[Path]:
    """Write ``kernel_pool.npz`` (and ``kernel_pool_x4.npz``) from the ``done`` rows.

    Rows in manifest order; ids = output names, sources = image paths, seeds = the seed of
    the kept training, confidences = the manifest's (NaN where NULL: one training per image),
    reports = the per-image JSON reports. Nothing is written when no image is done. Returns
    the files written.
    """
    rows = man.rows("done")
    if not rows:
        return []
    reports = []
    for r in rows:
        with open(pool_dir / r.output_paths["report"], encoding="utf-8") as fh:
            reports.append(json.load(fh))
    written = []
    for tag, scale, fname in (("x2", 2, POOL_X2), ("x4", 4, POOL_X4)):
        if tag == "x4" and not x4:
            continue
        kernels = [np.load(pool_dir / r.output_paths[f"{tag}_npy"]) for r in rows]
        pool = make_pool(kernels, [r.name for r in rows], [r.path for r in rows], scale,
                         [int(r.seed_used) for r in rows], reports,
                         [r.confidence for r in rows])
        written.append(save_pool(pool_dir / fname, pool))
    return written
