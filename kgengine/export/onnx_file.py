"""A checked ``.onnx`` file: check a model, write it atomically, describe its inputs/outputs."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import helper

from kgengine.atomic import atomic_write
from kgengine.errors import KGEngineError
from kgengine.export.metadata import missing_keys, read_metadata

#: Metadata keys shown by :func:`summary`.
SUMMARY_KEYS = ("kind", "scale", "kernel_size", "opset")


def check_model(model: onnx.ModelProto) -> None:
    """``onnx.checker`` (with shape inference) plus the kgengine metadata keys.

    Raises:
        onnx.checker.ValidationError: an invalid graph.
        KGEngineError: a required metadata key is missing.
    """
    onnx.checker.check_model(model, full_check=True)
    missing = missing_keys(read_metadata(model))
    if missing:
        raise KGEngineError(f"ONNX model lacks metadata {missing}")


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Check ``model`` and write it atomically to ``path``; returns ``path``."""
    check_model(model)
    data = model.SerializeToString()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write)


def describe_io(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """``(direction, name, shape)`` for each graph input and output, e.g.
    ``("input", "hr", "(N, C, H, W) float32")``."""
    rows = []
    for direction, values in (("input", model.graph.input), ("output", model.graph.output)):
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(t.elem_type).name
            rows.append((direction, v.name, f"({', '.join(dims)}) {dtype}"))
    return rows


def summary(model: onnx.ModelProto) -> list[str]:
    """Lines describing a model: one per input/output, then its :data:`SUMMARY_KEYS`.

    E.g. ``["input  hr: (N, C, H, W) float32", "output lr: (N, C, h, w) float32",
    "kind=fixed, scale=2, kernel_size=13, opset=17"]``.
    """
    lines = [f"{direction:6s} {name}: {shape}" for direction, name, shape in describe_io(model)]
    meta = read_metadata(model)
    return [*lines, ", ".join(f"{k}={meta[k]}" for k in SUMMARY_KEYS)]
