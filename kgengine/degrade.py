"""``degrade``: make an LR image from an HR image and a kernel, in the kgengine convention.

``LR[i, j] = sum_{u,v} k[u, v] * HR[s*i + u - h//2, s*j + v - w//2]`` with whole-sample
reflection outside the image (see :mod:`kgengine.kernel`). This module is the PyTorch
reference that the custom ops, the ONNX degraders and the benchmark are compared against.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor


def reflect_index(n: int, before: int, after: int) -> np.ndarray:
    """Indices into ``[0, n)`` of a whole-sample reflected extension by ``before``/``after``.

    Works for any pad (repeated reflection), including ``n == 1``. Returns an int64 array of
    length ``before + n + after``; e.g. ``n=3, before=2`` starts ``[2, 1, 0, 1, 2, ...]``.
    """
    idx = np.arange(-before, n + after)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx).astype(np.int64)


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Whole-sample reflect padding of the last two dims, for any pad size. (..., H, W)."""
    h, w = x.shape[-2:]
    if top < h and bottom < h and left < w and right < w and x.dim() in (3, 4):
        return F.pad(x, (left, right, top, bottom), mode="reflect")
    ri = torch.from_numpy(reflect_index(h, top, bottom)).to(x.device)
    ci = torch.from_numpy(reflect_index(w, left, right)).to(x.device)
    return x.index_select(-2, ri).index_select(-1, ci)


def degrade_torch(hr: torch.Tensor, kernel: torch.Tensor, scale: int) -> torch.Tensor:
    """Strided correlation ``(hr ⋆ k)↓s`` on tensors.

    Args:
        hr: (B, C, H, W) float tensor.
        kernel: (h, w) shared by the batch, or (B, h, w) one kernel per image; same dtype.
        scale: integer sub-sampling factor s >= 1.
    Returns:
        (B, C, ceil(H/s), ceil(W/s)) tensor.
    """
    if hr.dim() != 4:
        raise ValueError(f"hr: expected (B,C,H,W), got shape {tuple(hr.shape)}")
    b, c, h, w = hr.shape
    kernel = kernel.to(dtype=hr.dtype, device=hr.device)
    if kernel.dim() == 2:
        kernel = kernel.expand(b, *kernel.shape)
    if kernel.dim() != 3 or kernel.shape[0] != b:
        raise ValueError(f"kernel: expected (h,w) or ({b},h,w), got shape {tuple(kernel.shape)}")
    kh, kw = kernel.shape[-2:]
    cy, cx = kh // 2, kw // 2
    # Pad so that output row i reads padded rows s*i .. s*i+kh-1; only the kept rows matter.
    out_h, out_w = -(-h // scale), -(-w // scale)
    bottom = max(0, (out_h - 1) * scale + kh - cy - h)
    right = max(0, (out_w - 1) * scale + kw - cx - w)
    xp = reflect_pad(hr, cy, bottom, cx, right)
    weight = kernel.repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, kh, kw)
    xp = xp.reshape(1, b * c, *xp.shape[-2:])
    y = F.conv2d(xp, weight, stride=scale, groups=b * c)
    return y[..., :out_h, :out_w].reshape(b, c, out_h, out_w)


def _degrade_fast(hr: torch.Tensor, kernel: torch.Tensor, scale: int) -> torch.Tensor:
    """:func:`degrade_torch` computed by :func:`kgengine.ops.downscale` (automatic backend,
    or ``KGENGINE_OPS_BACKEND``) for the scales it supports, else by the reference."""
    from kgengine.ops.downscale import SCALES, downscale  # lazy: kgengine.ops imports us

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
    """
    if isinstance(hr, torch.Tensor):
        k = kernel if isinstance(kernel, torch.Tensor) else torch.as_tensor(np.asarray(kernel))
        return _degrade_fast(hr, k, scale)
    arr = np.asarray(hr, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"hr: expected (H,W) or (H,W,C), got shape {arr.shape}")
    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    t = torch.from_numpy(np.ascontiguousarray(chw))[None]
    k = torch.as_tensor(np.asarray(kernel, dtype=np.float64))
    y = _degrade_fast(t, k, scale)[0].numpy()
    return y[0] if arr.ndim == 2 else y.transpose(1, 2, 0)
