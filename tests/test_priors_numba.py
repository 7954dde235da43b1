"""The compiled priors (:mod:`kgengine.priors_numba`) against the PyTorch reference.

Values and gradients w.r.t. k and G's output in float64 (random kernels, kernels with exact
zeros and a negative entry, batch 1 and 3, odd crop sizes, the bicubic target with and
without defect 1); bit-level batch invariance in float32; the trainer's choice per device.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from numba_cache import cold_then_warm

from kgengine import priors
from kgengine import priors_numba as PN
from kgengine.compiled import priors_for
from kgengine.config import KernelGANConfig


def _inputs(b: int, dtype: torch.dtype, size: int = 13, crop: int = 64, out: int = 26,
            seed: int = 0, rgb_sum: bool = True) -> tuple[priors.PriorInputs, dict]:
    gen = torch.Generator().manual_seed(seed)
    k = torch.rand(b, size, size, generator=gen, dtype=dtype) / size**2
    k[:, 0, 0] = 0.0  # exact zeros: the sparsity gradient is 0 there
    k[:, 1, 2] = -1e-3  # a negative entry: sign() in every |.|
    g_in = torch.rand(b, 3, crop, crop, generator=gen, dtype=dtype) * 2 - 1
    g_out = torch.rand(b, 3, out, out, generator=gen, dtype=dtype) * 2 - 1
    cfg = dataclasses.replace(KernelGANConfig(), authors_bicubic_rgb_sum=rgb_sum)
    mask = priors.boundary_mask_tensor(size, cfg.boundary_penalty, g_in, cfg.boundary_sigma)
    inputs = priors.PriorInputs(k.requires_grad_(), g_in, g_out.requires_grad_(), mask,
                                priors.centre_target(size), cfg)
    lam = {n: torch.rand(b, generator=gen, dtype=dtype) + 0.1 for n in PN.NAMES}
    return inputs, lam


def _run(fn, inputs: priors.PriorInputs, lam: dict):  # noqa: ANN001, ANN202
    start = torch.linspace(0.5, 1.5, inputs.k.shape[0], dtype=inputs.k.dtype)
    loss, terms = fn(start, inputs, lam)
    up = torch.linspace(1.0, 2.0, loss.shape[0], dtype=loss.dtype)  # a weight per image
    grads = torch.autograd.grad((loss * up).sum(), [inputs.k, inputs.g_out])
    return loss.detach(), {n: t.detach() for n, t in terms.items()}, grads


@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("rgb_sum", [True, False])
@pytest.mark.parametrize(("size", "crop", "out"), [(13, 64, 26), (11, 37, 13)])
def test_matches_the_reference_in_float64(b, rgb_sum, size, crop, out) -> None:  # noqa: ANN001
    inputs, lam = _inputs(b, torch.float64, size, crop, out, rgb_sum=rgb_sum)
    loss_ref, terms_ref, grads_ref = _run(priors.add_priors, inputs, lam)
    loss, terms, grads = _run(PN.add_priors, inputs, lam)
    assert list(terms) == [p.name for p in priors.PRIORS]
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-14)
    for name in terms:
        torch.testing.assert_close(terms[name], terms_ref[name], rtol=1e-12, atol=1e-14,
                                   msg=name)
    for name, got, want in zip(("k", "g_out"), grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12 * float(want.abs().max()),
                                   msg=name)


def test_each_term_s_gradient_alone_matches_the_reference() -> None:
    """One weight at a time: a wrong sign or factor in one term cannot hide behind another."""
    inputs, lam = _inputs(2, torch.float64, seed=3)
    for name in PN.NAMES:
        only = {n: lam[n] * (n == name) for n in PN.NAMES}
        _, _, want = _run(priors.add_priors, inputs, only)
        _, _, got = _run(PN.add_priors, inputs, only)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-13, msg=name)


def test_float32_close_to_the_reference_and_batch_invariant_to_the_bit() -> None:
    inputs, lam = _inputs(3, torch.float32, seed=5)
    loss_ref, _, grads_ref = _run(priors.add_priors, inputs, lam)
    loss, _, grads = _run(PN.add_priors, inputs, lam)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    for i in range(3):
        one = dataclasses.replace(
            inputs, k=inputs.k[i : i + 1].detach().requires_grad_(), g_in=inputs.g_in[i : i + 1],
            g_out=inputs.g_out[i : i + 1].detach().requires_grad_())
        l1 = loss[i : i + 1].clone()
        start = torch.linspace(0.5, 1.5, 3)[i : i + 1]
        got, _ = PN.add_priors(start, one, {n: v[i : i + 1] for n, v in lam.items()})
        assert torch.equal(got.detach(), l1)
        g1 = torch.autograd.grad((got * torch.linspace(1.0, 2.0, 3)[i]).sum(), [one.k, one.g_out])
        assert all(torch.equal(a, b[i : i + 1]) for a, b in zip(g1, grads, strict=True))


def test_the_trainer_uses_the_compiled_priors_on_cpu_unless_torch_is_forced(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("KGENGINE_OPS_BACKEND", raising=False)
    monkeypatch.delenv("KGENGINE_NETWORKS", raising=False)
    assert priors_for(torch.device("cpu")) is PN.add_priors
    assert priors_for(torch.device("meta")) is priors.add_priors
    monkeypatch.setenv("KGENGINE_NETWORKS", "torch")
    assert priors_for(torch.device("cpu")) is priors.add_priors


_COLD_WARM = """
import sys, torch
from kgengine import priors, priors_numba as PN
from kgengine.adam import FlatAdam
from kgengine.config import KernelGANConfig
g = torch.Generator().manual_seed(0)
cfg = KernelGANConfig()
k = (torch.rand(2, 13, 13, generator=g) / 169).requires_grad_()
g_in = torch.rand(2, 3, 64, 64, generator=g)
g_out = torch.rand(2, 3, 26, 26, generator=g).requires_grad_()
mask = priors.boundary_mask_tensor(13, cfg.boundary_penalty, g_in, cfg.boundary_sigma)
lam = torch.rand(2, 5, generator=g)
total, terms = PN.weighted_priors(k, g_in, g_out, lam, mask, 6.5)
grads = torch.autograd.grad(total.sum(), [k, g_out])
p = torch.randn(1000, generator=g)
opt = FlatAdam(p, 2e-4, (0.5, 0.999), compiled=True)
for _ in range(3):
    opt.step(torch.randn(1000, generator=g))
torch.save([total.detach(), terms, *grads, p], sys.argv[1])
"""


def test_same_bits_from_a_fresh_compile_and_from_numba_s_disk_cache(tmp_path) -> None:  # noqa: ANN001
    """The priors and Adam compile without fast-math (no contraction), so a fresh compile and
    Numba's disk cache give the same bits (D needed its helpers inlined for that)."""
    cold, warm = cold_then_warm(_COLD_WARM, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(cold, warm, strict=True))
