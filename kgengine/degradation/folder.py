"""The output folder of a degradation job: one writer at a time, no stale temporary files.

Every file of a job is written atomically (:func:`kgengine.atomic.atomic_write`: a temporary
``.<name>.<random>.tmp`` next to the target, then a rename). A job killed mid-write
(SIGKILL, power loss) leaves such a file behind; the next run on the folder removes them
before it starts (:func:`clean_stale_tmp`), while holding the folder's lock
(:func:`lock_out_dir`), so it never removes a file that another live job is writing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kgengine.atomic import exclusive_lock

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
    """Remove the ``.*.tmp`` files of ``out_dir``, ``out_dir/lr`` and ``out_dir/hr`` left by
    an interrupted run (call it holding :func:`lock_out_dir`); returns what was removed."""
    removed = []
    for sub in SUBDIRS:
        folder = Path(out_dir) / sub
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed

