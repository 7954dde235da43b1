"""The ``kgengine`` command line (typer). Commands are thin: they call library functions.

Each command group lives in its own ``kgengine/commands/<name>.py`` module with a
``register(app)`` function; :data:`COMMAND_MODULES` lists them.
"""

from __future__ import annotations

import importlib
import signal

import typer

from kgengine._version import __version__

app = typer.Typer(
    name="kgengine",
    help="Blind SR kernel estimation (KernelGAN) and kernel-based degradation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # docstrings are wrapped at 100 columns: markdown joins their lines into paragraphs, so
    # --help reflows them to the terminal's width instead of breaking each line twice
    rich_markup_mode="markdown",
)

#: Modules under kgengine.commands that add commands to ``app`` (one line each).
COMMAND_MODULES: list[str] = [
    "estimate",
    "info",
    "eval",
    "export",
    "degrade",
    "farm",
    "noise",
]


def _version_callback(value: bool) -> None:
    if value:
        try:
            typer.echo(f"kgengine {__version__}")
        except OSError as exc:  # stdout full or closed: one line, as the commands do
            typer.echo(f"error: {exc.strerror or exc}", err=True)
            raise typer.Exit(1) from None
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Blind SR kernel estimation (KernelGAN) and kernel-based degradation."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"kgengine.commands.{_name}").register(app)


def _terminated(signum: int, _frame: object) -> None:
    """SIGTERM (``kill``, ``timeout``, a batch scheduler) stops the command as Ctrl-C does:
    the file being written is removed and a job's claimed work is given back."""
    raise SystemExit(128 + signum)


def run() -> None:
    """The ``kgengine`` console script: :data:`app`, with SIGTERM handled (:func:`_terminated`;
    without it the process died at once, leaving a temporary file)."""
    signal.signal(signal.SIGTERM, _terminated)
    app(prog_name="kgengine")


if __name__ == "__main__":  # pragma: no cover
    run()
