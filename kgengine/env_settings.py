"""The environment variables that choose kgengine's code paths, each parsed in one place.

- ``KGENGINE_OPS_BACKEND``: the backend of the custom ops (:data:`OPS_BACKENDS`; unset:
  automatic), see :mod:`kgengine.ops.backend`;
- ``KGENGINE_CUDA_GRAPH``: ``0``/``off`` (default), ``eager``, or ``1``/``on``/``capture``,
  see :mod:`kgengine.graph_step`;
- ``KGENGINE_NETWORKS``: ``torch`` (case-blind) keeps the PyTorch networks on CPU, unset or
  blank the compiled ones, see :mod:`kgengine.compiled` (checked since 0.9.28: ``Torch``
  or ``pytorch`` were ignored without a word).

The commands check all three before they make any folder or file (:func:`check_env`): a
misspelt value is one line naming the variable, and nothing is written (before 0.9.27 it
surfaced at the first training step, after a farm had recorded its pool settings).
"""

from __future__ import annotations

import os

from kgengine.errors import BadSettingError

OPS_BACKEND_VAR = "KGENGINE_OPS_BACKEND"
#: The op backends by name (the keys of :data:`kgengine.ops.backend.MODULES`, tested).
OPS_BACKENDS = ("torch", "numba", "numba_cuda", "cupy")
CUDA_GRAPH_VAR = "KGENGINE_CUDA_GRAPH"
NETWORKS_VAR = "KGENGINE_NETWORKS"


def torch_networks() -> bool:
    """Whether ``KGENGINE_NETWORKS`` asks for the PyTorch networks (``torch``, case-blind).

    Raises:
        BadSettingError: a value other than ``torch`` or blank.
    """
    raw = os.environ.get(NETWORKS_VAR, "").strip().lower()
    if raw not in ("", "torch"):
        raise BadSettingError(f"{NETWORKS_VAR}: expected torch (or unset), got {raw!r}")
    return raw == "torch"


def ops_backend() -> str | None:
    """The backend named by ``KGENGINE_OPS_BACKEND``, None when unset or blank.

    Raises:
        BadSettingError: a name not in :data:`OPS_BACKENDS`.
    """
    name = os.environ.get(OPS_BACKEND_VAR, "").strip() or None
    if name is not None and name not in OPS_BACKENDS:
        raise BadSettingError(f"{OPS_BACKEND_VAR}: expected one of {OPS_BACKENDS}, got {name!r}")
    return name


def cuda_graph() -> str:
    """``"off"``, ``"eager"`` or ``"capture"`` from ``KGENGINE_CUDA_GRAPH`` (case-blind).

    Raises:
        BadSettingError: any other value.
    """
    raw = os.environ.get(CUDA_GRAPH_VAR, "").strip().lower()
    if raw in ("", "0", "off"):
        return "off"
    if raw == "eager":
        return "eager"
    if raw not in ("1", "on", "capture"):
        raise BadSettingError(f"{CUDA_GRAPH_VAR}: expected 0, 1 or eager, got {raw!r}")
    return "capture"


def check_env() -> None:
    """Raise :class:`BadSettingError` for a bad value of any of the three variables."""
    ops_backend()
    cuda_graph()
    torch_networks()
