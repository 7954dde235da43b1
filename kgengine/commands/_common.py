"""What every command shares: the one error boundary of the CLI and the option checks.

Every bad value, unusable file or failed write ends as one ``error: <message>`` line on
stderr and exit code 1 (:func:`cli_errors`); option values are checked before any work
(:func:`at_least`, :func:`check_seed`, :func:`check_device`, :func:`check_mode`,
:func:`check_out_dir`, :func:`check_out_file`).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, ParamSpec, TypeVar

import typer

from kgengine.atomic import ensure_dir
from kgengine.config import MAX_SEED
from kgengine.env_settings import check_env
from kgengine.errors import KGEngineError, OutputError, shown

P = ParamSpec("P")
R = TypeVar("R")

#: Generator computations (``--mode``), as :data:`kgengine.trainer.MODES` (not imported: it
#: would load torch for every command).
MODES = ("composed", "layers")
#: Longest error line printed; a longer message is cut with "…".
MAX_LINE = 1000
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def one_line(message: str, limit: int = MAX_LINE) -> str:
    """``message`` as one printable line of at most ``limit`` characters; a longer one keeps
    its start and its end (the reason, after a long path), joined by "…"."""
    text = shown(" ".join(str(message).split()))
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr as one line and exit with code 1."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(1)


def cli_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command: a :class:`KGEngineError` (or any other :class:`OSError`, e.g. an
    unreadable input, or an ``EOFError`` from an empty file) becomes one ``error:`` line and
    exit 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KGEngineError as exc:
            fail(str(exc))
        except OSError as exc:
            where = f"{shown(exc.filename)}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
        except EOFError as exc:  # NumPy on an empty file; click would print "Aborted."
            fail(f"a file ended early (empty or truncated): {exc}")

    return wrapper


def at_least(option: str, value: float | None, low: float) -> None:
    """Raise unless ``value`` (None: not given) is a finite number at least ``low``."""
    if value is not None and not math.isfinite(value):
        raise KGEngineError(f"{option} must be a finite number, got {value}")
    if value is not None and value < low:
        raise KGEngineError(f"{option} must be at least {low}, got {value}")


#: Most restarts per image (``--restarts``): a batch trains K models of each image.
MAX_RESTARTS = 64


def max_threads() -> int:
    """The most ``--threads`` taken: 4 per core, at least 64 (more only oversubscribe; a
    huge value made torch's and onnxruntime's thread pools crash or hang)."""
    return max(64, 4 * (os.cpu_count() or 1))


def check_counts(threads: int | None = None, restarts: int | None = None) -> None:
    """Raise unless ``--threads`` is in [0, :func:`max_threads`] and ``--restarts`` in
    [1, :data:`MAX_RESTARTS`] (None: not given)."""
    at_least("--threads", threads, 0)
    at_least("--restarts", restarts, 1)
    if threads is not None and threads > max_threads():
        raise KGEngineError(f"--threads must be at most {max_threads()} (4 per core), got "
                            f"{threads}")
    if restarts is not None and restarts > MAX_RESTARTS:
        raise KGEngineError(f"--restarts must be at most {MAX_RESTARTS}, got {restarts}")


def check_seed(option: str, value: int | None) -> None:
    """Raise unless ``value`` (None: not given) is a seed in [0, 2**63 - 1]."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise KGEngineError(f"{option} must be between 0 and {MAX_SEED}, got {value}")


def check_device(device: str, *, here: bool = True) -> str:
    """Raise unless ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; with ``here``
    (training in this process) a CUDA device must also exist: torch must see CUDA, and
    ``cuda:N`` be one of its devices (before 0.9.27 a farm made its pool folder first). The
    environment's code-path variables are checked here too (:func:`check_env`)."""
    check_env()
    if not _DEVICE_RE.match(device):
        raise KGEngineError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    if here and device.startswith("cuda"):
        import torch  # only for a GPU

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not n:
            raise KGEngineError(f"--device {device}: torch sees no CUDA device here")
        if device.startswith("cuda:") and int(device[5:]) >= n:
            raise KGEngineError(f"--device {device}: this machine has {n} GPU(s), "
                                f"cuda:0 to cuda:{n - 1}")
    return device


def check_mode(mode: str | None) -> None:
    """Raise unless ``mode`` (None: not given) is one of :data:`MODES`."""
    if mode is not None and mode not in MODES:
        raise KGEngineError(f"--mode: expected composed or layers, got {mode!r}")


def check_stop(stop: str | None) -> None:
    """Raise unless ``stop`` (None: not given) is ``full`` or ``auto``."""
    if stop is not None and stop not in ("full", "auto"):
        raise KGEngineError(f"--stop: expected full or auto, got {stop!r}")


def check_defects(authors_defects: bool, fix_defects: bool) -> None:
    """Refuse ``--authors-defects`` with ``--fix-defects`` (they ask for opposite things)."""
    if authors_defects and fix_defects:
        raise KGEngineError("--authors-defects and --fix-defects ask for opposite things; "
                            "give one (--authors-defects is the default)")


def check_out_dir(out: Path) -> Path:
    """Create the output folder ``out`` now, so that a bad ``-o`` fails before any work.

    Raises:
        OutputError: ``out`` is a file, or it cannot be created or written into.
    """
    return ensure_dir(out)


def check_out_file(out: Path) -> Path:
    """Check an output file's path before any work: not a folder, its folder usable.

    Raises:
        OutputError: ``out`` is a folder, or its folder cannot be created or written into.
    """
    if out.is_dir():
        raise OutputError(out, "is a folder; give a file name")
    ensure_dir(out.parent if str(out.parent) else Path(os.curdir))
    return out


def auto_batch(batch: int, device: str, restarts: int) -> int:
    """``batch``, or where it is 0 the default of ``estimate`` and ``eval``: 8 // ``restarts``
    (the farm's :data:`~kgengine.farm.batching.CPU_BATCH`, at least 1) on a CPU, where an
    image's kernel is the same bytes at any batch size, and 1 on a GPU, where it is not."""
    if batch:
        return batch
    from kgengine.api import resolve_device
    from kgengine.farm.batching import CPU_BATCH

    return max(1, CPU_BATCH // restarts) if resolve_device(device).type == "cpu" else 1


def note_cold_cache(log: Callable[[str], None]) -> None:
    """Say so, through ``log``, when the next training compiles kgengine's Numba kernels: the
    first run after installing or upgrading waits on it before its first iteration (judged
    by D's forward, the largest kernel, :func:`kgengine.numba_util.cold_cache`)."""
    from kgengine.discriminator_kernels import _forward
    from kgengine.numba_util import cold_cache

    if cold_cache(_forward):
        log("first run after installing: Numba compiles kgengine's kernels into its disk cache "
            "before the first iteration (once; 25-45 s on 2 cores)")
