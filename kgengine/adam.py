"""Adam over one flat parameter buffer: a handful of tensor ops per step, whatever B is.

Same update as ``torch.optim.Adam`` (no weight decay, no amsgrad)::

    m <- β1 m + (1 - β1) g          v <- β2 v + (1 - β2) g²
    p <- p - lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)

Adam is element-wise, so one optimiser over the batched buffer equals B optimisers. With
``compiled=True`` (CPU) the update is one Numba loop instead of five PyTorch operations (each a
pass over the buffer): the same formula, rounded step by step in the parameters' dtype, but
PyTorch's kernels may fuse a product into an addition, so the two need not agree to the bit.
With ``on_device=True`` the step count and the learning rate live in tensors on the buffer's
device and the step reads nothing from the host, so that it can be captured once in a CUDA
graph and replayed (:mod:`kgengine.graph_step`); its rounding differs from the scalar path's
in the last bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from kgengine.numba_util import run_tasks

#: From this many elements a compiled update is split over the threads it is given.
SPLIT_SIZE = 100_000


@njit(cache=True, error_model="numpy", nogil=True)  # no zero-division branch: the loop vectorises
def _adam_step(p, g, m, v, c):
    """In place, per element i of the 1-D arrays p, g, m, v, with the constants
    ``c = (β1, β2, 1 - β2, step, bias2, eps)`` in their dtype: ``m = g - (g - m) β1``,
    ``v = β2 v + (1 - β2) g²``, ``p += step · m / (sqrt(v) / bias2 + eps)``, where
    ``step = -lr / (1 - β1^t)`` and ``bias2 = sqrt(1 - β2^t)``."""
    b1, b2, w2, step, bias2, eps = c[0], c[1], c[2], c[3], c[4], c[5]
    for i in range(p.size):
        gi = g[i]
        mi = gi - (gi - m[i]) * b1
        vi = v[i] * b2 + w2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] + step * mi / (np.sqrt(vi) / bias2 + eps)


class FlatAdam:
    """Adam on a flat 1-D parameter tensor ``param`` (updated in place).

    Args:
        param: (n,) leaf tensor; lr, betas, eps: Adam's settings; compiled: one Numba loop
            per step (CPU tensors; see the module docstring) instead of PyTorch operations;
        on_device: ``t`` and ``lr`` also kept as float64 tensors on ``param``'s device and the
            step computed from them (no host value per step: capturable in a CUDA graph).
            Setting :attr:`lr` (the trainer's decay) writes the tensor; the host's ``t`` is not
            advanced by a graph's replays, the tensor is.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float],
                 eps: float = 1e-8, compiled: bool = False, on_device: bool = False) -> None:
        if compiled and on_device:
            raise ValueError("FlatAdam: compiled and on_device exclude each other")
        self.param, self.betas, self.eps = param, betas, eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0
        self.compiled = compiled
        self._dev = ((torch.zeros((), dtype=torch.float64, device=param.device),
                      torch.full((), lr, dtype=torch.float64, device=param.device))
                     if on_device else None)
        self.lr = lr
        # NumPy views of the buffers (CPU: the compiled update), made once
        self._arrays = ((param.detach().numpy(), self.m.numpy(), self.v.numpy())
                        if compiled else None)

    def rebind(self, param: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> None:
        """Go on with a new parameter buffer and its moments (the trainer's batch lost
        images: :func:`kgengine.batch_rows.drop`); ``t`` and ``lr`` stay."""
        self.param, self.m, self.v = param, m, v
        if self.compiled:
            self._arrays = (param.detach().numpy(), m.numpy(), v.numpy())

    @property
    def lr(self) -> float:
        """The learning rate (setting it also sets the device copy, ``on_device``)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = value
        if self._dev is not None:
            self._dev[1].fill_(value)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, threads: int = 1) -> None:
        """One Adam update with gradient ``grad`` (n,); the compiled update of a large
        buffer is split over ``threads`` (element-wise: the same bits)."""
        b1, b2 = self.betas
        self.t += 1
        if self.compiled:
            p, m, v = self._arrays
            c = np.array([b1, b2, 1.0 - b2, -self.lr / (1.0 - b1**self.t),
                          math.sqrt(1.0 - b2**self.t), self.eps], p.dtype)
            g = grad.contiguous().numpy()
            run_tasks(lambda lo, hi: _adam_step(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], c),
                      threads if p.size >= SPLIT_SIZE else 1, p.size)
            return
        if self._dev is not None:
            self._step_on_device(grad)
            return
        self.m.lerp_(grad, 1.0 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        denom = (self.v.sqrt() / math.sqrt(1.0 - b2**self.t)).add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1.0 - b1**self.t))

    def _step_on_device(self, grad: torch.Tensor) -> None:
        """The update with ``t`` and ``lr`` read from (and ``t`` advanced in) device tensors:
        ``step = -lr / (1 - β1^t)`` and ``sqrt(1 - β2^t)`` in float64 there, then the same
        three passes as the scalar path with those as tensors."""
        b1, b2 = self.betas
        t, lr = self._dev
        t.add_(1.0)
        step = (-lr / (1.0 - torch.pow(b1, t))).to(self.param.dtype)
        bias2 = torch.sqrt(1.0 - torch.pow(b2, t)).to(self.param.dtype)
        self.m.lerp_(grad, 1.0 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        denom = (self.v.sqrt() / bias2).add_(self.eps)
        self.param.addcmul_(self.m / denom, step)
