"""The metadata every kgengine export carries (ONNX ``metadata_props``), and reading it back.

Every model gets the keys of :func:`base_metadata` (``kgengine_version``,
``kernel_convention``, ``opset``) plus its exporter's (``kind``, ``scale``, ``kernel_size``,
...). All values are strings. onnxruntime shows them as
``sess.get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

import os

import onnx
from onnx import helper

from kgengine._version import __version__
from kgengine.export.graph import OPSET
from kgengine.kernel import KERNEL_CONVENTION

#: Keys that :func:`kgengine.export.onnx_file.check_model` requires in every model.
REQUIRED_KEYS = ("kgengine_version", "scale", "kernel_size", "kernel_convention", "opset", "kind")


def base_metadata() -> dict[str, object]:
    """The keys every export carries: kgengine version, kernel convention, ONNX opset."""
    return {"kgengine_version": __version__, "kernel_convention": KERNEL_CONVENTION,
            "opset": OPSET}


def stamp(model: onnx.ModelProto, meta: dict[str, object]) -> onnx.ModelProto:
    """Set ``model``'s metadata to :func:`base_metadata` plus ``meta`` (values as str).

    Returns ``model`` (changed in place).
    """
    helper.set_model_props(model, {k: str(v) for k, v in {**base_metadata(), **meta}.items()})
    return model


def read_metadata(model: onnx.ModelProto | str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of a model (object or ``.onnx`` file) as a dict."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def missing_keys(meta: dict[str, str]) -> list[str]:
    """The :data:`REQUIRED_KEYS` that ``meta`` lacks, in order."""
    return [k for k in REQUIRED_KEYS if k not in meta]
