"""Custom ops of kgengine's hot paths, each with a PyTorch reference and fast backends.

- :func:`downscale` / :func:`downscale_ref`: strided conv-downscale ``(x ⋆ k)↓s``.
- :func:`sample_patches` / :func:`sample_patches_ref`: fused crop sampling for G and D.
- :mod:`kgengine.ops.rng`: the counter-based random streams shared by all backends.
- :func:`resolve`: an op's function for a device, chosen once (for loops that call it often).
- :func:`backend_report`: which backend each op uses (``kgengine info``).

Layout: ``_spec`` (checks, shapes), ``_torch`` (the references, backend ``torch``),
``_custom`` (what the custom backends share), ``_numba_cpu`` / ``_numba_cuda`` / ``_cupy``
(backends), ``_launch`` (CUDA launch geometry and arguments), ``backend`` (the table),
``downscale`` / ``patches`` (the public ops).

Importing this package does not import Numba or CuPy; their kernels compile on first use.
"""

from __future__ import annotations

from kgengine.ops.backend import backend_report, resolve
from kgengine.ops.downscale import downscale, downscale_ref
from kgengine.ops.patches import PatchBatch, sample_patches, sample_patches_ref

__all__ = [
    "PatchBatch",
    "backend_report",
    "downscale",
    "downscale_ref",
    "resolve",
    "sample_patches",
    "sample_patches_ref",
]
