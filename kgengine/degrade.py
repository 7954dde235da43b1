"""``degrade``: make an LR image from an HR image and a kernel, in the kgengine convention.

``LR[i, j] = sum_{u,v} k[u, v] * HR[s*i + u - h//2, s*j + v - w//2]`` with whole-sample
reflection outside the image (see :mod:`kgengine.kernel`).

The public façade over the strided conv-downscale op :mod:`kgengine.ops.downscale`, which
holds the computation and its PyTorch reference (:func:`degrade_torch`, re-exported here
with :func:`reflect_index` and :func:`reflect_pad` for existing callers).
"""

from __future__ import annotations

import numpy as np
import torch

from kgengine.errors import KGEngineError
from kgengine.kernel import check_scale
from kgengine.ops.downscale import SCALES, degrade_torch, downscale, reflect_index, reflect_pad

ArrayLike = np.ndarray | torch.Tensor

__all__ = ["ArrayLike", "degrade", "degrade_torch", "reflect_index", "reflect_pad"]


def _degrade_tensor(hr: torch.Tensor, kernel: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, ceil(H/s), ceil(W/s)) by :func:`kgengine.ops.downscale`
    (automatic backend, or ``KGENGINE_OPS_BACKEND``) for the scales it supports, else by
    the reference :func:`degrade_torch` (any integer scale)."""
    if scale in SCALES and hr.dim() == 4:
        return downscale(hr, kernel, scale, border="reflect")
    return degrade_torch(hr, kernel, scale)


def degrade(hr: ArrayLike, kernel: ArrayLike, scale: int) -> ArrayLike:
    """Degrade ``hr`` with ``kernel`` by ``scale`` in the kgengine convention.

    Computed by the strided conv-downscale op :func:`kgengine.ops.downscale` (the fastest
    backend for the device; ``KGENGINE_OPS_BACKEND=torch`` selects :func:`degrade_torch`).

    Accepts either a NumPy image ``(H, W)`` / ``(H, W, C)`` (returned as NumPy in the same
    layout and dtype float64) or a tensor ``(B, C, H, W)`` (returned as a tensor), with a
    kernel ``(h, w)`` or, for tensors, ``(B, h, w)``.

    >>> import numpy as np
    >>> x = np.zeros((5, 5)); x[2, 2] = 1.0
    >>> k = np.full((3, 3), 1 / 9)
    >>> degrade(x, k, 1)[2, 2].round(4)
    np.float64(0.1111)

    Raises:
        KGEngineError: ``scale`` not an integer >= 1, or a NumPy call's kernel not finite
            (a NaN in the image gives NaN pixels, as in NumPy).
    """
    scale = check_scale(scale, "degrade")
    if isinstance(hr, torch.Tensor):
        k = kernel if isinstance(kernel, torch.Tensor) else torch.as_tensor(np.asarray(kernel))
        return _degrade_tensor(hr, k, scale)
    arr = np.asarray(hr, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"hr: expected (H,W) or (H,W,C), got shape {arr.shape}")
    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    t = torch.from_numpy(np.ascontiguousarray(chw))[None]
    kernel = np.asarray(kernel, dtype=np.float64)
    if not np.isfinite(kernel).all():
        raise KGEngineError("degrade: the kernel has NaN or inf values")
    k = torch.as_tensor(kernel)
    y = _degrade_tensor(t, k, scale)[0].numpy()
    return y[0] if arr.ndim == 2 else y.transpose(1, 2, 0)
