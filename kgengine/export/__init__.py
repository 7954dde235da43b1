"""Exports of kgengine's models: ONNX degraders and the trained KernelGAN generator.

The graphs are built directly with ``onnx.helper`` (opset :data:`OPSET`, IR version
:data:`IR_VERSION`, so onnxruntime >= 1.14 runs them); no exporter package is needed.

- :mod:`~kgengine.export.graph`: ONNX graph building blocks (reflect pad, tiled strided Conv,
  noise inputs, the model shell) and the HR size rule :func:`check_hr_size`.
- :mod:`~kgengine.export.degraders`: ``fixed`` and ``pool`` degraders
  (:func:`build_fixed_model`, :func:`build_pool_model`).
- :mod:`~kgengine.export.generator`: the trained generator (``generator``), six layers or
  folded into one kernel (:func:`build_generator_model`, :func:`fold_generator`).
- :mod:`~kgengine.export.metadata`: the metadata every export carries, read back.
- :mod:`~kgengine.export.onnx_file`: check, atomic save and description of a ``.onnx`` file.
- :mod:`~kgengine.export.registry`: kind -> exporter (:data:`EXPORTERS`,
  :func:`export_model`); a new format is one module and one entry there.

>>> from kgengine.export import export_model                              # doctest: +SKIP
>>> export_model("pool", "pool_x2.onnx", kernel_size=13, scale=2).lines   # doctest: +SKIP
"""

from __future__ import annotations

from kgengine.export.degraders import build_fixed_model, build_pool_model
from kgengine.export.generator import (
    build_generator_model,
    check_generator_weights,
    fold_generator,
    load_generator_weights,
)
from kgengine.export.graph import (
    DEFAULT_TILE,
    IR_VERSION,
    OPSET,
    check_hr_size,
    tile_index,
    tiled_weight,
)
from kgengine.export.metadata import read_metadata
from kgengine.export.onnx_file import check_model, describe_io, save_model, summary
from kgengine.export.registry import EXPORTERS, KINDS, Exported, export_model, onnx_exporter

__all__ = [
    "DEFAULT_TILE",
    "EXPORTERS",
    "IR_VERSION",
    "KINDS",
    "OPSET",
    "Exported",
    "build_fixed_model",
    "build_generator_model",
    "build_pool_model",
    "check_generator_weights",
    "check_hr_size",
    "check_model",
    "describe_io",
    "export_model",
    "fold_generator",
    "load_generator_weights",
    "onnx_exporter",
    "read_metadata",
    "save_model",
    "summary",
    "tile_index",
    "tiled_weight",
]
