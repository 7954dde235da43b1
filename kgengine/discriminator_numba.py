"""The discriminator's forward and backward as compiled Numba CPU kernels.

Same maths as :func:`kgengine.discriminator.forward` (the reference: ~60 PyTorch operations
forward and as many backward): spectral normalisation with one power iteration, the 7x7
convolution as one matrix product over crop columns, [1x1 conv, per-crop BatchNorm, ReLU]
blocks, a 1x1 conv and a sigmoid. Here each pass is one compiled call: the products go to
BLAS (``np.dot``), everything between them (BatchNorm, ReLU, im2col, the power iteration) is
a loop over contiguous rows, and there is no autograd graph inside D.

Batch invariance: each (image, crop) is one task (BatchNorm is per crop) run on ``threads``
threads (:func:`kgengine.numba_util.run_tasks`), the same code on the same shapes whatever B
is; weight gradients are summed over an image's crops in crop order. No bit depends on B.

Backward of the pieces (per image; ``Ws = W / sigma`` with ``sigma = u^T W v``, u and v held
constant; BatchNorm ``xhat = (z - mean) * inv``, ``y = gamma * xhat + beta``, statistics over
the P positions of one crop; ``h = max(y, 0)``)::

    dW     = dWs / sigma - (sum dWs * W) / sigma^2 * u v^T
    dy     = dh * [h > 0],  dgamma = sum dy * xhat,  dbeta = sum dy,  dxhat = dy * gamma
    dz     = inv / P * (P * dxhat - sum dxhat - xhat * sum(dxhat * xhat))
    do     = ds * s * (1 - s)     (sigmoid)
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from kgengine.discriminator import TRAINABLE
from kgengine.discriminator_kernels import _backward, _forward, _normalise, _param_grads
from kgengine.numba_util import give, run_tasks, single_threaded_blas, take
from kgengine.numba_util import shared_view as _np

SN_KEYS = ("u0", "v0", "um", "vm", "uf", "vf")


class Pass:
    """One D pass's saved state for :func:`fused_backward` (see :func:`fused_forward`)."""

    def __init__(self, x_shape: tuple, k: int, key: tuple, bufs: tuple, threads: int,
                 shapes: list, keep: tuple) -> None:
        self.x_shape, self.k, self.key, self.bufs, self.threads = x_shape, k, key, bufs, threads
        self.shapes, self.keep = shapes, keep
        self.probs = keep[-1][-1]  # (B, N, P): the output, image-major


