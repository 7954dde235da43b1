"""Strided conv-downscale ``y = (x ⋆ k)↓s``, computing only the output pixels that are kept.

``border="reflect"`` (kgengine's kernel convention, same as :func:`degrade_torch`), with
``c_y, c_x = kh // 2, kw // 2``::

    y[b, c, i, j] = sum_{u,v} k[u, v] * x[b, c, R_H(s*i + u - c_y), R_W(s*j + v - c_x)]

for ``i < ceil(H/s)``, ``j < ceil(W/s)``, where ``R_n`` is whole-sample reflection repeated
as often as needed (:func:`reflect_index`), so any kernel size works, also
larger than the image and for H or W = 1.

``border="valid"`` (KernelGAN's generator: no padding)::

    y[b, c, i, j] = sum_{u,v} k[u, v] * x[b, c, s*i + u, s*j + v]

for ``i <= (H - kh) // s``, ``j <= (W - kw) // s``.

The kernel is shared, (kh, kw), or per image, (B, kh, kw); it is applied to every channel
(depthwise). Both borders are differentiable w.r.t. ``x`` and the kernel: custom backends run
the forward; in the backward the kernel gradient
``dL/dk[b,u,v] = sum_{c,i,j} dL/dy[b,c,i,j] * x[b, c, R(s*i+u-c_y), R(s*j+v-c_x)]`` is computed
by Numba on CPU (PyTorch's CPU conv is slow when its weight needs a gradient), the rest by
differentiating the reference (:mod:`kgengine.ops._custom`).

Backends (:mod:`kgengine.ops.backend`), each a module with a ``downscale`` of this op's
signature: ``torch`` = :func:`downscale_ref` (:mod:`kgengine.ops._torch`); ``numba`` (CPU:
poly-phase split of the columns, then SIMD over output columns); ``numba_cuda`` and ``cupy``
(``kernels/downscale.cu``): one thread per output pixel. float32 inputs are accumulated in
float32 (see ``tests/tolerances.py``), float64 in float64. To call one backend many times,
resolve it once: ``fn = resolve("downscale", device)``; ``fn(x, kernel, scale, border)``.
"""

from __future__ import annotations

import torch

from kgengine.ops._spec import (
    BORDERS,
    FAST_DTYPES,
    SCALES,
    device_of,
    output_size,
    reflect_index,
    source_index,
)
from kgengine.ops._torch import degrade_torch, reflect_pad
from kgengine.ops._torch import downscale as downscale_ref
from kgengine.ops.backend import resolve

__all__ = [
    "BORDERS",
    "FAST_DTYPES",
    "SCALES",
    "degrade_torch",
    "downscale",
    "downscale_ref",
    "output_size",
    "reflect_index",
    "reflect_pad",
    "source_index",
]


def downscale(
    x: torch.Tensor,
    kernel: torch.Tensor,
    scale: int,
    border: str = "reflect",
    backend: str | None = None,
) -> torch.Tensor:
    """Strided correlation ``(x ⋆ k)↓s`` (module docstring), by the selected backend.

    Args:
        x: (B, C, H, W) float32/float64 tensor, any strides, CPU or CUDA.
        kernel: (kh, kw) shared or (B, kh, kw) per image; cast to x's dtype and device.
        scale: 1, 2, 3 or 4.
        border: "reflect" (kgengine convention, out ceil(H/s) x ceil(W/s)) or "valid"
            (out (H-kh)//s+1 x (W-kw)//s+1).
        backend: None (automatic), "torch", "numba", "numba_cuda" or "cupy".
    Returns:
        (B, C, out_h, out_w) tensor, dtype and device of x; differentiable w.r.t. x and
        kernel.

    >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1.0
    >>> downscale(x, torch.full((3, 3), 1 / 9), 2, backend="torch")[0, 0]
    tensor([[0.0000, 0.0000, 0.0000],
            [0.0000, 0.1111, 0.0000],
            [0.0000, 0.0000, 0.0000]])
    """
    return resolve("downscale", device_of("x", x), backend)(x, kernel, scale, border)
