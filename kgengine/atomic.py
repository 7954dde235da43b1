"""Atomic file writes: write to a temporary file in the target folder, then rename.

This is kgengine's one write layer: every file it writes goes through :func:`atomic_write`,
which turns any :class:`OSError` into an :class:`~kgengine.errors.OutputError` naming the
file and the reason (one line; the jobs then skip that item and go on).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kgengine.errors import KGEngineError, OutputError, shown


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then ``os.replace`` it onto ``path``.

    A reader never sees a half-written ``path``; a crash leaves at most a ``.tmp`` file,
    which is removed on failure. Returns ``path`` as a :class:`Path`.

    Raises:
        OutputError: any :class:`OSError` of the write (full disk, file-size limit, no
            permission, ``path`` a folder, a file in the way of its folder), as one line
            naming ``path`` and the system's reason; nothing is left behind.
    """
    path = Path(path)
    ensure_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        write(tmp)
        _commit(tmp, path)
    except OutputError:
        _remove(tmp)
        raise
    except OSError as exc:
        _remove(tmp)
        raise OutputError(path, f"cannot write ({why(exc)})", exc.errno) from exc
    except BaseException:
        _remove(tmp)
        raise
    return path


def _commit(tmp: str, path: Path) -> None:
    """Flush ``tmp`` to disk and rename it onto ``path`` (the one step that publishes it)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


#: The name of a temporary file of :func:`atomic_write` (``mkstemp``'s 8 random characters).
_TMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` directly in ``folder`` (left by a
    process killed mid-write; call it holding the folder's lock); returns what was removed.
    Other files, hidden ones included, are not touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        if _TMP_NAME.fullmatch(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def process_dir_prefix(kind: str) -> str:
    """``<kind>-<host>-`` : the start of a temporary folder's name that a process makes as
    ``<kind>-<host>-<pid>-<random>`` (``tempfile.mkdtemp(prefix=prefix + f"{pid}-")``), so
    that :func:`remove_dead_process_dirs` can tell whether its maker still runs."""
    return f"{kind}-{platform.node().replace('-', '_')}-"


#: A process's temporary folder untouched for this long (s) may be removed once its
#: process is gone: a live job writes into it (and two containers of one host name have
#: separate process ids, so a pid alone does not tell).
ORPHAN_AGE_S = 600.0


def remove_dead_process_dirs(folder: str | os.PathLike, prefix: str,
                             min_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Remove the folders ``<prefix><pid>-*`` in ``folder`` whose process is gone on this
    machine and which nothing wrote into for ``min_age_s`` seconds (killed mid-job;
    ``prefix`` from :func:`process_dir_prefix`, so another machine's folders on a shared
    disk do not match). Nothing is removed on Windows (no safe liveness probe there)."""
    removed = []
    for p in sorted(Path(folder).glob(f"{glob.escape(prefix)}*")):
        pid = p.name[len(prefix):].split("-", 1)[0]
        with contextlib.suppress(OSError):
            if (pid.isdigit() and p.is_dir() and time.time() - p.stat().st_mtime >= min_age_s
                    and not _alive(int(pid))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (always True on Windows, where
    ``os.kill`` would end it)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by another user
        return True
    return True


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) unless it exists; check it is writable.

    Commands call it on their output folder before any work, so that a bad ``-o`` is one
    line at once rather than a failure after training.

    Raises:
        OutputError: ``path`` is a file, a file is in the way of it, it cannot be created or
            it is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(path, "is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = (f"cannot create the folder: {shown(blocker)} is a file" if blocker
                  else f"cannot create the folder ({why(exc)})")
        raise OutputError(path, reason, exc.errno) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(path, "cannot write into this folder (Permission denied)",
                          errno.EACCES)
    return path


def why(exc: OSError) -> str:
    """The system's reason for ``exc`` in words, e.g. ``"File too large"``; a file in the way
    of a folder says so."""
    text = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        text += ": a file is in the way"
    return text


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically save ``array`` as a ``.npy`` file."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    return atomic_write(path, write)


#: The text of a ``.mat`` file's 116-byte header: scipy writes the time of writing there,
#: so that the same arrays would not give the same bytes.
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by kgengine".ljust(116)


def save_mat(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically save a MATLAB ``.mat`` file (v5) with the given variables; its header
    text is :data:`MAT_HEADER`, so the same arrays give the same bytes."""
    import io

    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, arrays)
    data = MAT_HEADER + buf.getvalue()[len(MAT_HEADER):]

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write)


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically save ``obj`` as indented JSON."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=json_default)
            fh.write("\n")

    return atomic_write(path, write)


def save_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically save a text file."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write)


def json_default(obj: Any) -> Any:
    """``json.dump(..., default=json_default)``: NumPy scalars/arrays and paths as JSON."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike, lock_name: str, busy: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/lock_name`` for the ``with`` block.

    The OS releases it when the process dies (SIGKILL included); POSIX only, elsewhere no
    lock. Raises :class:`KGEngineError` ``"<folder>: <busy>"`` if another process holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    fh = open(folder / lock_name, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise KGEngineError(f"{folder}: {busy}") from None
        yield
    finally:
        fh.close()
