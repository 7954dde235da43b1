"""One KernelGAN iteration on CPU without autograd: the compiled passes called in the order
PyTorch's autograd calls them in :meth:`kgengine.trainer.BatchTrainer.step`, with the
gradients it would form.

Autograd's share of a B = 1 step (its engine, the autograd nodes around each compiled pass,
the graph) was about a third of the time left after the compiled passes. Here each pass's
backward is called directly:

- G step: ``L_G = mean|D(G(x)) - 1| + sum_t λ_t L_t``. ``dL/dD = sgn(D - 1) / P`` per map
  (P positions); D's backward gives dL/dG(x); the priors' backward adds theirs (to G(x) and
  to k); the strided correlation's kernel gradient and the composition's backward give G's
  weight gradients.
- D step: ``L_D = ½(mean|D(real) - 1| + mean|D(fake)|)``, so ``dL/dD = ½ sgn(D - label) /
  P``; D's backward gives its parameters' gradients.

Every gradient is formed by the same operations as autograd's (the mean's ``1 / P`` as a
division of the upstream gradient, the absolute value's ``sgn``), and where two gradients
meet (G(x), k) there are exactly two, whose sum does not depend on the order. So the bytes
are the autograd step's (tested over 200 float32 iterations).
"""

from __future__ import annotations

import torch

from kgengine import priors
from kgengine.discriminator_numba import SN_KEYS, fused_backward, fused_forward
from kgengine.generator_numba import compose_backward, compose_forward
from kgengine.numba_util import single_threaded_blas
from kgengine.ops import _numba_cpu
from kgengine.priors_numba import NAMES, priors_backward, priors_forward


def gan_grad(d_map: torch.Tensor, upstream: torch.Tensor, real: bool) -> torch.Tensor:
    """d/d d_map of ``upstream · gan_loss(d_map, real)``, as autograd forms it: ``(upstream /
    P) · sgn(d_map - label)``. d_map (B, h, w), upstream (B,) -> (B, h, w)."""
    flat = d_map.flatten(1)
    mean_grad = upstream.unsqueeze(1).expand(flat.shape) / flat.shape[1]
    return (mean_grad * torch.sgn(flat - (1.0 if real else 0.0))).view(d_map.shape)


def _kernel(tr: object, it: int) -> tuple[torch.Tensor, tuple]:
    """This iteration's G kernel (B, K, K) and its composition state: the one the previous D
    step composed (G has not changed since), else a fresh one."""
    ready, cached = tr._lean_kernel
    if ready == it and cached is not None:
        return cached
    k, keep = compose_forward(tr.g_weights)
    return torch.from_numpy(k), keep


def g_step(tr: object, g_in: torch.Tensor, it: int
           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """G's update on crops g_in (B, 3, S, S): returns l_gan, l_g (B,) and the prior terms."""
    cfg = tr.cfg
    single_threaded_blas()  # as the autograd nodes do: BLAS threads would change bits
    k, keep = _kernel(tr, it)
    g_out = _numba_cpu.downscale(g_in, k, 2, "valid")
    params = [t.detach() for t in tr._d_leaves]
    sn = [tr.d_state[key] for key in SN_KEYS]
    probs, state = fused_forward(g_out.unsqueeze(0), params, sn, tr.threads, keep=True)
    d_fake = probs[0]
    l_gan = priors.gan_loss(d_fake, real=True)
    lam = torch.stack([tr.lam[n] for n in NAMES], 1)
    total, terms, saved = priors_forward(k, g_in.contiguous(), g_out, lam, tr.mask.contiguous(),
                                         tr.centre, cfg.sparse_power, cfg.authors_bicubic_rgb_sum)
    l_g = l_gan + total
    # backward of l_g.sum()
    ones = torch.ones_like(l_g)
    dx, _ = fused_backward(state, gan_grad(d_fake, ones, real=True).unsqueeze(0), True, False)
    dk_priors, dg_priors = priors_backward(saved, ones)
    dg_out = dx[0] + dg_priors
    dk = _numba_cpu.kernel_grad(g_in, k, dg_out, 2, "valid") + dk_priors
    grads = compose_backward(tr.g_weights, keep, dk)
    tr.opt_g.step(torch.cat([g.reshape(-1) for g in grads]))
    return l_gan, l_g, dict(zip(NAMES, terms.unbind(1), strict=True))


def d_step(tr: object, g_in: torch.Tensor, d_in: torch.Tensor, it: int) -> torch.Tensor:
    """D's update on the real crops d_in and G's (updated) output of g_in plus noise; keeps
    the kernel composed here for the next G step. Returns l_d (B,)."""
    k, keep = compose_forward(tr.g_weights)
    k = torch.from_numpy(k)
    tr._lean_kernel = (it + 1, (k, keep))
    g_out = _numba_cpu.downscale(g_in, k, 2, "valid")
    g_out = g_out + tr._g_noise(it).reshape(g_out.shape)
    sn = [tr.d_state[key] for key in SN_KEYS]
    maps, state = fused_forward(torch.stack([d_in, g_out]), [t.detach() for t in tr._d_leaves],
                                sn, tr.threads, keep=True)
    l_d = 0.5 * (priors.gan_loss(maps[0], real=True) + priors.gan_loss(maps[1], real=False))
    half = torch.ones_like(l_d) * 0.5  # d(0.5 · (a + b)).sum() / da = d / db
    grad = torch.stack([gan_grad(maps[0], half, real=True), gan_grad(maps[1], half, real=False)])
    _, dp = fused_backward(state, grad, False, True)
    tr.opt_d.step(torch.cat([g.reshape(-1) for g in dp]))
    return l_d
