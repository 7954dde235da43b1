"""The composed-kernel generator equals the authors' layer-by-layer generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kgengine import generator as G

SIZES = (7, 5, 3, 1, 1, 1)


def _weights(b: int, seed: int = 0, gain: float = 1.0) -> list[torch.Tensor]:
    ws = [G.init_weights(SIZES, 8, gain, torch.Generator().manual_seed(seed + i)) for i in range(b)]
    return [torch.stack([w[i] for w in ws]).requires_grad_() for i in range(len(SIZES))]


def test_composed_kernel_size_and_shape():
    k = G.compose_kernel(_weights(2))
    assert k.shape == (2, 13, 13)


def test_composed_forward_equals_layers_outputs_and_gradients():
    torch.manual_seed(0)
    w_a = _weights(3)
    w_b = [w.detach().clone().requires_grad_() for w in w_a]
    x = torch.randn(3, 3, 37, 41, dtype=torch.float64)  # odd sizes
    target = torch.randn(3, 3, 13, 15, dtype=torch.float64)
    y_a = G.forward_composed(x, G.compose_kernel(w_a))
    y_b = G.forward_layers(x, w_b)
    assert y_a.shape == y_b.shape == (3, 3, 13, 15)
    torch.testing.assert_close(y_a, y_b, rtol=1e-10, atol=1e-12)
    (y_a * target).sum().backward()
    (y_b * target).sum().backward()
    for wa, wb in zip(w_a, w_b, strict=True):
        torch.testing.assert_close(wa.grad, wb.grad, rtol=1e-9, atol=1e-12)


def test_kernel_is_impulse_response_of_layers():
    """Push a unit impulse through the six convs (stride 1): the response is K flipped."""
    w = [t.detach()[:1] for t in _weights(1, seed=5)]
    k = G.compose_kernel(w)[0]
    delta = torch.zeros(1, 1, 25, 25, dtype=torch.float64)
    delta[0, 0, 12, 12] = 1.0
    y = delta
    for wt in w:
        y = F.conv2d(y, wt[0])
    # y is 13x13: y[i, j] = sum_uv K[u, v] delta[i+u, j+v] = K[12-i, 12-j]
    torch.testing.assert_close(y[0, 0], k.flip(0, 1), rtol=1e-10, atol=1e-14)


def test_batched_kernels_are_independent():
    w = _weights(3, seed=11)
    k_batch = G.compose_kernel(w)
    for i in range(3):
        k_one = G.compose_kernel([t[i : i + 1] for t in w])[0]
        torch.testing.assert_close(k_batch[i], k_one, rtol=1e-12, atol=1e-14)
