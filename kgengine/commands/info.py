"""``kgengine info``: what this machine offers (torch/CUDA, onnxruntime, Numba, CuPy)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info() -> None:
    """Print versions and which accelerated paths are available here, with reasons."""
    from kgengine.sysinfo import collect

    for section, entries in collect().items():
        typer.echo(f"{section}:")
        for key, value in entries.items():
            typer.echo(f"  {key}: {value}")
