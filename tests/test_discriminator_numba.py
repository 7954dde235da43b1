"""The compiled Numba discriminator against the PyTorch reference (``discriminator.forward``).

Outputs, the spectral-norm vectors it updates, and every gradient (crops and parameters), in
float64 on random inputs at several batch sizes, crop counts and sizes (batch 1, odd size);
bit-level batch invariance in float32; NaN propagation; the trainer's choice of D.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba_cache import cold_then_warm

from kgengine import discriminator as D
from kgengine import discriminator_numba as DN
from kgengine.compiled import discriminator_for

SN_KEYS = ("u0", "v0", "um", "vm", "uf", "vf")


def _params(b: int, dtype: torch.dtype, default_init: bool = False) -> dict[str, torch.Tensor]:
    """B images' D parameters (seeds 0..B-1), with non-trivial biases and BN affine."""
    ps = [D.init_params(64, 7, 7, 0.02, default_init, torch.Generator().manual_seed(i))
          for i in range(b)]
    p = {k: torch.stack([q[k] for q in ps]).to(dtype).contiguous() for k in ps[0]}
    g = torch.Generator().manual_seed(99)
    for key in ("b0", "bm", "beta", "bf"):
        p[key] = (0.1 * torch.randn(p[key].shape, generator=g, dtype=torch.float64)).to(dtype)
    return p


def _leaves(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.clone().requires_grad_() if k in D.TRAINABLE else v.clone())
            for k, v in p.items()}


def _run(fwd, x, p, upstream, wrt_params=True):  # noqa: ANN001, ANN202
    """Output, gradients w.r.t. x and (optionally) the trainable parameters, updated u/v."""
    p = _leaves(p)
    if not wrt_params:
        p = {k: v.detach() for k, v in p.items()}
    x = x.clone().requires_grad_()
    out = fwd(x, p)
    inputs = [x] + ([p[k] for k in D.TRAINABLE] if wrt_params else [])
    grads = torch.autograd.grad((out * upstream).sum(), inputs)
    return out.detach(), grads, {k: p[k] for k in SN_KEYS}


@pytest.mark.parametrize(("b", "n", "size"), [(1, 1, 26), (3, 2, 26), (2, 2, 15), (1, 3, 8)])
@pytest.mark.parametrize("default_init", [False, True])
def test_matches_the_reference_in_float64(b, n, size, default_init) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(b * 100 + n * 10 + size)
    x = torch.rand(n, b, 3, size, size, generator=g, dtype=torch.float64) * 2 - 1
    upstream = torch.randn(n, b, size - 6, size - 6, generator=g, dtype=torch.float64)
    p = _params(b, torch.float64, default_init)
    out_ref, grads_ref, sn_ref = _run(D.forward, x, p, upstream)
    out, grads, sn = _run(DN.forward, x, p, upstream)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-14)
    for key in SN_KEYS:
        torch.testing.assert_close(sn[key], sn_ref[key], rtol=1e-12, atol=1e-14)
    names = ["x", *D.TRAINABLE]
    for name, got, want in zip(names, grads, grads_ref, strict=True):
        # on the scale of the tensor (sums of hundreds of terms of both signs); b0 and bm feed
        # straight into a BatchNorm, so their exact gradient is 0 and both implementations
        # return rounding noise around it: compare those on the scale of dw0
        scale = grads_ref[1] if name in ("b0", "bm") else want
        atol = 1e-11 * float(scale.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-10, atol=atol, msg=name)


