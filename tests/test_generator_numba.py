"""The compiled Numba kernel composition against the PyTorch reference (``compose_kernel``).

The composed kernel and the gradients of all six (or other numbers of) layers, in float64, at
batch 1 and 3 and for other layer stacks; bit-level batch invariance in float32; the
trainer's choice.
"""

from __future__ import annotations

import pytest
import torch

from kgengine import generator as G
from kgengine import generator_numba as GN
from kgengine.compiled import compose_for


def _weights(sizes: tuple[int, ...], b: int, dtype: torch.dtype, channels: int = 64):
    per = [G.init_weights(sizes, channels, 1.0, torch.Generator().manual_seed(s))
           for s in range(b)]
    return [torch.stack([p[i] for p in per]).to(dtype) for i in range(len(sizes))]


def _grads(fn, weights, upstream):  # noqa: ANN001, ANN202
    ws = [w.clone().requires_grad_() for w in weights]
    k = fn(ws)
    return k.detach(), torch.autograd.grad((k * upstream).sum(), ws)


@pytest.mark.parametrize("sizes", [(7, 5, 3, 1, 1, 1), (5, 3, 1), (7, 1, 1), (3, 5, 7, 1, 1)])
@pytest.mark.parametrize("b", [1, 3])
def test_matches_the_reference_in_float64(sizes, b) -> None:  # noqa: ANN001
    ws = _weights(sizes, b, torch.float64, channels=8 if len(sizes) < 6 else 64)
    side = sum(sizes) - len(sizes) + 1
    upstream = torch.randn(b, side, side, generator=torch.Generator().manual_seed(1),
                           dtype=torch.float64)
    k_ref, g_ref = _grads(G.compose_kernel, ws, upstream)
    k, g = _grads(GN.compose_kernel, ws, upstream)
    assert k.shape == (b, side, side)
    torch.testing.assert_close(k, k_ref, rtol=1e-12, atol=1e-12 * float(k_ref.abs().max()))
    for i, (got, want) in enumerate(zip(g, g_ref, strict=True)):
        torch.testing.assert_close(got, want, rtol=1e-11,
                                   atol=1e-11 * float(want.abs().max()), msg=f"layer {i}")


def test_float32_batch_invariant_to_the_bit() -> None:
    ws = _weights((7, 5, 3, 1, 1, 1), 3, torch.float32)
    upstream = torch.randn(3, 13, 13, generator=torch.Generator().manual_seed(2))
    k, g = _grads(GN.compose_kernel, ws, upstream)
    k_ref, _ = _grads(G.compose_kernel, ws, upstream)
    torch.testing.assert_close(k, k_ref, rtol=1e-5, atol=1e-6 * float(k_ref.abs().max()))
    for i in range(3):
        k1, g1 = _grads(GN.compose_kernel, [w[i : i + 1] for w in ws], upstream[i : i + 1])
        assert torch.equal(k1, k[i : i + 1])
        assert all(torch.equal(a, b[i : i + 1]) for a, b in zip(g1, g, strict=True))


def test_the_trainer_composes_with_numba_on_cpu_unless_torch_is_forced(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("KGENGINE_OPS_BACKEND", raising=False)
    monkeypatch.delenv("KGENGINE_NETWORKS", raising=False)
    assert compose_for(torch.device("cpu")) is GN.compose_kernel
    assert compose_for(torch.device("cuda")) is G.compose_kernel
    monkeypatch.setenv("KGENGINE_OPS_BACKEND", "torch")
    assert compose_for(torch.device("cpu")) is G.compose_kernel
