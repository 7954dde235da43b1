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
from collections.abc import Iterator
from pathlib import Path

from kgengine.errors import KGEngineError

LOCK_FILE = ".degrade.lock"
#: Sub-folders of an output folder that hold written files.
SUBDIRS = ("", "lr", "hr")


@contextlib.contextmanager
def lock_out_dir(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``out_dir/.degrade.lock`` (released by the OS when the
    process dies, SIGKILL included; POSIX only, elsewhere no lock).

    Raises:
        KGEngineError: another process holds the lock.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    fh = open(out_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise KGEngineError(
                f"{out_dir}: another kgengine degrade is writing into this folder") from None
        yield
    finally:
        fh.close()


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


def display_text(text: str) -> str:
    """``text`` printable as UTF-8: a file name's undecodable bytes (held as lone surrogates,
    see :func:`os.fsdecode`) become ``\\xNN``; valid text is returned unchanged."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
