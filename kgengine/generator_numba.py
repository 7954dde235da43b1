"""G's composed kernel, forward and backward, as compiled Numba CPU kernels.

Same maths as :func:`kgengine.generator.compose_kernel` (the reference: ~15 PyTorch operations
forward and their autograd backward), one autograd node instead. Per image b, from the 1x1
end (``*`` = full 2-D convolution summed over the shared channel)::

    v = w6 w5 w4                    (1, C)       row vector through the 1x1 layers
    k3[c] = sum_d v[d] w3[d, c]     (C, 3, 3)    contract into the last spatial layer
    K2 = k3 * w2,  K = K2 * w1      (C, 7, 7), (1, 13, 13)

Each full convolution is ``blocks = W_r^T k_r`` (W_r: (out, in·kh·kw), k_r: (out, side²))
followed by ``fold`` (adds block (c, p) at offset t); its backward, with ``dblocks`` the
unfolded output gradient: ``dW_r = k_r dblocks^T``, ``dk_r = W_r dblocks``.

Batch invariance: every product is one ``np.dot`` per image on the same shapes whatever B is,
so an image's bits do not depend on the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch.autograd.function import once_differentiable

from kgengine.numba_util import put2d as _put
from kgengine.numba_util import single_threaded_blas, slots

_FAST = {"reassoc", "contract", "nsz"}
#: What the cached kernels compile in from other modules, and its digest
#: (:func:`kgengine.numba_util.compiled_in_digest`: Numba's cache hashes this file only).
COMPILED_IN = (_put,)
COMPILED_IN_DIGEST = "eea07e78afa0"


@njit(cache=True, nogil=True)
def _chain(ws, v):
    """``out[b] = v[b] @ ws[b]``: v (B, 1, C), ws (B, C, C') -> (B, 1, C')."""
    out = np.empty((v.shape[0], 1, ws.shape[2]), v.dtype)
    for b in range(v.shape[0]):
        _put(out[b], np.dot(v[b], ws[b]))
    return out


@njit(cache=True, nogil=True)
def _chain_grad(ws, v, dout, dws):
    """The backward of :func:`_chain`: writes ``dws[b] = v[b]^T dout[b]``, returns dv."""
    dv = np.empty_like(v)
    for b in range(v.shape[0]):
        _put(dws[b], np.dot(v[b].T, dout[b]))
        _put(dv[b], np.dot(dout[b], ws[b].T))
    return dv


@njit(cache=True, fastmath=_FAST, nogil=True)
def _fold_layer(w, k, out):
    """Full convolution of k (B, cout, side²) with w (B, cout, cin·kh·kw) into out (B, cin,
    side+kh-1, side+kw-1): ``out[b, c, t + p] += (w_r^T k_r)[(c, p), t]``."""
    cin, n, n2 = out.shape[1], out.shape[2], out.shape[3]
    side = int(np.sqrt(k.shape[2]) + 0.5)
    kh, kw = n - side + 1, n2 - side + 1
    out[:] = 0.0
    for b in range(k.shape[0]):
        blocks = np.dot(w[b].T, k[b])  # (cin·kh·kw, side²)
        for c in range(cin):
            for py in range(kh):
                for px in range(kw):
                    row = blocks[(c * kh + py) * kw + px]
                    for ty in range(side):
                        dst = out[b, c, ty + py, px : px + side]
                        src = row[ty * side : (ty + 1) * side]
                        for tx in range(side):
                            dst[tx] += src[tx]


@njit(cache=True, fastmath=_FAST, nogil=True)
def _fold_layer_grad(w, k, dout, dw, dk):
    """The backward of :func:`_fold_layer`: dw (B, cout, cin·kh·kw) and dk (B, cout, side²)."""
    cin, n, n2 = dout.shape[1], dout.shape[2], dout.shape[3]
    side = int(np.sqrt(k.shape[2]) + 0.5)
    kh, kw = n - side + 1, n2 - side + 1
    dblocks = np.empty((cin * kh * kw, side * side), dout.dtype)
    for b in range(k.shape[0]):
        for c in range(cin):
            for py in range(kh):
                for px in range(kw):
                    row = dblocks[(c * kh + py) * kw + px]
                    for ty in range(side):
                        src = dout[b, c, ty + py, px : px + side]
                        dst = row[ty * side : (ty + 1) * side]
                        for tx in range(side):
                            dst[tx] = src[tx]
        _put(dw[b], np.dot(k[b], dblocks.T))
        _put(dk[b], np.dot(w[b], dblocks))


def _np(t: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(t)
    return t.detach().contiguous().numpy()


def compose_forward(weights: list[torch.Tensor] | list[np.ndarray]) -> tuple[np.ndarray, tuple]:
    """The composed kernels (B, K, K) of G's weights (tensors, or NumPy views of them; see
    :func:`compose_kernel`) and the state :func:`compose_backward` needs. No autograd."""
    spatial = [w for w in weights if w.shape[-1] > 1]
    pointwise = [w for w in weights if w.shape[-1] == 1]
    b = weights[0].shape[0]
    vs = [_np(pointwise[-1][..., 0, 0])]  # (B, 1, C)
    for w in reversed(pointwise[:-1]):
        vs.append(_chain(_np(w[..., 0, 0]), vs[-1]))
    ks = [_chain(_np(spatial[-1]).reshape(b, spatial[-1].shape[1], -1), vs[-1])]
    ks[0] = ks[0].reshape(b, spatial[-1].shape[2], -1)  # (B, C, 3·3)
    for w in reversed(spatial[:-1]):
        cout, cin, kh, kw = w.shape[1:]
        side = int(round(ks[-1].shape[2] ** 0.5))
        out = np.empty((b, cin, side + kh - 1, side + kw - 1), vs[0].dtype)
        _fold_layer(_np(w).reshape(b, cout, -1), ks[-1], out)
        ks.append(out.reshape(b, cin, -1))
    side = int(round(ks[-1].shape[2] ** 0.5))
    return ks[-1].reshape(b, side, side).copy(), (vs, ks)


def compose_backward(weights: list[torch.Tensor] | list[np.ndarray], keep: tuple,
                     grad: torch.Tensor | np.ndarray, out: np.ndarray | list | None = None
                     ) -> list[torch.Tensor]:
    """The gradients w.r.t. ``weights`` given ``grad`` (B, K, K) w.r.t. the composed kernel
    (``keep`` from :func:`compose_forward` on the same weights), written into ``out``: one
    flat buffer (all weights' sizes, in order; the trainer's layout) or one array per
    weight, shaped like it. Returns them (as tensors)."""
    vs, ks = keep
    spatial = [i for i, w in enumerate(weights) if w.shape[-1] > 1]
    pointwise = [i for i, w in enumerate(weights) if w.shape[-1] == 1]
    b = weights[0].shape[0]
    grads = out if isinstance(out, list) else slots([w.shape for w in weights], out,
                                                    vs[0].dtype)
    dk = _np(grad).reshape(b, 1, -1).astype(vs[0].dtype)
    for j, i in enumerate(spatial[:-1]):  # w1 first: the last fold of the forward
        w = _np(weights[i]).reshape(b, weights[i].shape[1], -1)
        k_in = ks[len(ks) - 2 - j]
        side = int(round(ks[len(ks) - 1 - j].shape[2] ** 0.5))
        dk_in = np.empty_like(k_in)
        _fold_layer_grad(w, k_in, dk.reshape(b, -1, side, side), grads[i].reshape(w.shape),
                         dk_in)
        dk = dk_in
    last = weights[spatial[-1]]
    w_r = _np(last).reshape(b, last.shape[1], -1)
    dv = _chain_grad(w_r, vs[-1], dk.reshape(b, 1, -1), grads[spatial[-1]].reshape(w_r.shape))
    for j, i in enumerate(pointwise[:-1]):  # w4 first: the last product of the chain
        w = _np(weights[i][..., 0, 0])
        dv = _chain_grad(w, vs[len(vs) - 2 - j], dv, grads[i].reshape(w.shape))
    grads[pointwise[-1]].reshape(dv.shape)[:] = dv
    return [torch.from_numpy(g) for g in grads]


class _ComposeFn(torch.autograd.Function):
    """One autograd node: the weights in, the (B, K, K) composed kernel out."""

    @staticmethod
    def forward(ctx, *weights):  # noqa: ANN001, ANN205, D102
        k, ctx.keep = compose_forward(list(weights))
        ctx.save_for_backward(*weights)
        return torch.from_numpy(k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205, D102
        return tuple(compose_backward(list(ctx.saved_tensors), ctx.keep, grad))


def compose_kernel(weights: list[torch.Tensor]) -> torch.Tensor:
    """Numba CPU :func:`kgengine.generator.compose_kernel`: same argument and result (up to
    rounding), differentiable w.r.t. every weight.

    Args:
        weights: G's layers (B, out, in, k, k), CPU, float32 or float64: spatial layers first
            (the first with in = 1), then 1x1 layers (the last with out = 1).
    Returns:
        (B, K, K) composed kernel.
    """
    single_threaded_blas()
    return _ComposeFn.apply(*weights)
