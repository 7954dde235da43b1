"""The ``kgengine`` command line (typer). Commands are thin: they call library functions.

Each command group lives in its own ``kgengine/commands/<name>.py`` module with a
``register(app)`` function; :data:`COMMAND_MODULES` lists them.
"""

from __future__ import annotations

import importlib

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
        typer.echo(f"kgengine {__version__}")
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


if __name__ == "__main__":  # pragma: no cover
    app()
