"""The part of every custom backend (``numba``, ``numba_cuda``, ``cupy``) that is the same.

A custom backend writes only its kernels, as *fill* functions on validated arguments and
preallocated outputs; its public-signature op is then one call here, which

1. checks the arguments (:mod:`kgengine.ops._spec`, the same messages as the reference),
2. sends dtypes outside :data:`~kgengine.ops._spec.FAST_DTYPES` to the torch reference,
3. allocates the outputs (shapes from ``_spec``) and runs the fill function,
4. for ``downscale``, makes the result differentiable (:class:`_DownscaleFn`).

Fill functions (all tensors detached; inputs any strides; outputs contiguous):

- ``DownscaleFill(x, k, scale, border, out) -> y``: x (B, C, H, W) float32/float64, k
  (1 or B, kh, kw) in x's dtype/device, out (B, C, out_h, out_w) to write; returns the
  result (``out`` itself, or a copy of it for a device that cannot write ``out``).
- ``KernelGrad(x, grad_out, scale, border, kh, kw) -> (B, kh, kw) float64``: the gradient
  ``dL/dk[b,u,v] = sum_{c,i,j} dL/dy[b,c,i,j] * x[b, c, R(s*i+u-c_y), R(s*j+v-c_x)]``.
- ``PatchesFill(images, cdf, sizes, seeds, iteration, noise_std, outs) -> PatchBatch``:
  sizes (B, 2) and seeds (B,) int64 on the images' device, outs from ``empty_patches``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import kgengine.ops._torch as _torch
from kgengine.ops._spec import (
    FAST_DTYPES,
    PatchBatch,
    check_downscale,
    check_patches,
    empty_downscale,
    empty_patches,
)

DownscaleFill = Callable[[torch.Tensor, torch.Tensor, int, str, torch.Tensor], torch.Tensor]
KernelGrad = Callable[[torch.Tensor, torch.Tensor, int, str, int, int], torch.Tensor]
PatchesFill = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float, PatchBatch], PatchBatch
]


def _forward(
    fill: DownscaleFill, x: torch.Tensor, k: torch.Tensor, scale: int, border: str
) -> torch.Tensor:
    return fill(x.detach(), k.detach(), scale, border, empty_downscale(x, k, scale, border))


class _DownscaleFn(torch.autograd.Function):
    """Forward by a backend's fill function. Backward: the kernel gradient by the backend's
    ``kernel_grad`` if it has one, everything else by differentiating the reference
    (:func:`kgengine.ops._torch.downscale`)."""

    @staticmethod
    def forward(ctx, x, kernel, k, scale, border, fill, kernel_grad):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, kernel)
        ctx.scale, ctx.border, ctx.kernel_grad = scale, border, kernel_grad
        return _forward(fill, x, k, scale, border)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        x, kernel = ctx.saved_tensors
        need_x, need_k = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # backward(create_graph=True): the reference's graph
            return _differentiable_grads(x, kernel, grad_out, ctx.scale, ctx.border,
                                         need_x, need_k) + (None,) * 5
        gx = gk = None
        if need_k and ctx.kernel_grad is not None:
            gk = _kernel_grad_like(ctx.kernel_grad, x, kernel, grad_out, ctx.scale, ctx.border)
            need_k = False
        if need_x or need_k:
            xr = x.detach().requires_grad_(need_x)
            kr = kernel.detach().requires_grad_(need_k)
            with torch.enable_grad():
                y = _torch.downscale(xr, kr, ctx.scale, ctx.border)
            inputs = [t for t in (xr, kr) if t.requires_grad]
            grads = iter(torch.autograd.grad(y, inputs, grad_out))
            gx = next(grads) if need_x else None
            gk = next(grads) if need_k else gk
        return gx, gk, None, None, None, None, None


def _differentiable_grads(x: torch.Tensor, kernel: torch.Tensor, grad_out: torch.Tensor,
                          scale: int, border: str, need_x: bool, need_k: bool
                          ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dL/dx, dL/dkernel)`` (None where not needed) by differentiating the reference with
    ``create_graph=True``, so that they can be differentiated again (a backend's kernel
    gradient has no graph; before 0.9.29 a second derivative failed on the Numba backend)."""
    with torch.enable_grad():
        y = _torch.downscale(x, kernel, scale, border)
        wanted = [t for t, need in ((x, need_x), (kernel, need_k)) if need]
        grads = iter(torch.autograd.grad(y, wanted, grad_out, create_graph=True))
    return (next(grads) if need_x else None), (next(grads) if need_k else None)


def _kernel_grad_like(
    kernel_grad: KernelGrad,
    x: torch.Tensor,
    kernel: torch.Tensor,
    grad_out: torch.Tensor,
    scale: int,
    border: str,
) -> torch.Tensor:
    """dL/dkernel by ``kernel_grad`` ((B, kh, kw) float64), shaped and typed like ``kernel``."""
    kh, kw = kernel.shape[-2:]
    g = kernel_grad(x.detach(), grad_out.detach(), scale, border, kh, kw)  # (B, kh, kw)
    if kernel.dim() == 2:  # shared kernel: sum the per-image gradients
        g = g.sum(0)
    elif kernel.shape[0] == 1:
        g = g.sum(0, keepdim=True)
    return g.to(dtype=kernel.dtype, device=kernel.device)


def downscale(
    fill: DownscaleFill,
    x: torch.Tensor,
    kernel: torch.Tensor,
    scale: int,
    border: str,
    kernel_grad: KernelGrad | None = None,
) -> torch.Tensor:
    """``downscale(x, kernel, scale, border)`` (:mod:`kgengine.ops.downscale`) by ``fill``.

    Returns (B, C, out_h, out_w) in x's dtype and device, differentiable w.r.t. x and kernel.
    """
    k = check_downscale(x, kernel, scale, border)
    if x.dtype not in FAST_DTYPES:
        return _torch.downscale(x, kernel, scale, border)
    kernel = kernel if isinstance(kernel, torch.Tensor) else k
    if torch.is_grad_enabled() and (x.requires_grad or kernel.requires_grad):
        return _DownscaleFn.apply(x, kernel, k.detach(), scale, border, fill, kernel_grad)
    return _forward(fill, x, k, scale, border)


def sample_patches(
    fill: PatchesFill, images: torch.Tensor, cdf: torch.Tensor, sizes_hw: torch.Tensor,
    seeds: torch.Tensor, iteration: int, g_size: int, d_size: int, noise_std: float,
) -> PatchBatch:  # fmt: skip
    """``sample_patches(...)`` (:mod:`kgengine.ops.patches`) by ``fill``: a PatchBatch."""
    sizes, seeds = check_patches(images, cdf, sizes_hw, seeds, g_size, d_size)
    if images.dtype not in FAST_DTYPES:
        return _torch.sample_patches_checked(
            images, cdf, sizes, seeds, iteration, g_size, d_size, noise_std
        )
    outs = empty_patches(images, int(g_size), int(d_size))
    got = fill(images.detach(), cdf.detach(), sizes, seeds, int(iteration), float(noise_std), outs)
    return PatchBatch(*got)
