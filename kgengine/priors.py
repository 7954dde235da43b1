"""KernelGAN's losses: the GAN term, the four kernel priors and the bicubic prior.

Every function works on a batch and returns one value per image, shape (B,), so that the
batched trainer can weight each image's terms with its own schedule. ``k`` is (B, K, K).

The generator's regularisers are data: :data:`PRIORS` lists each term with the config field
of its weight and its phase in the authors' schedule. Adding a prior is one loss function,
one :class:`Prior` entry and one weight field in :class:`~kgengine.config.KernelGANConfig`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kgengine.config import KernelGANConfig
from kgengine.kernel import bicubic_taps_x2, boundary_mask
from kgengine.lanes import per_image


def gan_loss(d_map: torch.Tensor, real: bool) -> torch.Tensor:
    """``mean |D - 1|`` (label real) or ``mean |D|`` (label fake) per image.

    Args:
        d_map: (B, h, w) discriminator output.
    """
    target = 1.0 if real else 0.0
    return (d_map - target).abs().flatten(1).mean(1)


def sum_to_one(k: torch.Tensor) -> torch.Tensor:
    """``L_sum = |1 - sum_{u,v} k[u,v]|``."""
    return (1.0 - k.sum(dim=(1, 2))).abs()


def boundaries(k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``L_boundaries = mean_{u,v} |k[u,v] * m[u,v]|`` with the fixed mask ``m`` (K, K)."""
    return (k * mask).abs().flatten(1).mean(1)


def sparsity(k: torch.Tensor, power: float = 0.2) -> torch.Tensor:
    """``L_sparse = mean_{u,v} |k[u,v]|^p`` (p = 0.2, as in the authors' code).

    The gradient ``p |k|^(p-1) sign(k)`` is taken as 0 where an entry is exactly 0 (the
    authors' ``abs() ** p`` gives inf * 0 = NaN there, and the image's training diverges);
    every other entry's value and gradient keep their bits.
    """
    def _pow(a: torch.Tensor) -> torch.Tensor:
        nonzero = a > 0
        return torch.where(nonzero, torch.where(nonzero, a, 1.0).pow(power), 0.0)

    return per_image(_pow, k.abs(), fill=1.0).flatten(1).mean(1)


def centralized(k: torch.Tensor, center: float) -> torch.Tensor:
    """``L_centre = ½ ‖(c, c) - com(k)‖²`` = the authors' ``MSELoss`` over the two coordinates.

    ``com(k) = (sum_u u·sum_v k[u,v], sum_v v·sum_u k[u,v]) / sum k``; the target is
    ``c = K//2 + ½ (s - K%2)`` (6.5 for K = 13, s = 2).
    """
    idx = torch.arange(k.shape[-1], dtype=k.dtype, device=k.device)
    total = k.sum(dim=(1, 2))
    rows = (k.sum(dim=2) * idx).sum(1) / total  # not ``@ idx``: a gemv's rounding depends on B
    cols = (k.sum(dim=1) * idx).sum(1) / total
    return 0.5 * ((rows - center) ** 2 + (cols - center) ** 2)


def centre_target(kernel_size: int, scale: int = 2) -> float:
    """The centre-of-mass target ``K//2 + ½ (s - K%2)`` of the centralisation prior."""
    return kernel_size // 2 + 0.5 * (scale - kernel_size % 2)


