"""kgengine: fast, dependable blind SR kernel estimation (KernelGAN) with ONNX degradation."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kgengine")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

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
