"""Custom ops of kgengine's hot paths, each with a PyTorch reference and fast backends.

- :func:`downscale` / :func:`downscale_ref`: strided conv-downscale ``(x ⋆ k)↓s``.
- :func:`sample_patches` / :func:`sample_patches_ref`: fused crop sampling for G and D.
- :mod:`kgengine.ops.rng`: the counter-based random streams shared by all backends.
- :func:`backend_report`: which backend each op uses (``kgengine info``).

Importing this package does not import Numba or CuPy; their kernels compile on first use.
"""

from __future__ import annotations

from kgengine.ops.backend import backend_report
from kgengine.ops.downscale import downscale, downscale_ref
from kgengine.ops.patches import PatchBatch, sample_patches, sample_patches_ref

__all__ = [
    "PatchBatch",
    "backend_report",
    "downscale",
    "downscale_ref",
    "sample_patches",
    "sample_patches_ref",
]
