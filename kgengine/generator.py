"""The deep linear generator G, batched over B images, and its composed kernel.

G is six bias-free convolutions (7x7, 5x5, 3x3, 1x1, 1x1, 1x1; 64 channels; the last strides
by 2) applied to each colour channel. Being linear, it equals one strided correlation::

    G(x)[i, j] = sum_{u,v} K[u, v] * x[2i + u, 2j + v]        (valid region, K is 13x13)

with the composed kernel ``K = w1 * w2 * w3 * (w6 w5 w4)`` (``*`` = full 2-D convolution,
summed over the inner channels). kgengine trains G *through K*: :func:`compose_kernel` folds
the weights from the 1x1 end (a 1x64 row vector) back to the 7x7 layer (~1 MFLOP), and
:func:`forward_composed` applies K; gradients reach the six weight tensors through K. This
gives the same outputs and gradients as :func:`forward_layers` (the authors' computation,
kept as the reference mode and test oracle) at a small fraction of the cost.

Weights are batched: ``weights[l]`` has shape ``(B, out_l, in_l, k_l, k_l)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kgengine.ops.downscale import downscale


def init_weights(
    kernel_sizes: tuple[int, ...], channels: int, gain: float, gen: torch.Generator
) -> list[torch.Tensor]:
    """Xavier-normal weights for one image: ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Returns float64 tensors of shapes ``(out, in, k, k)``: (64,1,7,7), (64,64,5,5),
    (64,64,3,3), (64,64,1,1), (64,64,1,1), (1,64,1,1) for the defaults.
    """
    n = len(kernel_sizes)
    weights = []
    for i, k in enumerate(kernel_sizes):
        cin = 1 if i == 0 else channels
        cout = 1 if i == n - 1 else channels
        std = gain * math.sqrt(2.0 / (cin * k * k + cout * k * k))
        weights.append(torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64) * std)
    return weights


def compose_kernel(weights: list[torch.Tensor]) -> torch.Tensor:
    """Composed correlation kernel of the deep linear G, folded from the 1x1 end.

    ``v = w6 w5 w4`` (B,1,64); ``k3[c] = sum_d v[d] w3[d, c]`` (B,64,3,3); then each spatial
    layer is folded in by a full convolution summed over its output channels,
    ``K2[c1] = sum_c2 k3[c2] * w2[c2, c1]`` (B,64,7,7) and ``K = sum_c1 K2[c1] * w1[c1]``
    (B,1,13,13). Each full convolution is one batched matmul (every tap of the folded kernel
    times the layer's weights) followed by ``fold`` (col2im), which adds the shifted blocks.

    Args:
        weights: six tensors (B, out, in, k, k); the trailing 1x1 layers may be any number.
    Returns:
        (B, K, K) composed kernel, ``K = sum(k_l) - n_layers + 1``.
    """
    b = weights[0].shape[0]
    spatial = [w for w in weights if w.shape[-1] > 1]
    pointwise = [w for w in weights if w.shape[-1] == 1]
    v = pointwise[-1][..., 0, 0]  # (B, 1, C)
    for w in reversed(pointwise[:-1]):
        v = torch.bmm(v, w[..., 0, 0])  # (B, 1, C)
    last = spatial[-1]  # (B, C, C, k, k): fold the row vector into it
    k = torch.einsum("bd,bdcij->bcij", v[:, 0], last)  # (B, C, k, k)
    for w in reversed(spatial[:-1]):
        cout, cin, kh, kw = w.shape[1:]
        side = k.shape[-1]
        # blocks[b, (c1, p), t] = sum_c2 w[b, c2, c1, p] * k[b, c2, t]: the block that tap t
        # of k contributes; fold adds the blocks at their offsets t (full convolution)
        blocks = torch.bmm(w.reshape(b, cout, cin * kh * kw).transpose(1, 2),
                           k.reshape(b, cout, side * side))
        k = F.fold(blocks, (side + kh - 1, side + kw - 1), (kh, kw))  # (B, cin, ., .)
    return k[:, 0]  # (B, K, K)


def forward_composed(x: torch.Tensor, kernel: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """``G(x)`` through the composed kernel: valid strided correlation per channel.

    The PyTorch reference of the ``downscale`` op with ``border="valid"`` (one matrix
    product per image over unfolded columns: the same arithmetic at any batch size); the
    trainer calls the fastest backend of that op instead.

    Args:
        x: (B, C, H, W) crops.
        kernel: (B, K, K) one kernel per image.
    Returns:
        (B, C, (H-K)//s + 1, (W-K)//s + 1).
    """
    return downscale(x, kernel, stride, border="valid", backend="torch")


def forward_layers(x: torch.Tensor, weights: list[torch.Tensor], stride: int = 2) -> torch.Tensor:
    """``G(x)`` layer by layer, as the authors compute it (reference mode, test oracle).

    Each colour channel is a separate 1-channel image; the last layer strides by ``stride``.

    Args:
        x: (B, C, H, W) crops; weights: six (B, out, in, k, k) tensors.
    Returns:
        (B, C, h, w), equal to :func:`forward_composed` with :func:`compose_kernel`.
    """
    b, c, h, w = x.shape
    y = x.transpose(0, 1)  # (C, B, H, W): colour channels as the conv batch
    for i, wt in enumerate(weights):
        s = stride if i == len(weights) - 1 else 1
        y = F.conv2d(y, wt.reshape(b * wt.shape[1], *wt.shape[2:]), stride=s, groups=b)
    return y.transpose(0, 1)  # (B, C, h, w)