@functools.lru_cache(maxsize=16)
def _bicubic_k2(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 8x8 x2 bicubic kernel on ``device``, made once (no host-to-device copy per step)."""
    taps = torch.as_tensor(bicubic_taps_x2(), dtype=dtype, device=device)
    return torch.outer(taps, taps)


def bicubic_downscale(x: torch.Tensor, rgb_sum: bool = False) -> torch.Tensor:
    """x2 bicubic downscale as the authors' prior computes it: 8x8 kernel, stride 2, pad 3.

    Output pixel i is centred on input ``2i + 0.5``. ``rgb_sum=True`` reproduces defect 1
    (a [3, 3, 8, 8] weight: every output channel is the sum of the R, G, B results).

    Args:
        x: (B, C, H, W). Returns (B, C, (H - 2)//2 + 1, (W - 2)//2 + 1) (32x32 for 64x64).
    """
    b, c, h, w = x.shape
    k2 = _bicubic_k2(x.dtype, x.device)
    oh, ow = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    # unfolded columns times the taps, one bmm per image channel (batch invariant)
    cols = F.unfold(x.reshape(b * c, 1, h, w), 8, stride=2, padding=3)  # (B·C, 64, L)
    y = torch.bmm(k2.reshape(1, 1, 64).expand(b * c, 1, 64), cols)
    y = y.reshape(b, c, oh, ow)
    if rgb_sum:
        y = y.sum(dim=1, keepdim=True).expand_as(y)
    return y


def bicubic_prior(g_in: torch.Tensor, g_out: torch.Tensor, rgb_sum: bool = False) -> torch.Tensor:
    """``MSE(G(x), bicubic(x))`` per image, the bicubic result centre-cropped to G's output.

    With G's 13x13 kernel this pulls its centre of mass to 6.5, matching the centralisation
    prior. Args: g_in (B, C, 64, 64), g_out (B, C, 26, 26). Returns (B,).
    """
    target = bicubic_downscale(g_in, rgb_sum)
    dh = (target.shape[-2] - g_out.shape[-2]) // 2
    dw = (target.shape[-1] - g_out.shape[-1]) // 2
    target = target[..., dh : dh + g_out.shape[-2], dw : dw + g_out.shape[-1]]
    return (g_out - target).pow(2).flatten(1).mean(1)


def boundary_mask_tensor(size: int, penalty: float, like: torch.Tensor,
                         sigma: float = 0.0) -> torch.Tensor:
    """:func:`kgengine.kernel.boundary_mask` as a tensor with ``like``'s dtype/device."""
    return torch.as_tensor(np.asarray(boundary_mask(size, penalty, sigma)), dtype=like.dtype,
                           device=like.device)


# -------------------------------------------------------------------------------- as data
@dataclass(frozen=True)
class PriorInputs:
    """What a prior may look at in one G step.

    Attributes:
        k: (B, K, K) composed kernels (differentiable).
        g_in: (B, 3, 64, 64) G's input crops; g_out: (B, 3, 26, 26) G's outputs.
        mask: (K, K) boundary mask; centre: the centre-of-mass target; cfg: the config.
    """

    k: torch.Tensor
    g_in: torch.Tensor
    g_out: torch.Tensor
    mask: torch.Tensor
    centre: float
    cfg: KernelGANConfig


@dataclass(frozen=True)
class Prior:
    """One regulariser of G: ``weight · loss(inputs)`` is added to G's loss, per image.

    Attributes:
        name: key of the term in the trainer's loss report.
        loss: ``PriorInputs -> (B,)``.
        weight: the config field holding its weight (for ``late`` terms: once switched on).
        phase: ``always`` (constant weight); ``fading`` (the bicubic prior: its loss drives
            the "similar to bicubic" test and its weight decays once similar); ``late`` (weight
            0 until the fading weight first falls below ``cfg.bic_constraints_below``).
    """

    name: str
    loss: Callable[[PriorInputs], torch.Tensor]
    weight: str
    phase: str = "always"


#: The authors' priors, in the order their weighted terms are summed.
PRIORS: tuple[Prior, ...] = (
    Prior("bicubic", lambda p: bicubic_prior(p.g_in, p.g_out, p.cfg.authors_bicubic_rgb_sum),
          "lambda_bicubic", "fading"),
    Prior("sum2one", lambda p: sum_to_one(p.k), "lambda_sum2one"),
    Prior("boundaries", lambda p: boundaries(p.k, p.mask), "lambda_boundaries"),
    Prior("centralized", lambda p: centralized(p.k, p.centre), "lambda_centralized_end", "late"),
    Prior("sparse", lambda p: sparsity(p.k, p.cfg.sparse_power), "lambda_sparse_end", "late"),
)


def add_priors(loss: torch.Tensor, inputs: PriorInputs, lam: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``loss + sum_p lam[p] · L_p(inputs)`` over :data:`PRIORS` in order, and the terms
    ``{name: L_p}`` (each (B,)); ``lam[name]`` is (B,)."""
    terms = {p.name: p.loss(inputs) for p in PRIORS}
    for name, value in terms.items():
        loss = loss + lam[name] * value
    return loss, terms


def initial_weight(prior: Prior, cfg: KernelGANConfig) -> float:
    """A prior's weight at iteration 0: 0 for ``late`` terms, else its config weight."""
    return 0.0 if prior.phase == "late" else float(getattr(cfg, prior.weight))
