"""kgengine: fast, dependable blind SR kernel estimation (KernelGAN) with ONNX degradation."""

from __future__ import annotations

from kgengine._version import __version__
from kgengine.config import KernelGANConfig
from kgengine.degrade import degrade
from kgengine.errors import BadImageError, KGEngineError

__all__ = [
    "BadImageError",
    "EstimateResult",
    "KGEngineError",
    "KernelGANConfig",
    "__version__",
    "degrade",
    "estimate_kernel",
    "estimate_kernels",
]


def __getattr__(name: str):  # lazy: importing kgengine stays cheap for the CLI
    if name in ("estimate_kernel", "estimate_kernels", "EstimateResult"):
        from kgengine import api

        return getattr(api, name)
    raise AttributeError(name)
