"""Errors raised by kgengine. The CLI maps every :class:`KGEngineError` to exit code 1."""

from __future__ import annotations


class KGEngineError(Exception):
    """Base class for errors that the CLI reports as one line and exit code 1."""


class BadImageError(KGEngineError):
    """An input image cannot be used: unreadable, truncated, too small, NaN, ...

    The message always starts with the file name, so a batch log line is self-contained.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class TrainingDivergedError(KGEngineError):
    """The GAN produced NaN/inf losses or kernel entries."""


class BadKernelError(KGEngineError, ValueError):
    """A kernel cannot be used: not 2-D, NaN/inf, or a sum that is not positive."""
