"""One KernelGAN iteration on CPU without autograd: the compiled passes called in the order
PyTorch's autograd calls them in :meth:`kgengine.trainer.BatchTrainer.step`, with the
gradients it would form.

Autograd's engine, the nodes around each compiled pass and their tensor glue cost about 1 ms
of a 7-8 ms B = 1 step on a 2-core CPU (measured). Here each pass's backward is called
directly:

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

With B = 1 on 2 threads the other thread takes what the chain G step -> G update -> D step
does not wait for: the priors, the D step's power iteration and real crop (during the G
step), the top layers' weight gradients of the fake crop, and the next iteration's crops.

State kept on the trainer (declared in ``BatchTrainer._init_lean``): ``_lean_kernel``
(iteration, (kernel, composition state)) composed in the D step for the next G step;
``_lean_arrays`` D's and G's NumPy views; ``_lean_grads`` G's and D's flat gradient buffers;
``_lean_crops`` (iteration, :class:`_GCrops`) from the G step for the D step; ``_lean_d``
the D step's pass opened on the other thread; ``_lean_jobs`` the step's jobs there;
``_prefetched`` (iteration, job) the crops sampled ahead.
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import torch
from numba import njit

from kgengine.discriminator_numba import (
    SN_KEYS,
    Pass,
    backward_tasks,
    close_pass,
    ensure_parts,
    forward_tasks,
    fused_backward,
    fused_forward,
    open_pass,
)
from kgengine.generator_numba import compose_backward, compose_forward
from kgengine.numba_util import run_tasks, single_threaded_blas, slots, submit
from kgengine.priors_numba import NAMES, priors_backward, priors_forward

#: The D step's fake-crop backward at B = 1 on 2 threads: this thread takes the gradients of
#: layers 0..SPLIT-1 (the first conv and block 0, with the whole chain down to them), the
#: other thread those above (it needs the chain down to block 1 only): 8 against 7 products
#: of 64 x 64 x P (the first conv's counts 2.3).
SPLIT = 2


@njit(cache=True, nogil=True)
def _gan_terms(probs, labels, upstream, loss, grad):
    """For each image b and map n of probs (B, N, P): ``loss[b, n] = mean_q |probs - labels[n]|``
    (accumulated in float64) and ``grad[b, n] = (upstream[n] / P) · sgn(probs - labels[n])``,
    the gradient of ``upstream[n] · loss`` as autograd forms it through ``gan_loss`` (the
    mean's division of the upstream gradient by P, then the product with sgn, both in the
    maps' dtype; sgn(NaN) = 0 as in PyTorch). labels, upstream: (N,) in the maps' dtype."""
    bsz, n_maps, npos = probs.shape
    scale = np.empty(n_maps, probs.dtype)
    for n in range(n_maps):
        scale[n] = upstream[n] / probs.dtype.type(npos)
    for b in range(bsz):
        for n in range(n_maps):
            acc = 0.0
            for q in range(npos):
                d = probs[b, n, q] - labels[n]
                acc += abs(np.float64(d))
                grad[b, n, q] = scale[n] if d > 0 else (-scale[n] if d < 0 else scale[n] * 0)
            loss[b, n] = acc / npos


def _gan(state: Pass, labels: tuple, upstream: tuple) -> tuple[torch.Tensor, np.ndarray]:
    """The GAN loss of each map of a D pass (B, N) and its gradient (B, N, P)."""
    probs = state.probs
    dt = probs.dtype
    loss, grad = np.empty(probs.shape[:2], dt), np.empty_like(probs)
    _gan_terms(probs, np.array(labels, dt), np.array(upstream, dt), loss, grad)
    return torch.from_numpy(loss), grad


def _arrays(tr: object) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """NumPy views of D's parameters (into the flat buffer), of u, v and of G's weights
    (made once)."""
    if tr._lean_arrays is None:
        tr._lean_arrays = ([t.detach().numpy() for t in tr._d_leaves],
                           [tr.d_state[key].numpy() for key in SN_KEYS],
                           [w.detach().numpy() for w in tr.g_weights])
    return tr._lean_arrays


def _grad_buffers(tr: object) -> tuple[np.ndarray, np.ndarray]:
    """The flat gradient buffers of G and D (the layout of their parameter buffers), made
    once: the passes write their gradients straight into them."""
    if tr._lean_grads is None:
        tr._lean_grads = (np.empty_like(tr.g_flat.numpy()), np.empty_like(tr.d_flat.numpy()))
    return tr._lean_grads


class _GCrops:
    """G's input crops g_in (B, C, H, W) as the strided correlation reads them, made once
    per iteration for its three uses (G's output in the G step, its kernel gradient, G's
    output in the D step): the poly-phase copy and the row table of
    :mod:`kgengine.ops._numba_cpu`, whose serial kernels are called on them directly (the
    calls ``downscale`` and ``kernel_grad`` make inside :func:`kgengine.ops.backend.serial_ops`,
    without their per-call checks and tables)."""

    def __init__(self, g_in: torch.Tensor, ksize: int, threads: int) -> None:
        from kgengine.ops import _numba_cpu as nc
        from kgengine.ops._spec import output_size, source_index

        self.nc, self.threads = nc, threads
        x = g_in.numpy()
        b, c, h, w = x.shape
        self.out_shape = (b, c, *output_size(h, w, ksize, ksize, 2, "valid"))
        self.rows = source_index(h, ksize, 2, self.out_shape[2], "valid")
        cols = source_index(w, ksize, 2, self.out_shape[3], "valid")
        self.poly = np.empty((b, c, 2, h, -(-cols.shape[0] // 2)), x.dtype)
        nc._polyphase_serial(x, cols, 2, self.poly)

    def downscale(self, k: np.ndarray) -> np.ndarray:
        """G's output (B, C, h, w) with composed kernels k (B, K, K)."""
        out, poly, rows = np.empty(self.out_shape, self.poly.dtype), self.poly, self.rows
        run_tasks(lambda lo, hi: self.nc._strided_corr_serial(poly[lo:hi], k[lo:hi], rows, 2,
                                                               out[lo:hi]),
                  self.threads, out.shape[0])  # per image: the images split over the threads
        return out

    def kernel_grad(self, grad_out: np.ndarray) -> np.ndarray:
        """The gradient w.r.t. the kernels (B, K, K), float64, of the output's ``grad_out``."""
        k = self.rows.shape[0] - 2 * (self.out_shape[2] - 1)
        out, poly, rows = np.empty((self.out_shape[0], k, k)), self.poly, self.rows
        run_tasks(lambda lo, hi: self.nc._kernel_grad_serial(poly[lo:hi], grad_out[lo:hi], rows,
                                                              2, out[lo:hi]),
                  self.threads, out.shape[0])
        return out


def _compose(tr: object) -> tuple[torch.Tensor, dict]:
    """G's composed kernels (B, K, K) and their composition states, the images split over
    the threads (:func:`_split_threads`; each image's arithmetic is its own): {first image
    of a part: its state}."""
    ws = _arrays(tr)[2]
    if _split_threads(tr) == 1 or tr.b == 1:
        k, keep = compose_forward(ws)
        return torch.from_numpy(k), {0: keep}
    side = sum(w.shape[-1] - 1 for w in ws) + 1
    k, keep = np.empty((tr.b, side, side), ws[0].dtype), {}

    def part(lo: int, hi: int) -> None:
        k[lo:hi], keep[lo] = compose_forward([w[lo:hi] for w in ws])

    run_tasks(part, _split_threads(tr), tr.b)
    return torch.from_numpy(k), keep


def _compose_backward(tr: object, keep: dict, dk: torch.Tensor, out: np.ndarray) -> None:
    """The backward of :func:`_compose` (the same split) for ``dk`` (B, K, K) w.r.t. the
    kernels: G's weight gradients written into the flat buffer ``out``."""
    ws = _arrays(tr)[2]
    grads, dk = slots([w.shape for w in ws], out, out.dtype), dk.numpy()
    run_tasks(lambda lo, hi: compose_backward([w[lo:hi] for w in ws], keep[lo], dk[lo:hi],
                                              [g[lo:hi] for g in grads]),
              _split_threads(tr), tr.b)


def _kernel(tr: object, it: int) -> tuple[torch.Tensor, dict]:
    """This iteration's G kernel (B, K, K) and its composition state: the one the previous D
    step composed (G has not changed since), else a fresh one."""
    ready, cached = tr._lean_kernel
    if ready == it and cached is not None:
        return cached
    return _compose(tr)


def _open_d_pass(shape: tuple, params: list, sn: list, threads: int, d_in: np.ndarray
                 ) -> tuple:
    """The D step's pass on 2 crops (real, fake) of one image: its power iteration, the
    crops' buffer with the real crop in place, the losses' and gradients' buffers."""
    state = open_pass(shape, params, sn, threads, copy=False)
    ensure_parts(state, True)
    x = np.empty(shape, state.probs.dtype)
    x[0] = d_in
    return state, x, np.empty(state.probs.shape[:2], x.dtype), np.empty_like(state.probs)


def _real_half(opened: Future) -> None:
    """The D step's real crop (task 0 of a B = 1 pass): forward, its GAN loss and gradient,
    backward into its part of the parameter gradients. Runs on the pool's thread."""
    state, x, loss, ds = opened.result()
    forward_tasks(state, x, 0, 1)
    dt = ds.dtype
    _gan_terms(state.probs[:, :1], np.ones(1, dt), np.full(1, 0.5, dt), loss[:, :1], ds[:, :1])
    backward_tasks(state, ds, 0, 1, False, True, _no_dx(dt))


def _no_dx(dt: np.dtype) -> np.ndarray:
    """The empty dx of a backward that needs no gradient w.r.t. the crops."""
    return np.empty((1, 1, 0, 0, 0), dt)


def _overlaps(tr: object) -> bool:
    """Whether the step hands work to the other thread: one image, at least 2 threads (a
    batch splits its crops and images over the threads instead)."""
    return tr.b == 1 and tr.threads >= 2


def _split_threads(tr: object) -> int:
    """Threads for work split by images or elements: 1 where the other thread has jobs
    queued (B = 1, see :func:`_overlaps`)."""
    return 1 if _overlaps(tr) else tr.threads


def settle(tr: object) -> None:
    """Let the jobs still on the other thread end and forget them: those of a step that
    raised half-way (they use pooled buffers and the trainer's state), and the crops
    sampled ahead at the end of :meth:`~kgengine.trainer.BatchTrainer.run`."""
    ahead = [tr._prefetched[1]] if tr._prefetched is not None else []
    jobs, tr._lean_jobs, tr._lean_d, tr._prefetched = tr._lean_jobs, [], None, None
    for job in jobs + ahead:
        job.exception()


def _start_d_step(tr: object, d_in: torch.Tensor, params: list, sn: list) -> None:
    """With B = 1 and 2 threads: open the D step's pass on the other thread now (its power
    iteration comes after the G step's, as in the sequential order) and run its real crop
    there during the G step (D does not change before the D step)."""
    shape = (2, *d_in.shape)
    opened = submit(_open_d_pass, shape, params, sn, tr.threads, d_in.numpy())
    real = submit(_real_half, opened)
    tr._lean_jobs += [opened, real]
    tr._lean_d = (opened, real)


def _priors(tr: object, k: torch.Tensor, g_in: torch.Tensor, g_out: torch.Tensor,
            lam: torch.Tensor) -> tuple:
    """The priors' total (B,), terms (B, 5) and the gradients of the total w.r.t. k and
    g_out (upstream 1, as ``l_g.sum()`` gives them)."""
    cfg = tr.cfg
    total, terms, saved = priors_forward(k, g_in.contiguous(), g_out, lam, tr.mask.contiguous(),
                                         tr.centre, cfg.sparse_power, cfg.authors_bicubic_rgb_sum)
    return (total, terms, *priors_backward(saved, torch.ones_like(total)))


def g_step(tr: object, g_in: torch.Tensor, d_in: torch.Tensor, it: int
           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """G's update on crops g_in (B, 3, S, S): returns l_gan, l_g (B,) and the prior terms.
    With B = 1 and 2 threads, the D step's real crop d_in runs alongside."""
    single_threaded_blas()  # as the autograd nodes do: BLAS threads would change bits
    if tr._lean_jobs:
        settle(tr)
    k, keep = _kernel(tr, it)
    crops = _GCrops(g_in, k.shape[-1], tr.threads)
    tr._lean_crops = (it, crops)  # for the D step
    g_out = torch.from_numpy(crops.downscale(k.numpy()))
    params, sn, _ = _arrays(tr)
    state = open_pass((1, *g_out.shape), params, sn, tr.threads, copy=False)
    lam = torch.stack([tr.lam[n] for n in NAMES], 1)
    priors = None
    if _overlaps(tr):  # the priors, then the D step's real crop, on the other thread
        priors = submit(_priors, tr, k, g_in, g_out, lam)
        tr._lean_jobs.append(priors)
        _start_d_step(tr, d_in, params, sn)
    forward_tasks(state, g_out.numpy()[None], 0, tr.b, tr.threads)
    l_gan, ds = _gan(state, (1.0,), (1.0,))
    l_gan = l_gan[:, 0]
    # backward of l_g.sum() (l_g = l_gan + the priors' total): 1 into each
    dx, _ = fused_backward(state, ds, True, False)
    total, terms, dk_priors, dg_priors = (priors.result() if priors is not None
                                          else _priors(tr, k, g_in, g_out, lam))
    l_g = l_gan + total
    dg_out = dx[0] + dg_priors
    dk = torch.from_numpy(crops.kernel_grad(dg_out.numpy()))
    if dk.shape[0] == 1:  # as ops.downscale's backward treats a (1, K, K) kernel
        dk = dk.sum(0, keepdim=True)
    dk = dk.to(k.dtype) + dk_priors
    g_grad, _ = _grad_buffers(tr)
    _compose_backward(tr, keep, dk, g_grad)
    tr.opt_g.step(torch.from_numpy(g_grad), _split_threads(tr))
    return l_gan, l_g, dict(zip(NAMES, terms.unbind(1), strict=True))


def d_step(tr: object, g_in: torch.Tensor, d_in: torch.Tensor, it: int) -> torch.Tensor:
    """D's update on the real crops d_in and G's (updated) output of g_in plus noise; keeps
    the kernel composed here for the next G step. Returns l_d (B,)."""
    k, keep = _compose(tr)
    tr._lean_kernel = (it + 1, (k, keep))
    k = k.numpy()
    ready, crops = tr._lean_crops
    crops = crops if ready == it else _GCrops(g_in, k.shape[-1], tr.threads)
    tr._lean_crops = (-1, None)
    g_out = crops.downscale(k)
    g_out = torch.from_numpy(g_out + tr._g_noise(it).numpy().reshape(g_out.shape))
    pending, tr._lean_d = tr._lean_d, None
    if pending is None:
        params, sn, _ = _arrays(tr)
        _, state = fused_forward(torch.stack([d_in, g_out]), params, sn, tr.threads, True,
                                 copy=False)
        # d(½ (L_real + L_fake)).sum() / dL_real = ½ (exact), then as autograd's gan_loss
        loss, ds = _gan(state, (1.0, 0.0), (0.5, 0.5))
        fused_backward(state, ds, False, True, _grad_buffers(tr)[1])
    else:  # the real crop ran during the G step: the fake one here, then the two summed
        opened, real = pending
        state, x, loss, ds = opened.result()
        x[1] = g_out.numpy()
        forward_tasks(state, x, 1, 2)
        dt = ds.dtype
        _gan_terms(state.probs[:, 1:], np.zeros(1, dt), np.full(1, 0.5, dt), loss[:, 1:],
                   ds[:, 1:])
        # the fake crop's backward: the top layers' weight gradients on the other thread
        top = submit(backward_tasks, state, ds, 1, 2, False, True, _no_dx(dt), 1,
                     (SPLIT, state.n_layers))
        tr._lean_jobs.append(top)
        # then the other thread samples iteration it + 1's crops
        tr._prefetched = (it + 1, submit(tr.sample_detached, it + 1))
        backward_tasks(state, ds, 1, 2, False, True, _no_dx(dt), 1, (0, SPLIT))
        top.result()
        real.result()
        tr._lean_jobs = []
        close_pass(state, True, _grad_buffers(tr)[1])
        loss = torch.from_numpy(loss)
    tr.opt_d.step(torch.from_numpy(_grad_buffers(tr)[1]), _split_threads(tr))
    return 0.5 * (loss[:, 0] + loss[:, 1])


def uniform_grid(seeds: torch.Tensor, stream: int, start: int, count: int, n: int
                 ) -> torch.Tensor:
    """:func:`kgengine.ops._numba_cpu.uniform_grid` (the backend loads on first use)."""
    from kgengine.ops import _numba_cpu

    return _numba_cpu.uniform_grid(seeds, stream, start, count, n)
