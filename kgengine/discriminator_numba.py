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
from kgengine.numba_util import give, run_tasks, single_threaded_blas, slots, take
from kgengine.numba_util import shared_view as _np

SN_KEYS = ("u0", "v0", "um", "vm", "uf", "vf")


class Pass:
    """One D pass on N crops of B images: its work buffers, normalised weights and outputs
    (see :func:`open_pass`). ``probs`` (B, N, P) are the probabilities, image-major; the
    task of (image b, crop n) is ``b * N + n``."""

    def __init__(self, x_shape: tuple, k: int, key: tuple, bufs: tuple, threads: int,
                 shapes: list, keep: tuple, other: tuple) -> None:
        self.x_shape, self.k, self.key, self.bufs, self.threads = x_shape, k, key, bufs, threads
        self.shapes, self.keep, self.other = shapes, keep, other
        self.probs = keep[-1][-1]
        self.n_layers = keep[1].shape[1] + 2  # the first conv, the blocks, the last conv
        self.parts: list | None = None


def _arr(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t if isinstance(t, np.ndarray) else _np(t)


def open_pass(x_shape: tuple, params: list, sn: list, threads: int, copy: bool = True) -> Pass:
    """A D pass on crops of shape x_shape (N, B, 3, S, S): buffers, and one power iteration
    per weight (u, v of ``sn`` updated in place, as every pass does). ``params``: the
    trainable tensors (or NumPy views of them) in :data:`TRAINABLE` order; ``sn``: u, v of
    each weight (:data:`SN_KEYS` order). ``copy=False``: the weights and u, v do not change
    before the backward (else the pass keeps copies)."""
    w0, b0, wm, bm, gamma, beta, wf, bf = params
    n, bsz, _, size, _ = x_shape
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
    run_tasks(lambda lo, hi: _normalise(w0[lo:hi], wm[lo:hi], wf[lo:hi],
                                        *(a[lo:hi] for a in (*sn, sig, w0s, wms, wfs))),
              threads, bsz)  # per image: the images split over the threads
    if copy:  # NumPy writes do not bump torch's version counters: keep what was used
        w0, wm, wf, gamma = (a.copy() for a in (w0, wm, wf, gamma))
        sn = [a.copy() for a in sn]
    saved = (w0s, wms, gamma, wfs, cols, hs, xhat, inv, s)
    other = tuple(_arr(t) for t in (b0, bm, beta, bf))
    return Pass(tuple(x_shape), k, key, bufs, threads, shapes, (w0, wm, wf, sn, sig, saved),
                other)


def forward_tasks(state: Pass, x: np.ndarray, lo: int, hi: int, threads: int = 1) -> None:
    """D's forward of tasks lo..hi-1 of the pass (x (N, B, 3, S, S) contiguous: only those
    tasks' crops are read), writing their probabilities into ``state.probs``."""
    w0s, wms, gamma, wfs, cols, hs, xhat, inv, s = state.keep[-1]
    b0, bm, beta, bf = state.other
    run_tasks(_forward, threads, hi - lo, x, state.k, w0s, b0, wms, bm, gamma, beta, wfs, bf,
              cols, hs, xhat, inv, s, offset=lo)


def ensure_parts(state: Pass, need_p: bool) -> None:
    """The buffers of the per-crop parts of the parameter gradients (w0s, b0, wms, bm, gamma,
    beta, wfs, bf), taken once per pass (before tasks run on other threads)."""
    if state.parts is not None:
        return
    w0, wm, wf = state.keep[:3]
    bsz, n = state.probs.shape[:2]
    shapes = [w0.shape[1:], w0.shape[1:2], wm.shape[1:], wm.shape[1:3], wm.shape[1:3],
              wm.shape[1:3], wf.shape[1:], (1,)]
    dt = state.probs.dtype
    state.parts = take(("bwd", need_p, *state.key), lambda: [
        np.empty((bsz, n, *sh) if need_p else (bsz, n) + (0,) * len(sh), dt) for sh in shapes])


def backward_tasks(state: Pass, ds: np.ndarray, lo: int, hi: int, need_x: bool,
                   need_p: bool, dx: np.ndarray, threads: int = 1,
                   layers: tuple[int, int] | None = None) -> None:
    """D's backward of tasks lo..hi-1: ds (B, N, P) the gradient w.r.t. ``state.probs``
    (only those tasks' rows are read); writes their dx into dx (N, B, 3, S, S) if
    ``need_x`` and their parts of the parameter gradients if ``need_p``: of every layer, or
    of ``layers`` (lo, hi) only, 0 the first conv and :attr:`Pass.n_layers` - 1 the last
    (two calls on other threads can split the layers: same bits)."""
    ensure_parts(state, need_p)
    p_lo, p_hi = layers or ((0, state.n_layers) if need_p else (0, 0))
    run_tasks(_backward, threads, hi - lo, ds, need_x, p_lo, p_hi, state.k, *state.keep[-1],
              dx, *state.parts, offset=lo)


def close_pass(state: Pass, need_p: bool, out: np.ndarray | None = None
               ) -> list[torch.Tensor] | None:
    """End of a pass's backward: the parameters' gradients (:data:`TRAINABLE` order, crops
    summed in crop order) if ``need_p``, written into one flat buffer (``out``, the
    parameters' sizes in that order, if given) and returned as views of it; the buffers
    are given back."""
    if state.keep is None:
        raise RuntimeError("discriminator_numba: backward through one D pass runs once")
    (w0, wm, wf, sn, sig, _), state.keep = state.keep, None
    parts, dp = state.parts, None
    if need_p:
        dp = slots(state.shapes, out, w0.dtype)
        dw0, dwf = dp[0].reshape(w0.shape), dp[6].reshape(wf.shape)
        run_tasks(lambda lo, hi: _param_grads(
            *(a[lo:hi] for a in (w0, wm, wf, *sn, sig, parts[0], parts[2], parts[6], dw0,
                                 dp[2], dwf))), state.threads, w0.shape[0])
        for i in (1, 3, 4, 5, 7):
            parts[i].sum(1, out=dp[i].reshape(parts[i].shape[:1] + parts[i].shape[2:]))
        dp = [torch.from_numpy(g) for g in dp]
    give(("bwd", need_p, *state.key), parts)
    give(("fwd", *state.key), state.bufs)
    return dp


def fused_forward(x: torch.Tensor, params: list, sn: list, threads: int, keep: bool,
                  copy: bool = True) -> tuple[torch.Tensor, Pass | None]:
    """D's forward on crops x (N, B, 3, S, S): the probabilities (N, B, S-k+1, S-k+1) and,
    if ``keep``, the state a :func:`fused_backward` needs (see :func:`open_pass`). No
    autograd."""
    state = open_pass(tuple(x.shape), params, sn, threads, copy=copy and keep)
    n, bsz, _, size, _ = x.shape
    forward_tasks(state, _np(x.contiguous()), 0, bsz * n, threads)
    side = size - state.k + 1
    out = torch.from_numpy(state.probs).view(bsz, n, side, side).transpose(0, 1)
    if not keep:  # no backward will come: the buffers are free again
        give(("fwd", *state.key), state.bufs)
        return out, None
    return out, state


def fused_backward(state: Pass, grad: torch.Tensor | np.ndarray, need_x: bool, need_p: bool,
                   out: np.ndarray | None = None
                   ) -> tuple[torch.Tensor | None, list[torch.Tensor] | None]:
    """The backward of one :func:`fused_forward` (once): ``grad`` w.r.t. its output, (N, B,
    h, w) or as a NumPy array like :attr:`Pass.probs` (B, N, P); returns dx (N, B, 3, S, S)
    if ``need_x`` and the trainable parameters' gradients (:data:`TRAINABLE` order) if
    ``need_p`` (views of ``out``, see :func:`close_pass`)."""
    if state.keep is None:
        raise RuntimeError("discriminator_numba: backward through one D pass runs once")
    s = state.probs
    bsz, n = s.shape[:2]
    if isinstance(grad, np.ndarray):
        ds = grad.astype(s.dtype, copy=False).reshape(bsz, n, -1)
    else:
        ds = _np(grad.transpose(0, 1).to(torch.from_numpy(s).dtype).contiguous())
    dx = np.empty(state.x_shape if need_x else (1, 1, 0, 0, 0), s.dtype)
    backward_tasks(state, ds.reshape(bsz, n, -1), 0, bsz * n, need_x, need_p, dx,
                   state.threads)
    return (torch.from_numpy(dx) if need_x else None), close_pass(state, need_p, out)


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
