"""Elementwise functions whose value does not depend on where an element sits in its tensor.

PyTorch's CPU kernels compute a contiguous tensor two SIMD vectors at a time and the last
few elements (fewer than two vectors) with scalar code. For some functions the two paths
round differently (measured on the development CPU, AVX2: ``sigmoid`` and ``pow`` with a
fractional exponent, forward and backward; ``exp``, ``log``, ``cos``, ``sqrt`` and the
arithmetic ops agree). An image's value would then depend on the batch's length, and KernelGAN
training turns such last-bit differences into another kernel. :func:`per_image` gives each
image a segment padded to a multiple of :data:`ALIGN` elements and applies the function to
groups of images that stay below PyTorch's parallel grain, so every element takes the SIMD
path whatever the batch size and thread count. Other devices call the function directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

#: Segment alignment in elements (a multiple of two 512-bit vectors of float32).
ALIGN = 64
#: PyTorch's ``at::internal::GRAIN_SIZE``: smaller tensors are processed by one thread.
GRAIN = 32768


def per_image(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              fill: float = 0.0) -> torch.Tensor:
    """``fn(x)`` for an elementwise ``fn``, each image's elements on the SIMD path (CPU).

    Args:
        fn: an elementwise, differentiable function.
        x: (B, ...) tensor, image b in ``x[b]``.
        fill: the padding value (one where ``fn`` or its derivative is finite).
    Returns:
        ``fn(x)``, same shape; differentiable (the padding gets no gradient).
    """
    if x.device.type != "cpu":
        return fn(x)
    b = x.shape[0]
    flat = x.reshape(b, -1)
    n = flat.shape[1]
    padded = -(-n // ALIGN) * ALIGN
    if padded != n:
        flat = F.pad(flat, (0, padded - n), value=fill)
    per = max(1, GRAIN // padded)
    out = fn(flat) if b <= per else torch.cat([fn(part) for part in flat.split(per)])
    return out[:, :n].reshape(x.shape)
