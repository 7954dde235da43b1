"""The one callback protocol of kgengine's long jobs (farm, degrade, eval, synth).

A job reports through a :class:`JobHooks`; every callback is optional (a no-op by default), so
library callers pass nothing and the CLI passes the rich progress display of
:func:`kgengine.progress.progress_hooks`. A job never prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _noop(*_args: object) -> None:
    return None


@dataclass
class JobHooks:
    """Progress and message callbacks of a long job.

    Attributes:
        log: one message line (an error, a warning, a note), already self-contained.
        total: the number of items (images, pairs) this run will handle, once known.
        item_finished: ``(name, state, detail)`` after each item; ``state`` is ``done``,
            ``failed``, ``skipped`` or ``retry``; ``detail`` is the reason ("" when done).
        batch_started: ``(names, steps)`` when a group of items starts ``steps`` steps
            (a training batch and its iterations).
        batch_progress: ``steps_done`` within the current group.
    """

    log: Callable[[str], None] = _noop
    total: Callable[[int], None] = _noop
    item_finished: Callable[[str, str, str], None] = _noop
    batch_started: Callable[[list[str], int], None] = _noop
    batch_progress: Callable[[int], None] = _noop
