"""Strided conv-downscale ``y = (x ⋆ k)↓s``, computing only the output pixels that are kept.

``border="reflect"`` (kgengine's kernel convention, same as
:func:`kgengine.degrade.degrade_torch`), with ``c_y, c_x = kh // 2, kw // 2``::

    y[b, c, i, j] = sum_{u,v} k[u, v] * x[b, c, R_H(s*i + u - c_y), R_W(s*j + v - c_x)]

for ``i < ceil(H/s)``, ``j < ceil(W/s)``, where ``R_n`` is whole-sample reflection repeated
as often as needed (:func:`kgengine.degrade.reflect_index`), so any kernel size works, also
larger than the image and for H or W = 1.

``border="valid"`` (KernelGAN's generator: no padding)::

    y[b, c, i, j] = sum_{u,v} k[u, v] * x[b, c, s*i + u, s*j + v]

for ``i <= (H - kh) // s``, ``j <= (W - kw) // s``.

The kernel is shared, (kh, kw), or per image, (B, kh, kw); it is applied to every channel
(depthwise). Both borders are differentiable w.r.t. ``x`` and the kernel: custom backends run
the forward; in the backward the kernel gradient
``dL/dk[b,u,v] = sum_{c,i,j} dL/dy[b,c,i,j] * x[b, c, R(s*i+u-c_y), R(s*j+v-c_x)]`` is computed
by Numba on CPU (PyTorch's CPU conv is slow when its weight needs a gradient), the rest by
differentiating the reference (:class:`_DownscaleFn`).

Backends (:mod:`kgengine.ops.backend`): ``torch`` = :func:`downscale_ref`; ``numba`` (CPU:
poly-phase split of the columns, then SIMD over output columns); ``numba_cuda`` and ``cupy``
(``kernels/downscale.cu``): one thread per output pixel. float32 inputs are accumulated in
float32 (see ``tests/tolerances.py``), float64 in float64.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kgengine.degrade import degrade_torch, reflect_index
from kgengine.ops.backend import resolve

BORDERS = ("reflect", "valid")
SCALES = (1, 2, 3, 4)
FAST_DTYPES = (torch.float32, torch.float64)


def output_size(h: int, w: int, kh: int, kw: int, scale: int, border: str) -> tuple[int, int]:
    """Output ``(out_h, out_w)``: ``ceil(n/s)`` for reflect, ``(n - k)//s + 1`` for valid."""
    if border == "reflect":
        return -(-h // scale), -(-w // scale)
    return (h - kh) // scale + 1, (w - kw) // scale + 1


def _check(x: torch.Tensor, kernel: torch.Tensor, scale: int, border: str) -> torch.Tensor:
    """Validate the arguments; return the kernel as (1 or B, kh, kw) with x's dtype/device."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a (B,C,H,W) tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point tensor, got {x.dtype}")
    if border not in BORDERS:
        raise ValueError(f"border: expected one of {BORDERS}, got {border!r}")
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    b, _, h, w = x.shape
    if not isinstance(kernel, torch.Tensor):
        kernel = torch.as_tensor(np.asarray(kernel))
    k = kernel.to(dtype=x.dtype, device=x.device)
    if k.dim() == 2:
        k = k.unsqueeze(0)
    if k.dim() != 3 or k.shape[0] not in (1, b) or min(k.shape[-2:]) < 1:
        raise ValueError(
            f"kernel: expected (kh,kw) or ({b},kh,kw) with kh,kw >= 1, got {tuple(kernel.shape)}"
        )
    kh, kw = k.shape[-2:]
    if min(b, x.shape[1], h, w) < 1:
        raise ValueError(f"x: expected non-empty (B,C,H,W), got {tuple(x.shape)}")
    if border == "valid" and (h < kh or w < kw):
        raise ValueError(
            f"border='valid' needs the image ({h}x{w}) at least as large as the kernel ({kh}x{kw})"
        )
    return k


def source_index(n: int, k: int, scale: int, out: int, border: str) -> np.ndarray:
    """Source row (or column) read by tap ``t = s*i + u``, for ``t < (out-1)*s + k``.

    reflect: ``R_n(t - k//2)``; valid: ``t``. int64 array of length ``(out-1)*s + k``.
    """
    length = (out - 1) * scale + k
    if border == "valid":
        return np.arange(length, dtype=np.int64)
    before = k // 2
    return reflect_index(n, before, max(0, length - before - n))[:length]


def downscale_ref(
    x: torch.Tensor, kernel: torch.Tensor, scale: int, border: str = "reflect"
) -> torch.Tensor:
    """Reference: ``F.conv2d`` with stride (after :func:`reflect_pad` for reflect).

    Args:
        x: (B, C, H, W) float tensor (any strides).
        kernel: (kh, kw) or (B, kh, kw).
        scale: 1, 2, 3 or 4. border: "reflect" or "valid".
    Returns:
        (B, C, out_h, out_w), see :func:`output_size`.
    """
    k = _check(x, kernel, scale, border)
    if border == "reflect":
        return degrade_torch(x, k.expand(x.shape[0], *k.shape[1:]), scale)
    b, c, h, w = x.shape
    weight = k.expand(b, *k.shape[1:]).repeat_interleave(c, dim=0).unsqueeze(1)
    y = F.conv2d(x.reshape(1, b * c, h, w), weight, stride=scale, groups=b * c)
    return y.reshape(b, c, *y.shape[-2:])


def _run_backend(
    name: str, x: torch.Tensor, k: torch.Tensor, scale: int, border: str
) -> torch.Tensor:
    """Forward of a custom backend; ``k`` is (1 or B, kh, kw) in x's dtype/device."""
    b, c, h, w = x.shape
    kh, kw = k.shape[-2:]
    out_h, out_w = output_size(h, w, kh, kw, scale, border)
    if name == "numba":
        from kgengine.ops import _numba_cpu

        rows = source_index(h, kh, scale, out_h, border)
        cols = source_index(w, kw, scale, out_w, border)
        return _numba_cpu.downscale(x, k, scale, rows, cols)
    if name == "numba_cuda":
        from kgengine.ops import _numba_cuda

        return _numba_cuda.downscale(x, k, scale, border == "reflect", out_h, out_w)
    if name == "cupy":
        from kgengine.ops import _cupy

        return _cupy.downscale(x, k, scale, border == "reflect", out_h, out_w)
    raise ValueError(f"backend: no downscale implementation named {name!r}")


class _DownscaleFn(torch.autograd.Function):
    """Forward by a custom backend. Backward: the kernel gradient by Numba on CPU
    (``_numba_cpu.kernel_grad``, the same strided sums with the roles of k and dL/dy
    swapped), everything else by differentiating :func:`downscale_ref`."""

    @staticmethod
    def forward(ctx, x, kernel, scale, border, name):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, kernel)
        ctx.scale, ctx.border, ctx.name = scale, border, name
        k = _check(x, kernel, scale, border)
        return _run_backend(name, x.detach(), k.detach(), scale, border)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x, kernel = ctx.saved_tensors
        need_x, need_k = ctx.needs_input_grad[:2]
        gx = gk = None
        if need_k and ctx.name == "numba":
            gk = _numba_kernel_grad(x, kernel, grad_out, ctx.scale, ctx.border)
            need_k = False
        if need_x or need_k:
            xr = x.detach().requires_grad_(need_x)
            kr = kernel.detach().requires_grad_(need_k)
            with torch.enable_grad():
                y = downscale_ref(xr, kr, ctx.scale, ctx.border)
            inputs = [t for t in (xr, kr) if t.requires_grad]
            grads = iter(torch.autograd.grad(y, inputs, grad_out))
            gx = next(grads) if need_x else None
            gk = next(grads) if need_k else gk
        return gx, gk, None, None, None


def _numba_kernel_grad(
    x: torch.Tensor, kernel: torch.Tensor, grad_out: torch.Tensor, scale: int, border: str
) -> torch.Tensor:
    """dL/dkernel by the Numba CPU backend, shaped and typed like ``kernel``."""
    from kgengine.ops import _numba_cpu

    kh, kw = kernel.shape[-2:]
    out_h, out_w = grad_out.shape[-2:]
    rows = source_index(x.shape[2], kh, scale, out_h, border)
    cols = source_index(x.shape[3], kw, scale, out_w, border)
    g = _numba_cpu.kernel_grad(x.detach(), grad_out, scale, rows, cols, kh, kw)  # (B, kh, kw)
    if kernel.dim() == 2:  # shared kernel: sum the per-image gradients
        g = g.sum(0)
    elif kernel.shape[0] == 1:
        g = g.sum(0, keepdim=True)
    return g.to(dtype=kernel.dtype, device=kernel.device)


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
    k = _check(x, kernel, scale, border)
    name = resolve("downscale", x.device, backend)
    if name == "torch" or x.dtype not in FAST_DTYPES:
        return downscale_ref(x, kernel, scale, border)
    kernel = kernel if isinstance(kernel, torch.Tensor) else k
    if torch.is_grad_enabled() and (x.requires_grad or kernel.requires_grad):
        return _DownscaleFn.apply(x, kernel, scale, border, name)
    return _run_backend(name, x, k, scale, border)
