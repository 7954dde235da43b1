"""What every command shares: the one error boundary of the CLI."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import typer

from kgengine.errors import KGEngineError

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr as one line and exit with code 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def cli_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command: a :class:`KGEngineError` becomes one ``error:`` line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except KGEngineError as exc:
            fail(str(exc))

    return wrapper
