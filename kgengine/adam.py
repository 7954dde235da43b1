"""Adam over one flat parameter buffer: a handful of tensor ops per step, whatever B is.

Same update as ``torch.optim.Adam`` (no weight decay, no amsgrad)::

    m <- β1 m + (1 - β1) g          v <- β2 v + (1 - β2) g²
    p <- p - lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)

Adam is element-wise, so one optimiser over the batched buffer equals B optimisers.
"""

from __future__ import annotations

import math

import torch


class FlatAdam:
    """Adam on a flat 1-D parameter tensor ``param`` (updated in place).

    Args:
        param: (n,) leaf tensor; lr, betas, eps: Adam's settings.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float],
                 eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """One Adam update with gradient ``grad`` (n,)."""
        b1, b2 = self.betas
        self.t += 1
        self.m.lerp_(grad, 1.0 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        denom = (self.v.sqrt() / math.sqrt(1.0 - b2**self.t)).add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1.0 - b1**self.t))
