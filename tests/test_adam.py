"""FlatAdam against ``torch.optim.Adam``, and its compiled loop against its PyTorch operations."""

from __future__ import annotations

import pytest
import torch

from kgengine.adam import FlatAdam


def _trajectory(opt_for, dtype: torch.dtype, steps: int = 6, n: int = 1001):  # noqa: ANN001, ANN202
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(n, generator=gen, dtype=dtype)
    step = opt_for(p)
    out = []
    for t in range(steps):
        g = torch.randn(n, generator=gen, dtype=dtype) * 10.0 ** (-t % 3)
        g[:7] = 0.0  # zero gradients: m, v decay, p still moves
        step(g, t)
        out.append(p.clone())
    return torch.stack(out)


def _flat(compiled: bool, on_device: bool = False):  # noqa: ANN202
    def make(p: torch.Tensor):  # noqa: ANN202
        opt = FlatAdam(p, 2e-4, (0.5, 0.999), compiled=compiled, on_device=on_device)

        def step(g: torch.Tensor, t: int) -> None:
            if t == 3:
                opt.lr /= 10.0  # the trainer's learning-rate decay
            opt.step(g)
        return step
    return make


def _torch_adam(p: torch.Tensor):  # noqa: ANN202
    leaf = p.requires_grad_()
    opt = torch.optim.Adam([leaf], lr=2e-4, betas=(0.5, 0.999), foreach=False)

    def step(g: torch.Tensor, t: int) -> None:
        if t == 3:
            opt.param_groups[0]["lr"] /= 10.0
        leaf.grad = g
        opt.step()
    return step


@pytest.mark.parametrize(("compiled", "on_device"), [(False, False), (True, False), (False, True)])
def test_matches_torch_optim_adam_in_float64(compiled: bool, on_device: bool) -> None:
    """Each way of computing the update (PyTorch ops with host scalars, one Numba loop,
    PyTorch ops with the step count and learning rate in tensors: the capturable one)."""
    want = _trajectory(_torch_adam, torch.float64).detach()
    got = _trajectory(_flat(compiled, on_device), torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)


def test_on_device_state_is_in_tensors_and_close_to_the_host_path_in_float32() -> None:
    """The capturable update keeps t and lr in tensors (a decay written through ``lr``),
    and rounds within a few float32 ulps of the host-scalar path."""
    ref = _trajectory(_flat(False), torch.float32)
    got = _trajectory(_flat(False, on_device=True), torch.float32)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    p = torch.zeros(4)
    opt = FlatAdam(p, 2e-4, (0.5, 0.999), on_device=True)
    for _ in range(3):
        opt.step(torch.ones(4))
    opt.lr /= 10.0
    assert float(opt._dev[0]) == 3 and float(opt._dev[1]) == pytest.approx(2e-5, rel=1e-15)
    with pytest.raises(ValueError, match="exclude each other"):
        FlatAdam(p, 2e-4, (0.5, 0.999), compiled=True, on_device=True)


def test_compiled_is_close_in_float32_and_elementwise_to_the_bit() -> None:
    ref = _trajectory(_flat(False), torch.float32)
    got = _trajectory(_flat(True), torch.float32)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    # element-wise: a part of the buffer on its own gets the bits it gets in the whole buffer
    gen = torch.Generator().manual_seed(1)
    whole = torch.randn(1001, generator=gen)
    part = whole[:333].clone()
    opts = [FlatAdam(x, 2e-4, (0.5, 0.999), compiled=True) for x in (whole, part)]
    for _ in range(5):
        g = torch.randn(1001, generator=gen)
        opts[0].step(g)
        opts[1].step(g[:333].clone())
    assert torch.equal(part, whole[:333])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_update_split_over_threads_changes_no_bit(dtype: torch.dtype) -> None:
    """A buffer from SPLIT_SIZE elements is updated in one part per thread (of odd size
    here, so the SIMD loop's tails fall elsewhere): the same bits as one part."""
    from kgengine.adam import SPLIT_SIZE

    n = SPLIT_SIZE + 12_345
    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(n, generator=gen, dtype=dtype)
    grads = [torch.randn(n, generator=gen, dtype=dtype) for _ in range(4)]
    outs = []
    for threads in (1, 2):
        p = p0.clone()
        opt = FlatAdam(p, 2e-4, (0.5, 0.999), compiled=True)
        for g in grads:
            opt.step(g, threads)
        outs.append((p, opt.m, opt.v))
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))
