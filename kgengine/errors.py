"""Errors raised by kgengine. The CLI maps every :class:`KGEngineError` to exit code 1.

Also the two helpers every message uses: :func:`shown` (a path as printable text, whatever
bytes its name holds) and :func:`brief_list` (at most a few items, then "... and N more"), so
that an error is always one short line that any terminal can print.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

#: Control characters (a newline in a file name, ...) as escapes: ``\\n``, ``\\x1b``.
_CONTROL = {c: ascii(chr(c))[1:-1] for c in (*range(32), 127)}


def shown(path: object) -> str:
    """``path`` as printable text on one line: bytes that are not UTF-8 appear as ``\\xNN``
    escapes, control characters (a newline in a file name) as ``\\n``, ``\\x1b``, ...

    A file name that is not valid UTF-8 (Python keeps its bytes as surrogates) would make
    ``print`` fail; ``shown(Path(b"bad\\xff.png"))`` is ``"bad\\\\xff.png"``.
    """
    text = os.fsdecode(path) if isinstance(path, bytes | os.PathLike) else str(path)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that are no escaped bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8").translate(_CONTROL)
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)


def brief_list(items: Iterable[object], limit: int = 10) -> str:
    """``"a, b, c"``: at most ``limit`` items, then ``"... and N more"`` (bounded messages)."""
    items = list(items)
    text = ", ".join(shown(i) for i in items[:limit])
    return text + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


class KGEngineError(Exception):
    """Base class for errors that the CLI reports as one line and exit code 1."""


class BadImageError(KGEngineError):
    """An input image cannot be used: unreadable, truncated, too small, NaN, ...

    The message always starts with the file name, so a batch log line is self-contained.
    ``BadImageError(message)`` alone (no reason) keeps ``message`` whole, with ``path`` ""
    and ``reason`` the message: how a ``DataLoader`` raises a worker's error again in the
    main process (before 0.9.27 that failed and torch raised a ``RuntimeError`` instead).
    """

    def __init__(self, path: object, reason: str | None = None) -> None:
        self.path, self.reason = ("", str(path)) if reason is None else (str(path), reason)
        super().__init__(self.reason if reason is None else f"{shown(path)}: {reason}")

    def __reduce__(self) -> tuple:  # pickled (worker processes) with its path and reason
        return (type(self), (self.path, self.reason) if self.path else (self.reason,))


class OutputError(KGEngineError, OSError):
    """A file or folder cannot be written: full disk, file-size limit, no permission, a
    file where a folder should be, ...

    Raised by :func:`kgengine.atomic.atomic_write` (every kgengine write goes through it) and
    :func:`kgengine.atomic.ensure_dir`. The message is ``"<path>: <reason>"``; it is also an
    :class:`OSError` (``filename`` = the path, ``strerror`` = the reason, ``errno`` as the
    system gave it), so code that catches ``OSError`` keeps working. Jobs treat it like a bad
    image: that item fails with this line, the others go on. ``OutputError(message)`` alone
    keeps ``message`` whole (as :class:`BadImageError`).
    """

    def __init__(self, path: object, reason: str | None = None, errno: int | None = None
                 ) -> None:
        if reason is None:
            path, reason = "", str(path)
        OSError.__init__(self, errno, reason, str(path))
        self.path = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{shown(self.path)}: {self.reason}" if self.path else self.reason

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.reason, self.errno) if self.path
                else (self.reason, None, self.errno))


class TrainingDivergedError(KGEngineError):
    """The GAN produced NaN/inf losses or kernel entries."""


class BadKernelError(KGEngineError, ValueError):
    """A kernel cannot be used: not 2-D, NaN/inf, or a sum that is not positive."""


class BadSettingError(KGEngineError, ValueError):
    """A setting cannot be used: an unknown value of an environment variable such as
    ``KGENGINE_OPS_BACKEND`` or ``KGENGINE_CUDA_GRAPH`` (one line naming it and the value)."""
