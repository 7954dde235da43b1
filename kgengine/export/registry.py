"""Exporters by kind: one table, so that a new export is one module plus one table entry.

An exporter writes one file and says what it holds::

    exporter(out, **options) -> Exported(path, lines)

:data:`EXPORTERS` maps each kind to its exporter and :func:`export_model` looks one up. The
ONNX kinds wrap a model builder with :func:`onnx_exporter` (build, check, atomic write,
inputs/outputs summary). A new format, say TorchScript, is a module
``kgengine/export/torchscript.py`` defining ``export_torchscript(out, **options) ->
Exported`` plus the entry ``"torchscript": export_torchscript`` below.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx

from kgengine.errors import KGEngineError
from kgengine.export.degraders import build_fixed_model, build_pool_model
from kgengine.export.generator import build_generator_model
from kgengine.export.onnx_file import save_model, summary


@dataclass(frozen=True)
class Exported:
    """A written export: its file and the lines that describe it (inputs, outputs, metadata)."""

    path: Path
    lines: list[str]


#: ``exporter(out, **options)``: write the file ``out``, return what was written.
Exporter = Callable[..., Exported]


def onnx_exporter(build: Callable[..., onnx.ModelProto]) -> Exporter:
    """The exporter of an ONNX builder: ``build(**options)``, check and save, summarise."""

    def export(out: str | os.PathLike, **options: object) -> Exported:
        model = build(**options)
        return Exported(save_model(model, out), summary(model))

    export.__doc__ = f"Write ``{build.__name__}(**options)`` to ``out`` (checked ONNX)."
    return export


#: Every export kgengine can write, by kind.
EXPORTERS: dict[str, Exporter] = {
    "fixed": onnx_exporter(build_fixed_model),
    "pool": onnx_exporter(build_pool_model),
    "generator": onnx_exporter(build_generator_model),
}
KINDS = tuple(EXPORTERS)


def export_model(kind: str, out: str | os.PathLike, **options: object) -> Exported:
    """Write the export ``kind`` (a key of :data:`EXPORTERS`) to ``out``.

    ``options`` are the exporter's keyword arguments, e.g. for ``fixed``: ``kernel`` (h, w),
    ``scale``, ``noise``, ``tile`` (:func:`kgengine.export.degraders.build_fixed_model`).

    Raises:
        KGEngineError: an unknown kind, or the exporter's own errors.
    """
    if kind not in EXPORTERS:
        raise KGEngineError(f"unknown export kind {kind!r}; choose one of {', '.join(KINDS)}")
    return EXPORTERS[kind](out, **options)
