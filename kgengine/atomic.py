"""Atomic file writes: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then ``os.replace`` it onto ``path``.

    A reader never sees a half-written ``path``; a crash leaves at most a ``.tmp`` file,
    which is removed on failure. Returns ``path`` as a :class:`Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically save ``array`` as a ``.npy`` file."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    return atomic_write(path, write)


def save_mat(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically save a MATLAB ``.mat`` file (v5) with the given variables."""
    from scipy.io import savemat

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            savemat(fh, arrays)

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