def test_gradient_w_r_t_the_crops_only() -> None:
    """The G step asks for dD/dx with D's parameters constant (no parameter gradients)."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 2, 3, 26, 26, generator=g, dtype=torch.float64)
    upstream = torch.randn(1, 2, 20, 20, generator=g, dtype=torch.float64)
    p = _params(2, torch.float64)
    _, (dx_ref,), _ = _run(D.forward, x, p, upstream, wrt_params=False)
    _, (dx,), _ = _run(DN.forward, x, p, upstream, wrt_params=False)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-14)


def test_gradient_w_r_t_the_parameters_only() -> None:
    """The D step: crops are data (no dx), every parameter gets its gradient."""
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 2, 3, 26, 26, generator=g, dtype=torch.float64)
    upstream = torch.randn(2, 2, 20, 20, generator=g, dtype=torch.float64)
    p = _params(2, torch.float64)
    grads = []
    for fwd in (D.forward, DN.forward):
        q = _leaves(p)
        out = fwd(x, q)
        grads.append(torch.autograd.grad((out * upstream).sum(), [q[k] for k in D.TRAINABLE]))
    for name, got, want in zip(D.TRAINABLE, grads[1], grads[0], strict=True):
        scale = grads[0][0] if name in ("b0", "bm") else want
        torch.testing.assert_close(got, want, rtol=1e-10,
                                   atol=1e-11 * float(scale.abs().max()), msg=name)


def test_a_pass_keeps_its_own_state_when_another_pass_runs_before_its_backward() -> None:
    """Two forwards (each moves u, v), then the first one's backward: the same gradients as
    when its backward comes at once."""
    g = torch.Generator().manual_seed(8)
    x = torch.rand(1, 1, 3, 26, 26, generator=g, dtype=torch.float64)
    p = _params(1, torch.float64)
    q1 = _leaves(p)
    want = torch.autograd.grad(DN.forward(x, q1).sum(), [q1[k] for k in D.TRAINABLE])
    q2 = _leaves(p)
    first = DN.forward(x, q2)
    DN.forward(x, q2)  # updates u, v in place
    got = torch.autograd.grad(first.sum(), [q2[k] for k in D.TRAINABLE])
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_mixed_dtypes_are_refused() -> None:
    with pytest.raises(ValueError, match="one dtype"):
        DN.forward(torch.zeros(1, 1, 3, 26, 26, dtype=torch.float64), _params(1, torch.float32))


def test_float32_close_to_the_reference_and_batch_invariant_to_the_bit() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, 3, 26, 26, generator=g) * 2 - 1
    upstream = torch.randn(2, 3, 20, 20, generator=g)
    p = _params(3, torch.float32)
    out_ref, _, _ = _run(D.forward, x, p, upstream)
    out, grads, sn = _run(DN.forward, x, p, upstream)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    for i in range(3):  # image i alone gives the same bits as inside the batch of 3
        alone = {k: v[i : i + 1].contiguous() for k, v in p.items()}
        o1, g1, sn1 = _run(DN.forward, x[:, i : i + 1], alone, upstream[:, i : i + 1])
        assert torch.equal(o1, out[:, i : i + 1])
        assert torch.equal(g1[0], grads[0][:, i : i + 1])
        for got, whole in zip(g1[1:], grads[1:], strict=True):
            assert torch.equal(got, whole[i : i + 1])
        for key in SN_KEYS:
            assert torch.equal(sn1[key], sn[key][i : i + 1])


def test_nan_in_a_crop_reaches_the_output_like_torch() -> None:
    """A diverged image must show up as non-finite (the trainer's ``finite`` flag)."""
    x = torch.zeros(1, 1, 3, 26, 26)
    x[0, 0, 1, 10, 10] = float("nan")
    p = _params(1, torch.float32)
    with torch.no_grad():
        assert torch.isnan(D.forward(x, p)).any()
        assert torch.isnan(DN.forward(x, p)).any()


def test_non_contiguous_parameters_are_refused() -> None:
    p = _params(1, torch.float32)
    p["wm"] = p["wm"].transpose(2, 3)
    with pytest.raises(ValueError, match="contiguous"):
        DN.forward(torch.zeros(1, 1, 3, 26, 26), p)


def test_the_trainer_uses_the_compiled_d_on_cpu_unless_torch_is_forced(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("KGENGINE_OPS_BACKEND", raising=False)
    monkeypatch.delenv("KGENGINE_NETWORKS", raising=False)
    assert discriminator_for(torch.device("cpu")).func is DN.forward
    assert discriminator_for(torch.device("cuda")) is D.forward
    monkeypatch.setenv("KGENGINE_NETWORKS", "torch")  # the networks only
    assert discriminator_for(torch.device("cpu")) is D.forward
    monkeypatch.delenv("KGENGINE_NETWORKS")
    monkeypatch.setenv("KGENGINE_OPS_BACKEND", "torch")
    assert discriminator_for(torch.device("cpu")) is D.forward
    assert __import__("kgengine.numba_util").numba_util.single_threaded_blas() >= 1


_COLD_WARM = """
import sys, torch
from kgengine import discriminator as D, discriminator_numba as DN
g = torch.Generator().manual_seed(0)
ps = D.init_params(64, 7, 7, 0.02, False, g)
p = {k: v.unsqueeze(0).float().contiguous() for k, v in ps.items()}
for k in D.TRAINABLE:
    p[k].requires_grad_()
x = torch.randn(2, 1, 3, 26, 26, generator=g, requires_grad=True)
out = DN.forward(x, p)
grads = torch.autograd.grad(out.sum(), [x] + [p[k] for k in D.TRAINABLE])
torch.save([out.detach()] + list(grads), sys.argv[1])
"""


def test_same_bits_from_a_fresh_compile_and_from_numba_s_disk_cache(tmp_path) -> None:
    """A helper compiled on its own and linked from the cache rounded differently from the
    same helper inlined into a fresh compile (found: a kernel's bytes depended on whether
    the cache was warm). The helpers are inlined at Numba's level, so both paths agree."""
    cold, warm = cold_then_warm(_COLD_WARM, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(cold, warm, strict=True))


def test_power_iteration_is_the_one_element_at_a_time_sums():
    """``_sn`` sums many rows side by side; each element must still be the float64 sum, in
    index order, of float32 products, as a one-element-at-a-time loop gives it (bitwise;
    float32 weights, as in training)."""
    from numba import njit

    from kgengine.discriminator import SN_EPS
    from kgengine.discriminator_kernels import _sn

    rng = np.random.default_rng(0)
    w = rng.standard_normal((9, 31)).astype(np.float32)
    u0 = rng.standard_normal(9).astype(np.float32)
    u, v = u0.copy(), np.zeros(31, np.float32)
    sigma = njit(lambda w, u, v: _sn(w, u, v))(w, u, v)

    ru, rv = u0.copy(), np.zeros(31, np.float32)
    for j in range(31):
        acc = 0.0
        for i in range(9):
            acc += float(ru[i] * w[i, j])  # float32 product, float64 sum
        rv[j] = acc
    norm = max(np.sqrt(sum(float(x * x) for x in rv)), SN_EPS)  # float32 squares
    rv = np.array([float(x) / norm for x in rv], np.float32)
    wv = []
    for i in range(9):
        acc = 0.0
        for j in range(31):
            acc += float(w[i, j] * rv[j])
        wv.append(acc)
    norm = max(np.sqrt(sum(x * x for x in wv)), SN_EPS)
    ru = np.array([x / norm for x in wv], np.float32)
    want = 0.0
    for i in range(9):
        want += float(ru[i]) * wv[i]
    assert v.tobytes() == rv.tobytes() and u.tobytes() == ru.tobytes()
    assert sigma == want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("b", "n", "size"), [(1, 2, 26), (2, 1, 15)])
def test_backward_split_by_layers_gives_the_full_backward_bits(dtype, b, n, size) -> None:
    """The lean step splits a backward's layers over two threads. Every split point, in
    either order of the two calls, gives each parameter gradient and dx with the bits of
    one call over all layers; and a call for some layers leaves the others' parts alone."""
    from concurrent.futures import ThreadPoolExecutor

    p = _params(b, dtype)
    x = np.ascontiguousarray(
        torch.randn(n, b, 3, size, size, generator=torch.Generator().manual_seed(5),
                    dtype=dtype).numpy())
    ds = np.random.default_rng(1).standard_normal((b, n, (size - 6) ** 2)).astype(x.dtype)

    def backward(splits, need_x, parallel=False):  # noqa: ANN001, ANN202
        sn = [p[k].clone().numpy() for k in SN_KEYS]
        state = DN.open_pass(x.shape, [p[k] for k in D.TRAINABLE], sn, 1)
        DN.forward_tasks(state, x, 0, b * n)
        DN.ensure_parts(state, True)
        for part in state.parts:
            part[:] = np.nan  # nothing may stay unwritten
        dx = np.full(x.shape if need_x else (1, 1, 0, 0, 0), np.nan, x.dtype)
        jobs = [(state, ds, 0, b * n, need_x and i == 0, True, dx, 1, s)
                for i, s in enumerate(splits)]
        if parallel:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda a: DN.backward_tasks(*a), jobs))
        else:
            for a in jobs:
                DN.backward_tasks(*a)
        return [q.copy() for q in state.parts], dx, DN.close_pass(state, True)

    n_layers = 7  # the first conv, 5 blocks, the last conv
    for need_x in (False, True):
        parts, dx, grads = backward([(0, n_layers)], need_x)
        assert not any(np.isnan(q).any() for q in parts) and not np.isnan(dx).any()
        for split in range(1, n_layers):
            for order, parallel in (((0, 1), True), ((1, 0), False)):
                halves = [(0, split), (split, n_layers)]
                got_parts, got_dx, got = backward([halves[i] for i in order], need_x, parallel)
                assert [a.tobytes() for a in parts] == [c.tobytes() for c in got_parts]
                assert dx.tobytes() == got_dx.tobytes()
                assert all(torch.equal(a, c) for a, c in zip(grads, got, strict=True))
    # one layer range writes only its own parts (layer 0: w0 and b0, parts 0 and 1)
    parts, _, _ = backward([(0, 1)], False)
    assert not np.isnan(parts[0]).any() and not np.isnan(parts[1]).any()
    assert all(np.isnan(q).all() for q in parts[2:])