def _arr(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else _np(t)


def fused_forward(x: torch.Tensor, params: list, sn: list, threads: int, keep: bool,
                  copy: bool = True) -> tuple[torch.Tensor, Pass | None]:
    """D's forward on crops x (N, B, 3, S, S): the probabilities (N, B, S-k+1, S-k+1) and,
    if ``keep``, the state a :func:`fused_backward` needs. ``params``: the trainable tensors
    (or NumPy views of them) in :data:`TRAINABLE` order; ``sn``: u, v of each weight
    (:data:`SN_KEYS` order), updated in place. ``copy=False``: the weights and u, v are
    not changed before the backward (else it keeps copies). No autograd."""
    w0, b0, wm, bm, gamma, beta, wf, bf = params
    n, bsz, _, size, _ = x.shape
    ch, k, n_mid = w0.shape[1], w0.shape[-1], wm.shape[1]
    npos = (size - k + 1) ** 2
    shapes = [t.shape for t in params]
    w0, wm, gamma, wf = (_arr(t) for t in (w0.reshape(bsz, ch, -1), wm, gamma, wf))
    sn = [_arr(t) for t in sn]
    dt = w0.dtype
    key = (bsz, n, w0.shape[2], npos, ch, n_mid, dt)
    # work buffers come back from this pass's backward (no fresh pages per pass)
    bufs = take(("fwd", *key), lambda: (
        np.empty((bsz, n_mid + 2), np.float64), np.empty_like(w0), np.empty_like(wm),
        np.empty_like(wf), np.empty((bsz, n, w0.shape[2], npos), dt),
        np.empty((bsz, n, n_mid + 1, ch, npos), dt), np.empty((bsz, n, n_mid, ch, npos), dt),
        np.empty((bsz, n, n_mid, ch), dt)))
    sig, w0s, wms, wfs, cols, hs, xhat, inv = bufs
    s = np.empty((bsz, n, npos), dt)  # the output: not reused
    _normalise(w0, wm, wf, *sn, sig, w0s, wms, wfs)
    run_tasks(_forward, threads, bsz * n, _np(x.contiguous()), k, w0s, _arr(b0), wms,
              _arr(bm), gamma, _arr(beta), wfs, _arr(bf), cols, hs, xhat, inv, s)
    out = torch.from_numpy(s).view(bsz, n, size - k + 1, size - k + 1).transpose(0, 1)
    if not keep:  # no backward will come: the buffers are free again
        give(("fwd", *key), bufs)
        return out, None
    # copies of what a later pass or an optimiser step may change in place: u, v and the
    # weights as this pass used them (NumPy writes do not bump torch's version counters)
    if copy:
        w0, wm, wf, gamma = (a.copy() for a in (w0, wm, wf, gamma))
        sn = [a.copy() for a in sn]
    saved = (w0s, wms, gamma, wfs, cols, hs, xhat, inv, s)
    return out, Pass(tuple(x.shape), k, key, bufs, threads, shapes,
                     (w0, wm, wf, sn, sig, saved))


def fused_backward(state: Pass, grad: torch.Tensor | np.ndarray, need_x: bool, need_p: bool
                   ) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
    """The backward of one :func:`fused_forward` (once): ``grad`` w.r.t. its output, (N, B,
    h, w) or as a NumPy array like :attr:`Pass.probs` (B, N, P); returns dx (N, B, 3, S, S)
    if ``need_x`` and the trainable parameters' gradients (:data:`TRAINABLE` order) if
    ``need_p``."""
    if state.keep is None:
        raise RuntimeError("discriminator_numba: backward through one D pass runs once")
    (w0, wm, wf, sn, sig, saved), state.keep = state.keep, None
    s = saved[-1]
    bsz, n = s.shape[:2]
    dt = s.dtype
    if isinstance(grad, np.ndarray):
        ds = grad.astype(dt, copy=False).reshape(bsz, n, -1)
    else:
        ds = _np(grad.transpose(0, 1).to(torch.from_numpy(s).dtype).contiguous())
    dx = np.empty(state.x_shape if need_x else (1, 1, 0, 0, 0), dt)
    # per-crop parts of the gradients: w0s, b0, wms, bm, gamma, beta, wfs, bf
    shapes = [w0.shape[1:], w0.shape[1:2], wm.shape[1:], wm.shape[1:3], wm.shape[1:3],
              wm.shape[1:3], wf.shape[1:], (1,)]
    pkey = ("bwd", need_p, *state.key)
    parts = take(pkey, lambda: [
        np.empty((bsz, n, *sh) if need_p else (bsz, n) + (0,) * len(sh), dt) for sh in shapes])
    run_tasks(_backward, state.threads, bsz * n, ds.reshape(bsz, n, -1), need_x, need_p,
              state.k, *saved, dx, *parts)
    dp = None
    if need_p:
        dw0, dwm, dwf = np.empty_like(w0), np.empty_like(wm), np.empty_like(wf)
        _param_grads(w0, wm, wf, *sn, sig, parts[0], parts[2], parts[6], dw0, dwm, dwf)
        dense = [dw0, parts[1].sum(1), dwm] + [p.sum(1) for p in parts[3:6]] + \
            [dwf, parts[7].sum(1)]
        dp = [torch.from_numpy(np.ascontiguousarray(g)).view(sh)
              for g, sh in zip(dense, state.shapes, strict=True)]
    give(pkey, parts)
    give(("fwd", *state.key), state.bufs)
    return (torch.from_numpy(dx) if need_x else None), dp


class _FusedD(torch.autograd.Function):
    """One autograd node per D pass around :func:`fused_forward` and :func:`fused_backward`."""

    @staticmethod
    def forward(ctx, x, w0, b0, wm, bm, gamma, beta, wf, bf, sn, threads, grad):  # noqa: ANN001, ANN205, D102
        out, ctx.state = fused_forward(x, [w0, b0, wm, bm, gamma, beta, wf, bf], sn, threads,
                                       grad)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205, D102
        if ctx.state is None:
            raise RuntimeError("discriminator_numba: backward through one D pass runs once")
        need_p = any(ctx.needs_input_grad[1:9])
        dx, dp = fused_backward(ctx.state, grad, ctx.needs_input_grad[0], need_p)
        return (dx, *(dp or [None] * 8), None, None, None)


def forward(x: torch.Tensor, p: dict[str, torch.Tensor], threads: int | None = None
            ) -> torch.Tensor:
    """Numba CPU :func:`kgengine.discriminator.forward`: same arguments, same result up to
    rounding, differentiable w.r.t. x and the trainable parameters; u, v updated in place.

    Args:
        x: (N, B, 3, S, S) crops (image b's crops go to D_b); CPU, float32 or float64.
        p: batched parameters (leading axis B, see ``init_params``), contiguous.
        threads: threads for the (image, crop) tasks (default: PyTorch's thread count).
    Returns:
        (N, B, S-k+1, S-k+1) probabilities in (0, 1).
    """
    single_threaded_blas()
    sn = [p[key] for key in SN_KEYS]
    threads = torch.get_num_threads() if threads is None else max(1, threads)
    params = [p[key] for key in TRAINABLE]
    if any(t.dtype != x.dtype for t in params):
        raise ValueError(f"discriminator_numba: crops are {x.dtype}, parameters "
                         f"{[str(t.dtype) for t in params]}: expected one dtype")
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *params))
    return _FusedD.apply(x, *params, sn, threads, grad)
