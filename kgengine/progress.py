"""Rich progress bars for the CLI and the benches: one display, wired to :class:`JobHooks`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kgengine.hooks import JobHooks


def stderr_console() -> Console:
    """The console of progress bars and per-item lines: stderr, so that stdout holds the
    results alone (``kgengine eval ... > table.txt``), and at least 40 columns wide (with
    ``COLUMNS=0`` Rich printed every line as nothing)."""
    console = Console(stderr=True)
    return console if console.width >= 40 else Console(stderr=True, width=80)


def make_progress(console: Console | None = None) -> Progress:
    """A progress display with description, bar, count, elapsed and remaining time, on
    ``console`` (default :func:`stderr_console`)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or stderr_console(),
    )


@contextmanager
def progress_hooks(description: str, console: Console | None = None) -> Iterator[JobHooks]:
    """A live display for one job: an overall bar of items plus a bar for the current batch.

    ``item_finished`` advances the overall bar (except for ``retry``), ends the current
    batch's bar where it is (a batch whose images all stopped early, ``--stop auto``, ends
    before its planned steps) and prints other states than ``done``/``skipped`` as
    ``"<state>: <detail>"`` when there is a detail; ``log`` prints a line above the bars.
    """
    with make_progress(console) as bar:
        overall = bar.add_task(description, total=None)
        current: dict[str, int] = {}

        def log(msg: str) -> None:
            bar.console.print(msg, markup=False, highlight=False, soft_wrap=True)

        def item_finished(name: str, state: str, detail: str) -> None:
            if state != "retry":
                bar.advance(overall)
            if "task" in current:  # the batch is over: its bar ends where the training did
                task = next(t for t in bar.tasks if t.id == current["task"])
                if task.completed:
                    bar.update(task.id, total=task.completed)
            if state not in ("done", "skipped") and detail:
                log(f"{state}: {detail}")

        def batch_started(names: list[str], steps: int) -> None:
            if "task" in current:
                bar.remove_task(current.pop("task"))
            label = f"batch of {len(names)}: {names[0]}" + ("…" if len(names) > 1 else "")
            current["task"] = bar.add_task(label, total=steps)

        def batch_progress(done: int) -> None:
            if "task" in current:
                bar.update(current["task"], completed=done)

        yield JobHooks(
            log=log,
            total=lambda n: bar.update(overall, total=n),
            item_finished=item_finished,
            batch_started=batch_started,
            batch_progress=batch_progress,
        )
