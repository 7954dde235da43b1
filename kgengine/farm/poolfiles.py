"""The pool folder's files: layout, clean-up after a kill, and the pool file rebuild.

``POOL_DIR/`` holds ``manifest.sqlite`` (:mod:`kgengine.farm.manifest`), ``kernels/`` (each
done image's files, :func:`kgengine.outputs.write_outputs`) and ``kernel_pool.npz`` (plus
``kernel_pool_x4.npz`` with x4), rebuilt from the ``done`` rows at the end of every run.

A pool heals itself: on start every ``done`` row whose files are missing or unreadable (a
deleted kernel, a truncated report) goes back to ``pending`` with an event saying which file
and why (:func:`heal_done_rows`), and the rebuild leaves out (and queues again) a row whose
files went bad meanwhile instead of stopping (:func:`rebuild_pool`).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kgengine.atomic import remove_stale_tmp
from kgengine.errors import BadKernelError, KGEngineError
from kgengine.farm.manifest import MANIFEST_FILE, Manifest, Row
from kgengine.kernel import check_kernel
from kgengine.outputs import mat_problem
from kgengine.pool import POOL_FILE, POOL_FILE_X4, make_pool, save_pool

#: Per-image output folder inside POOL_DIR.
KERNELS_DIR = "kernels"
#: Pool files inside POOL_DIR.
POOL_X2, POOL_X4 = POOL_FILE, POOL_FILE_X4


class UnusableOutputs(KGEngineError):
    """A ``done`` row's files are missing or cannot be read (the message says which)."""


def check_manifest_kept(pool_dir: Path) -> None:
    """Refuse a pool folder whose ``manifest.sqlite`` is empty (0 bytes) while it holds a
    pool's files: SQLite would start a new, empty job over the old kernels.

    Raises:
        KGEngineError: naming the manifest.
    """
    man = pool_dir / MANIFEST_FILE
    if (man.is_file() and man.stat().st_size == 0
            and ((pool_dir / KERNELS_DIR).is_dir() or (pool_dir / POOL_X2).is_file())):
        raise KGEngineError(f"{man}: empty (0 bytes), but the folder holds a pool's kernels: "
                            "restore the manifest from a backup, or use a new pool folder")


def remove_partial_files(pool_dir: Path) -> int:
    """Delete leftover temporary files of atomic writes cut by a kill
    (:func:`kgengine.atomic.remove_stale_tmp`) in the pool folder and ``kernels/``.

    Returns the number of files removed.
    """
    return sum(len(remove_stale_tmp(folder)) for folder in (pool_dir, pool_dir / KERNELS_DIR))


def load_done_row(pool_dir: Path, row: Row, x4: bool) -> tuple[dict, dict[str, np.ndarray]]:
    """The report and kernels (``x2``, and ``x4`` when ``x4``) of a ``done`` row, checked.

    Every file the row lists must exist; the report must be a JSON object, each kernel a
    usable kernel (:func:`~kgengine.kernel.check_kernel`) and each ``.mat`` hold the same
    kernel (the PNG picture and the generator weights are checked for presence only); no
    file may be empty.

    Raises:
        UnusableOutputs: naming the first file that is missing or unreadable, and why.
    """
    files = row.output_paths
    needed = ["report", "x2_npy"] + (["x4_npy"] if x4 else [])
    lacking = [k for k in needed if k not in files]
    if lacking:
        raise UnusableOutputs(f"the manifest lists no {lacking[0]} file")
    for rel in files.values():
        try:
            st = (pool_dir / rel).stat()
        except OSError:
            raise UnusableOutputs(f"{rel} is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise UnusableOutputs(f"{rel} is missing")
        if st.st_size == 0:
            raise UnusableOutputs(f"{rel} is empty")
    try:
        with open(pool_dir / files["report"], encoding="utf-8") as fh:
            report = json.load(fh)
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise UnusableOutputs(f"{files['report']} is unreadable ({type(exc).__name__})"
                              ) from None
    kernels = {}
    for tag in ("x2", "x4") if x4 else ("x2",):
        rel = files[f"{tag}_npy"]
        try:
            kernels[tag] = np.load(pool_dir / rel, allow_pickle=False)
            check_kernel(kernels[tag], "")
        except BadKernelError as exc:
            raise UnusableOutputs(f"{rel} is not a usable kernel ({str(exc).lstrip(': ')})"
                                  ) from None
        except (OSError, ValueError, EOFError) as exc:
            raise UnusableOutputs(f"{rel} is unreadable ({type(exc).__name__})") from None
        if f"{tag}_mat" in files:
            problem = mat_problem(pool_dir / files[f"{tag}_mat"], kernels[tag])
            if problem:
                raise UnusableOutputs(f"{files[f'{tag}_mat']} {problem}")
    return report, kernels


def heal_done_rows(man: Manifest, pool_dir: Path, x4: bool) -> int:
    """``done`` rows whose files are missing or unreadable -> ``pending`` (redone by this
    run), each with an event saying which file and why.

    Returns the number of rows queued again.
    """
    lost = 0
    for row in man.rows("done"):
        try:
            load_done_row(pool_dir, row, x4)
        except UnusableOutputs as exc:
            man.requeue([row.id], f"output files damaged: {exc}; redone")
            lost += 1
    return lost


def rebuild_pool(man: Manifest, pool_dir: Path, x4: bool,
                 log: Callable[[str], None] = lambda m: None) -> list[Path]:
    """Write ``kernel_pool.npz`` (and ``kernel_pool_x4.npz``) from the ``done`` rows.

    Rows in manifest order; ids = output names, sources = image paths, seeds = the seed of
    the kept training, confidences = the manifest's (NaN where NULL: one training per image),
    reports = the per-image JSON reports. A row whose files became unusable
    (:func:`load_done_row`) is put back to ``pending`` with the reason (one ``log`` line)
    and left out: one bad file never stops the rebuild. When no image is done nothing is
    written and an earlier pool file is removed (its images were all queued again: edited
    or damaged). Returns the files written.

    Raises:
        OutputError: a pool file cannot be written.
    """
    rows, reports, kernels = [], [], []
    for r in man.rows("done"):
        try:
            report, ks = load_done_row(pool_dir, r, x4)
        except UnusableOutputs as exc:
            man.requeue([r.id], f"output files damaged: {exc}; redone by the next run")
            log(f"{r.name}: left out of the pool: {exc}; the next run redoes it")
            continue
        rows.append(r)
        reports.append(report)
        kernels.append(ks)
    if not rows:
        for fname in (POOL_X2, POOL_X4):
            (pool_dir / fname).unlink(missing_ok=True)
        return []
    written = []
    for tag, scale, fname in (("x2", 2, POOL_X2), ("x4", 4, POOL_X4)):
        if tag == "x4" and not x4:
            continue
        pool = make_pool([k[tag] for k in kernels], [r.name for r in rows],
                         [r.path for r in rows], scale, [int(r.seed_used) for r in rows],
                         reports, [r.confidence for r in rows])
        written.append(save_pool(pool_dir / fname, pool))
    return written
