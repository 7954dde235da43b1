"""G's five regularisers, value and gradient, as one compiled Numba CPU call.

Same maths as :data:`kgengine.priors.PRIORS` (the reference: ~40 small PyTorch operations
forward and as many in autograd's backward, about 1 ms per G step at B = 1), here one call
each way and one autograd node. Per image (K x K kernel ``k``, N = 3·h·w output values,
``t`` the bicubic target window of the G crop, ``m`` the boundary mask, ``c`` the centre)::

    bicubic      L = (1/N) sum (g_out - t)^2       dL/dg_out = 2 (g_out - t) / N
    sum2one      L = |1 - S|,  S = sum k           dL/dk = -sign(1 - S)
    boundaries   L = (1/K²) sum |k m|              dL/dk = sign(k m) m / K²
    centralized  L = ½ ((r - c)² + (q - c)²)       dL/dk[u,v] = ((r-c)(u-r) + (q-c)(v-q)) / S
                 r = sum_u u·sum_v k[u,v] / S,  q = sum_v v·sum_u k[u,v] / S
    sparse       L = (1/K²) sum |k|^p              dL/dk = p |k|^(p-1) sign(k) / K² (0 at k = 0)

with ``t = bicubic(g_in)`` (8x8 taps, stride 2, zero padding 3) centre-cropped to g_out's size,
summed over R, G, B in every channel when ``rgb_sum`` (the authors' defect 1).

Every sum is accumulated in float64, image by image in a fixed order, and rounded once to the
tensors' dtype: an image's bits do not depend on B or on the thread count (one thread).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch.autograd.function import once_differentiable

from kgengine.kernel import bicubic_taps_x2
from kgengine.numba_util import shared_view as _np
from kgengine.priors import PriorInputs

#: The terms this module computes, in :data:`kgengine.priors.PRIORS`'s order.
NAMES = ("bicubic", "sum2one", "boundaries", "centralized", "sparse")
_TAPS = bicubic_taps_x2()


@njit(cache=True)
def _bicubic_window(g_in, taps, oh, ow, rgb_sum):
    """(C, oh, ow) float64: the x2 bicubic downscale of g_in (C, H, W) (8x8 outer taps, stride
    2, zero padding 3), centre-cropped to oh x ow; every channel the R+G+B sum if ``rgb_sum``.
    Separable: rows first (``r[y, j] = sum_b taps[b] x[y, 2(j + dw) + b - 3]``), then columns."""
    c, h, w = g_in.shape
    fh, fw = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    dh, dw = (fh - oh) // 2, (fw - ow) // 2
    out = np.zeros((c, oh, ow))
    rows = np.zeros((h, ow))
    y0, y1 = max(2 * dh - 3, 0), min(2 * (oh - 1 + dh) + 5, h)
    for ch in range(c):
        for y in range(y0, y1):
            for j in range(ow):
                acc = 0.0
                for b in range(8):
                    x = 2 * (j + dw) + b - 3
                    if 0 <= x < w:
                        acc += taps[b] * g_in[ch, y, x]
                rows[y, j] = acc
        for i in range(oh):
            for a in range(8):
                y = 2 * (i + dh) + a - 3
                if 0 <= y < h:
                    for j in range(ow):
                        out[ch, i, j] += taps[a] * rows[y, j]
    if rgb_sum:  # every channel the sum ((0 + R) + G) + B, as out.sum(axis=0) forms it
        for i in range(oh):
            for j in range(ow):
                total = 0.0
                for ch in range(c):
                    total += out[ch, i, j]
                for ch in range(c):
                    out[ch, i, j] = total
    return out


@njit(cache=True, error_model="numpy")
def _kernel_terms(k, mask, centre, power, terms, dk):
    """The four kernel terms of one image into ``terms[1:5]`` and their gradients w.r.t. k
    (K, K) into ``dk`` (4, K, K) float64 (see the module docstring). A kernel summing to 0
    gives NaN centring terms, as in PyTorch (IEEE division: before 0.9.29 Numba raised
    ZeroDivisionError, a traceback where torch's path reported a diverged training)."""
    n, n2 = k.shape
    area = n * n2
    s = 0.0
    rows = np.zeros(n)
    cols = np.zeros(n2)
    bnd = 0.0
    sp = 0.0
    for u in range(n):
        for v in range(n2):
            x = np.float64(k[u, v])
            s += x
            rows[u] += x
            cols[v] += x
            bnd += abs(x * np.float64(mask[u, v]))
            if x != 0.0:
                sp += abs(x) ** power
    r = 0.0
    q = 0.0
    for u in range(n):
        r += u * rows[u]
    for v in range(n2):
        q += v * cols[v]
    r /= s
    q /= s
    terms[1] = abs(1.0 - s)
    terms[2] = bnd / area
    terms[3] = 0.5 * ((r - centre) ** 2 + (q - centre) ** 2)
    terms[4] = sp / area
    d_sum = -np.sign(1.0 - s)
    for u in range(n):
        for v in range(n2):
            x = np.float64(k[u, v])
            dk[0, u, v] = d_sum
            mv = np.float64(mask[u, v])
            dk[1, u, v] = np.sign(x * mv) * mv / area
            dk[2, u, v] = ((r - centre) * (u - r) + (q - centre) * (v - q)) / s
            dk[3, u, v] = (power * abs(x) ** (power - 1.0) * np.sign(x) / area) if x != 0.0 else 0.0


@njit(cache=True, nogil=True)
def _forward(k, g_in, g_out, lam, mask, centre, power, rgb_sum, taps, terms, target, dk,
             out_total, out_terms):
    """All images: terms (B, 5), the bicubic target windows (B, C, h, w) and the kernel terms'
    gradients dk (B, 4, K, K) in float64; ``out_terms`` (B, 5) and ``out_total[b] = sum_t
    lam[b, t] terms[b, t]`` (B,) rounded to their dtype."""
    for b in range(k.shape[0]):
        c, oh, ow = g_out.shape[1], g_out.shape[2], g_out.shape[3]
        t = _bicubic_window(g_in[b], taps, oh, ow, rgb_sum)
        acc = 0.0
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    target[b, ch, i, j] = t[ch, i, j]
                    d = np.float64(g_out[b, ch, i, j]) - t[ch, i, j]
                    acc += d * d
        terms[b, 0] = acc / (c * oh * ow)
        _kernel_terms(k[b], mask, centre, power, terms[b], dk[b])
        total = 0.0
        for j in range(5):
            total += np.float64(lam[b, j]) * terms[b, j]
            out_terms[b, j] = terms[b, j]
        out_total[b] = total


@njit(cache=True, nogil=True)
def _backward(grad, lam, g_out, target, dk, out_k, out_g):
    """With ``w[t] = grad[b] lam[b, t]`` (float64): ``out_k[b] = sum_t w[1 + t] dk[b, t]`` and
    ``out_g[b] = w[0] · 2 (g_out[b] - target[b]) / N``, rounded to the outputs' dtype."""
    for b in range(grad.shape[0]):
        gb = np.float64(grad[b])
        g = gb * np.float64(lam[b, 0]) * 2.0 / g_out[b].size
        c, oh, ow = g_out.shape[1], g_out.shape[2], g_out.shape[3]
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    out_g[b, ch, i, j] = g * (np.float64(g_out[b, ch, i, j]) - target[b, ch, i, j])
        for u in range(dk.shape[2]):
            for v in range(dk.shape[3]):
                acc = 0.0
                for t in range(4):
                    acc += gb * np.float64(lam[b, 1 + t]) * dk[b, t, u, v]
                out_k[b, u, v] = acc


def priors_forward(k: torch.Tensor, g_in: torch.Tensor, g_out: torch.Tensor,
                   lam: torch.Tensor, mask: torch.Tensor, centre: float, power: float,
                   rgb_sum: bool) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """:func:`weighted_priors`' values (contiguous arguments), and the state
    :func:`priors_backward` needs. No autograd."""
    kn, gi, go = _np(k), _np(g_in), _np(g_out)
    b = kn.shape[0]
    terms = np.empty((b, 5))
    target = np.empty(go.shape)
    dk = np.empty((b, 4) + kn.shape[1:])
    total, out = torch.empty(b, dtype=k.dtype), torch.empty(b, 5, dtype=k.dtype)
    _forward(kn, gi, go, _np(lam), _np(mask), float(centre), float(power), bool(rgb_sum),
             _TAPS, terms, target, dk, total.numpy(), out.numpy())
    return total, out, (go, target, dk, _np(lam))


def priors_backward(saved: tuple, grad_total: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients w.r.t. k and g_out of ``grad_total`` (B,) w.r.t. the prior loss."""
    go, target, dk, lam = saved
    out_k = np.empty(dk.shape[:1] + dk.shape[2:], go.dtype)
    out_g = np.empty(go.shape, go.dtype)
    _backward(_np(grad_total.contiguous()), lam, go, target, dk, out_k, out_g)
    return torch.from_numpy(out_k), torch.from_numpy(out_g)


class _Priors(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k, g_in, g_out, lam, mask, centre, power, rgb_sum):  # noqa: ANN001, ANN205, D102
        total, out, ctx.saved = priors_forward(k, g_in, g_out, lam, mask, centre, power,
                                               rgb_sum)
        ctx.mark_non_differentiable(out)
        return total, out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total, _grad_terms):  # noqa: ANN001, ANN205, D102
        dk, dg = priors_backward(ctx.saved, grad_total)
        return (dk, None, dg, None, None, None, None, None)


def weighted_priors(k: torch.Tensor, g_in: torch.Tensor, g_out: torch.Tensor,
                    lam: torch.Tensor, mask: torch.Tensor, centre: float, power: float = 0.2,
                    rgb_sum: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """G's prior loss ``sum_t lam[:, t] · L_t`` (B,), differentiable w.r.t. k and g_out, and
    the terms ``L_t`` (B, 5) of :data:`NAMES` (not differentiable), in k's dtype (CPU).

    Args:
        k: (B, K, K) composed kernels; g_in: (B, C, H, W) G's input crops; g_out: (B, C, h, w)
        G's outputs; lam: (B, 5) the terms' weights; mask: (K, K) boundary mask; centre: the
        centre-of-mass target; power: the sparsity exponent; rgb_sum: the authors' bicubic
        target (defect 1).
    """
    return _Priors.apply(k.contiguous(), g_in.contiguous(), g_out.contiguous(), lam.contiguous(),
                         mask.contiguous(), centre, power, rgb_sum)


def add_priors(loss: torch.Tensor, inputs: PriorInputs, lam: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`kgengine.priors.add_priors` by :func:`weighted_priors`: ``loss + sum_t lam[t]
    · L_t`` (B,) and the terms ``{name: L_t}`` of :data:`NAMES`."""
    cfg = inputs.cfg
    total, terms = weighted_priors(inputs.k, inputs.g_in, inputs.g_out,
                                   torch.stack([lam[n] for n in NAMES], 1), inputs.mask,
                                   inputs.centre, cfg.sparse_power, cfg.authors_bicubic_rgb_sum)
    return loss + total, dict(zip(NAMES, terms.unbind(1), strict=True))
