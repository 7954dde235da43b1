"""``kgengine estimate`` (placeholder until the trainer lands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
