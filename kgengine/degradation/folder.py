"""The output folder of a degradation job: one writer at a time, no stale temporary files.

Every file of a job is written atomically (:func:`kgengine.atomic.atomic_write`: a temporary
``.<name>.<random>.tmp`` next to the target, then a rename). A job killed mid-write
(SIGKILL, power loss) leaves such a file behind; the next run on the folder removes them
before it starts (:func:`clean_stale_tmp`), while holding the folder's lock
(:func:`lock_out_dir`), so it never removes a file that another live job is writing.

Nothing is created before the job's options are checked: :func:`check_out_path` refuses an
output path that cannot be a folder without creating it, and :func:`remove_unused` takes
away the folders a job created when it stopped before writing any file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kgengine.atomic import exclusive_lock, remove_stale_tmp
from kgengine.errors import OutputError, shown

LOCK_FILE = ".degrade.lock"
#: Sub-folders of an output folder that hold written files.
SUBDIRS = ("", "lr", "hr")


def lock_out_dir(out_dir: str | os.PathLike) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on ``out_dir/.degrade.lock`` (:func:`kgengine.atomic.exclusive_lock`).

    Raises:
        KGEngineError: another process holds the lock.
    """
    return exclusive_lock(out_dir, LOCK_FILE, "another kgengine degrade is writing into this "
                                              "folder")


def clean_stale_tmp(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (:func:`kgengine.atomic.remove_stale_tmp`) of ``out_dir``,
    ``out_dir/lr`` and ``out_dir/hr`` left by an interrupted run (call it holding
    :func:`lock_out_dir`); returns what was removed."""
    return [p for sub in SUBDIRS for p in remove_stale_tmp(Path(out_dir) / sub)]


def missing_top(out_dir: str | os.PathLike) -> Path | None:
    """The topmost of ``out_dir`` and its parents that does not exist (what creating
    ``out_dir`` would create first), or None when ``out_dir`` exists."""
    out_dir = Path(out_dir)
    top = None
    for p in (out_dir, *out_dir.parents):
        if p.exists():
            break
        top = p
    return top


def check_out_path(out_dir: str | os.PathLike) -> None:
    """Raise now, creating nothing, if ``out_dir`` cannot be an output folder because it, or
    one of its parents, is a file.

    Raises:
        OutputError: ``"<out_dir>: is a file, not a folder"`` (as the other commands say) or
            ``"<out_dir>: cannot create the folder: <parent> is a file"``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(out_dir, "is a file, not a folder")
    blocker = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(out_dir, f"cannot create the folder: {shown(blocker)} is a file")


def remove_unused(out_dir: str | os.PathLike, top: Path | None) -> None:
    """Remove what a job that wrote nothing left of the folders it created: ``out_dir``'s
    lock file and empty ``.trt_cache``, then ``out_dir`` and its parents up to ``top`` (the
    first folder it created, :func:`missing_top`) while they are empty. Nothing when ``top``
    is None (the folder was there before) or when the job wrote any other file."""
    if top is None:
        return
    out_dir = Path(out_dir)
    with contextlib.suppress(OSError):
        if {p.name for p in out_dir.iterdir()} - {LOCK_FILE, ".trt_cache"}:
            return
        with contextlib.suppress(OSError):
            (out_dir / ".trt_cache").rmdir()
        (out_dir / LOCK_FILE).unlink(missing_ok=True)
        for p in (out_dir, *out_dir.parents):
            p.rmdir()
            if p == top:
                break
