"""The spectral-normalised patch discriminator D, batched over B images (one D per image).

Per image: a 7x7 conv (3->64, bias), five blocks [1x1 conv 64->64 (bias), BatchNorm, ReLU],
a 1x1 conv 64->1 (bias) and a sigmoid; spectral normalisation on every conv. Its output
("D-map") has one probability per 7x7 patch of the input.

Batching: the weights carry a leading image axis B and every layer is a batched matmul
(the 7x7 conv over unfolded crop columns), so image b only ever meets its own weights and
its arithmetic does not depend on B (batch invariance: grouped convs pick other algorithms
for other group counts). BatchNorm statistics are taken
per crop over its spatial positions: in the authors' batch-of-one setting that is exactly
what ``BatchNorm2d`` computes in training mode. Spectral normalisation follows
``torch.nn.utils.spectral_norm``: one power iteration per forward pass (``u``, ``v`` updated
without gradient), ``W_sn = W / (u^T W v)`` with the gradient flowing through ``W`` in both
places.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from kgengine.lanes import per_image

BN_EPS = 1e-5
SN_EPS = 1e-12


def init_params(
    channels: int, kernel_size: int, n_layers: int, gain: float, default_init: bool,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """D's parameters and spectral-norm vectors for one image (float64).

    ``default_init=False``: Xavier-normal conv weights with ``gain`` (the authors' intent);
    ``True``: PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (the authors' actual
    behaviour, defect 3). Biases 0, BN weight ~ N(1, 0.02), BN bias 0, ``u``/``v`` random
    unit vectors. The L = n_layers - 2 middle 1x1 layers are stored stacked.

    Returns:
        {"w0": (64,3,k,k), "b0": (64,), "wm": (L,64,64), "bm": (L,64), "gamma": (L,64),
         "beta": (L,64), "wf": (1,64), "bf": (1,), "u0": (64,), "v0": (3k²,),
         "um": (L,64), "vm": (L,64), "uf": (1,), "vf": (64,)}.
    """
    n_mid = n_layers - 2

    def weight(shape: tuple[int, ...]) -> torch.Tensor:
        fan_out = shape[0] * (shape[2] * shape[3] if len(shape) == 4 else 1)
        fan_in = math.prod(shape[1:])
        if default_init:
            bound = 1.0 / math.sqrt(fan_in)
            return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        std = gain * math.sqrt(2.0 / (fan_in + fan_out))
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(shape, generator=gen, dtype=torch.float64), dim=-1)

    w0 = weight((channels, 3, kernel_size, kernel_size))
    wm = torch.stack([weight((channels, channels)) for _ in range(n_mid)])
    wf = weight((1, channels))
    zeros = partial(torch.zeros, dtype=torch.float64)
    return {
        "w0": w0, "b0": zeros(channels),
        "wm": wm, "bm": zeros(n_mid, channels),
        "gamma": 1.0 + 0.02 * torch.randn(n_mid, channels, generator=gen, dtype=torch.float64),
        "beta": zeros(n_mid, channels),
        "wf": wf, "bf": zeros(1),
        "u0": unit(channels), "v0": unit(3 * kernel_size**2),
        "um": unit(n_mid, channels), "vm": unit(n_mid, channels),
        "uf": unit(1), "vf": unit(channels),
    }


#: The trainable entries of :func:`init_params` (the others are spectral-norm state).
TRAINABLE = ("w0", "b0", "wm", "bm", "gamma", "beta", "wf", "bf")


def spectral_normalize(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One power iteration and ``W / sigma`` for a batch of weight matrices.

    Args:
        w: (X, out, ...) weights (flattened to (X, out, n) for the iteration).
        u: (X, out), v: (X, n) running singular vectors, updated in place (no grad).
    Returns:
        ``w / sigma`` with ``sigma = u^T W v`` (X,) and the gradient through ``w``.
    """
    mat = w.reshape(w.shape[0], w.shape[1], -1)
    # products and sums rather than bmm: BLAS picks other code paths for other batch
    # sizes at these vector shapes, and D's arithmetic must not depend on B
    with torch.no_grad():
        v.copy_(F.normalize((u.unsqueeze(2) * mat).sum(1), dim=1, eps=SN_EPS))
        u.copy_(F.normalize((mat * v.unsqueeze(1)).sum(2), dim=1, eps=SN_EPS))
    sigma = (u * (mat * v.unsqueeze(1)).sum(2)).sum(1)
    return w / sigma.reshape(-1, *([1] * (w.dim() - 1)))


def forward(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """D-maps for N crops of each of B images.

    Args:
        x: (N, B, 3, S, S) crops (image b's crops go to D_b).
        p: batched parameters (leading axis B), see :func:`init_params`.
    Returns:
        (N, B, S-k+1, S-k+1) probabilities in (0, 1).
    """
    n, b, c, s, _ = x.shape
    w0 = spectral_normalize(p["w0"], p["u0"], p["v0"])  # (B, 64, 3, k, k)
    ch, n_mid = w0.shape[1], p["wm"].shape[1]
    wm = spectral_normalize(p["wm"].reshape(b * n_mid, ch, ch), p["um"].view(b * n_mid, ch),
                            p["vm"].view(b * n_mid, ch)).reshape(b, n_mid, ch, ch)
    wf = spectral_normalize(p["wf"], p["uf"], p["vf"])  # (B, 1, 64)
    k = w0.shape[-1]
    side = s - k + 1
    # the 7x7 conv as one bmm over crop columns: (B, 3k², N·P), the N crops side by side
    # (a per-image matrix product: the same arithmetic whatever B is, unlike a grouped conv)
    cols = F.unfold(x.reshape(n * b, c, s, s), k).view(n, b, c * k * k, side * side)
    cols = cols.permute(1, 2, 0, 3).reshape(b, c * k * k, n * side * side)
    h = torch.baddbmm(p["b0"].unsqueeze(-1), w0.reshape(b, ch, c * k * k), cols)
    # unbind once (one backward node) rather than index per layer
    gammas = p["gamma"].unsqueeze(-1).expand(b, n_mid, ch, n).unbind(1)  # (B, 64, N) each
    betas = p["beta"].unsqueeze(-1).expand(b, n_mid, ch, n).unbind(1)
    layers = zip(wm.unbind(1), p["bm"].unsqueeze(-1).unbind(1), gammas, betas, strict=True)
    for w_i, b_i, gamma_i, beta_i in layers:
        h = torch.baddbmm(b_i, w_i, h)
        # BatchNorm statistics per crop: every (image, channel, crop) is one BN "channel"
        h = F.batch_norm(h.view(1, b * ch * n, side * side), None, None,
                         gamma_i.reshape(-1), beta_i.reshape(-1), True, 0.0, BN_EPS)
        h = torch.relu(h).view(b, ch, n * side * side)
    out = torch.baddbmm(p["bf"].unsqueeze(-1), wf, h)  # (B, 1, N*P)
    return per_image(torch.sigmoid, out).reshape(b, n, side, side).transpose(0, 1)
