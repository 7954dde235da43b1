"""The batched KernelGAN trainer: B images, B generators, B discriminators, one loop.

Every per-image quantity is batched along a leading axis: G and D weights, Adam state
(Adam is element-wise, so one optimiser over batched tensors equals B optimisers), loss
weights, schedule flags, the random stream (counter-based, keyed by the image's seed) and
D's normalisation statistics (per crop). A batch of B therefore gives the same kernels as
B single runs with the same seeds, up to floating-point rounding.

One iteration (authors' order): sample the G crop (64x64) and the D crop (26x26, noisy);
G step on ``L_G = |D(G(x)) - 1| + λ_bic·L_bic + ½L_sum + ½L_bnd + λ_c·L_c + λ_s·L_sp``;
D step on ``½(|D(real) - 1| + |D(G(x) + n)|)`` with the updated G; schedule update.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch

from kgengine import batch_rows, graph_step, lean_step, priors
from kgengine import discriminator as D
from kgengine import generator as G
from kgengine.adam import FlatAdam
from kgengine.compiled import compiled_on, compose_for, discriminator_for, priors_for
from kgengine.config import KernelGANConfig
from kgengine.flatbuf import flat_grad, flatten
from kgengine.host_threads import torch_single_threaded, torch_threads
from kgengine.ops._spec import PatchBatch
from kgengine.ops.backend import resolve, serial_ops
from kgengine.ops.rng import STREAM_G_NOISE, box_muller, normal
from kgengine.prepare import PreparedImage, pack_images, write_crops
from kgengine.stopping import StopRule, StopTracker

MODES = ("composed", "layers")


class BatchTrainer:
    """Trains KernelGAN on B prepared images at once.

    Args:
        images: B prepared images (sizes may differ: they are zero-padded into one batch
            and crops are drawn only inside each image).
        seeds: B integer seeds (initialisation and the random stream).
        cfg: the configuration (shared by the batch).
        device, dtype: where and in which precision to train.
        mode: "composed" (train through the composed kernel) or "layers" (the authors'
            layer-by-layer forward; same maths, ~20x slower).
        threads: host threads of the compiled CPU passes (default: torch's thread count).
    """

    def __init__(
        self,
        images: list[PreparedImage],
        seeds: list[int],
        cfg: KernelGANConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        mode: str = "composed",
        threads: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if len(images) != len(seeds) or not images:
            raise ValueError("need one seed per image and at least one image")
        self.cfg, self.mode, self.dtype = cfg, mode, dtype
        self.device = torch.device(device)
        # resolved once, not per step: the fastest backend of each op on this device
        self._sample_patches = resolve("sample_patches", self.device)
        self._downscale = resolve("downscale", self.device)
        # with the compiled networks (CPU), D's (image, crop) tasks get the threads and PyTorch
        # runs on one during :meth:`run`: its OpenMP workers, spinning between the small
        # operations, took the cores from the tasks (2 cores, B = 4: 25 vs 18.5 ms/iteration)
        self.threads = threads or torch_threads()
        self.compiled = compiled_on(self.device)
        self._d_forward = discriminator_for(self.device, self.threads)
        self._compose = compose_for(self.device)
        self._add_priors = priors_for(self.device)
        # kgengine.graph_step: the step with no host value (capturable as a CUDA graph)
        graph = graph_step.mode_for(self.device) if mode == "composed" else "off"
        self._init_lean(mode if graph == "off" else "static")
        self.b = b = len(images)
        dev = {"device": self.device, "dtype": dtype}
        pix, cdf = pack_images(images)
        self.images = torch.from_numpy(pix).to(**dev)
        self.cdf = torch.from_numpy(cdf).to(self.device)
        self.sizes = torch.tensor([im.pixels.shape[:2] for im in images], device=self.device)
        self.seeds = torch.tensor(seeds, dtype=torch.int64, device=self.device)

        # --- parameters: per image, from its own generator, stacked into flat buffers ---
        g_w, d_p = [], []
        for s in seeds:
            gen = torch.Generator().manual_seed(int(s))
            g_w.append(G.init_weights(cfg.g_kernel_sizes, cfg.g_channels, cfg.g_init_gain, gen))
            d_p.append(D.init_params(cfg.d_channels, cfg.d_kernel_size, cfg.d_layers,
                                     cfg.d_init_gain, cfg.authors_d_init_ignored, gen))
        g_stacked = [torch.stack([w[i] for w in g_w]) for i in range(len(g_w[0]))]
        d_stacked = {key: torch.stack([p[key] for p in d_p]) for key in d_p[0]}
        # one flat buffer per network (for a few-op Adam); the autograd leaves are views of it
        self.g_flat, self.g_weights = flatten(g_stacked, dev)
        self.d_flat, self._d_leaves = flatten([d_stacked[k] for k in D.TRAINABLE], dev)
        self.d_state = {k: v.to(**dev) for k, v in d_stacked.items() if k not in D.TRAINABLE}
        adam = {"betas": (cfg.beta1, cfg.beta2), "compiled": self.compiled and graph == "off",
                "on_device": graph != "off"}
        self.opt_g = FlatAdam(self.g_flat, cfg.lr_g, **adam)
        self.opt_d = FlatAdam(self.d_flat, cfg.lr_d, **adam)
        self._static = graph_step.StaticStep(self, graph == "capture") if graph != "off" else None
        self._init_schedule(b, dev)
        self.mask = priors.boundary_mask_tensor(cfg.kernel_size, cfg.boundary_penalty,
                                                self.images, cfg.boundary_sigma)
        self.centre = priors.centre_target(cfg.kernel_size, 2)
        self._noise_chunk: tuple[int, torch.Tensor] = (-1, torch.empty(0))
        # iteration i's D-step kernel is iteration i+1's G-step kernel: (i + 1, k with its graph)
        self._next_kernel: tuple[int, torch.Tensor | None] = (-1, None)
        self._host = self.device.type == "cpu"  # flags read on the host cost no sync here
        self.last: dict[str, torch.Tensor] = {}
        self.iteration = 0
        # images stopped by a stop rule: b -> (iteration, raw kernel, G weights, losses, finite);
        # b counts the images as given, and ``rows`` says which of them the batch still trains
        self._frozen: dict[int, tuple[int, np.ndarray, list[torch.Tensor], dict, bool]] = {}
        self.n_images = b
        self.rows = np.arange(b)

    def _init_lean(self, mode: str) -> None:
        """Whether the step runs the compiled passes without autograd (kgengine.lean_step:
        same bytes, less overhead), and that module's state (it documents each field)."""
        self._lean = (mode == "composed" and self.compiled
                      and self._downscale.__module__ == "kgengine.ops._numba_cpu"
                      and self._add_priors.__module__ == "kgengine.priors_numba")
        self._reset_lean()

    def _reset_lean(self) -> None:
        """The lean step's caches, empty (made for a batch on first use)."""
        self._lean_kernel: tuple[int, tuple | None] = (-1, None)
        self._lean_arrays: tuple[list, list] | None = None
        self._lean_grads: tuple | None = None
        self._lean_crops: tuple = (-1, None)
        self._lean_d: tuple | None = None
        self._lean_jobs: list = []
        self._prefetched: tuple | None = None

    def _init_schedule(self, b: int, dev: dict) -> None:
        """Per-image loss weights and schedule state (see :meth:`_update_schedule`)."""
        cfg = self.cfg
        self.priors = priors.PRIORS
        self.lam = {p.name: torch.full((b,), priors.initial_weight(p, cfg), **dev)
                    for p in self.priors}
        self._fading = [p.name for p in self.priors if p.phase == "fading"]
        self._late = [p for p in self.priors if p.phase == "late"]
        self.bic_counter = torch.zeros(b, dtype=torch.int64, device=self.device)
        self.similar = torch.zeros(b, dtype=torch.bool, device=self.device)
        self.insert_constraints = torch.ones(b, dtype=torch.bool, device=self.device)
        self.finite = torch.ones(b, dtype=torch.bool, device=self.device)
        self._all_similar = False

    # ------------------------------------------------------------------ helpers
    @property
    def d_params(self) -> dict[str, torch.Tensor]:
        """D's parameters (views into the flat buffer) and spectral-norm state."""
        return dict(zip(D.TRAINABLE, self._d_leaves, strict=True)) | self.d_state

    def kernel(self) -> torch.Tensor:
        """The current composed kernels, (B, K, K), differentiable w.r.t. G's weights."""
        return self._compose(self.g_weights)

    def _g_forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.mode == "layers":
            return G.forward_layers(x, self.g_weights)
        return self._downscale(x, k, 2, "valid")  # = G.forward_composed, by the fastest backend

    # ------------------------------------------------------------------ one step
    def step(self) -> None:
        """One KernelGAN iteration for all B images."""
        cfg, it = self.cfg, self.iteration
        ready, self._prefetched = self._prefetched, None
        pb = ready[1].result() if ready is not None and ready[0] == it else self._sample(it)
        if cfg.authors_noise_accumulates:  # defect 2: the noise stays in the image
            write_crops(self.images, pb.d_crops, pb.d_topleft)
        g_in, d_in = pb.g_crops, pb.d_crops
        if self._lean:
            with torch.no_grad():
                l_gan, l_g, terms = lean_step.g_step(self, g_in, d_in, it)
                l_d = lean_step.d_step(self, g_in, d_in, it)
        elif self._static is not None:
            l_gan, l_g, terms, l_d = self._static(pb, self._g_noise(it))
        else:
            ready, k = self._next_kernel
            l_gan, l_g, terms = self._g_step(g_in, k if ready == it else self.kernel())
            l_d, k = self._d_step(g_in, d_in, self._g_noise(it))
            self._next_kernel = (it + 1, k)

        with torch.no_grad():
            self.finite &= torch.isfinite(l_g) & torch.isfinite(l_d)
            self.last = {"g_gan": l_gan, "d": l_d, **terms, "g_total": l_g}
            self._update_schedule(it, terms)
        self.iteration += 1

    def _sample(self, it: int) -> PatchBatch:
        """Iteration ``it``'s crops of every image (and D's crop noise)."""
        cfg = self.cfg
        return self._sample_patches(self.images, self.cdf, self.sizes, self.seeds, it,
                                    cfg.crop_size, cfg.g_output_size, 2.0 * cfg.noise_std)

    def sample_detached(self, it: int) -> PatchBatch:
        """:meth:`_sample` on the lean step's other thread, during iteration it - 1's D step
        (the images do not change from then until iteration it would sample them)."""
        with serial_ops():
            return self._sample(it)

    def _g_step(self, g_in: torch.Tensor, k: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """G's update through autograd from G's kernel ``k`` (B, K, K) with its graph (see
        :mod:`kgengine.lean_step` for the same without): returns l_gan, l_g (B,), the terms."""
        cfg = self.cfg
        g_out = self._g_forward(g_in, k)
        d_params = self.d_params
        # D's parameters are constants of the G step (a custom autograd node would otherwise
        # compute their gradients too: it cannot see which inputs ``autograd.grad`` asks for)
        d_const = {k: v.detach() for k, v in d_params.items()}
        d_fake = self._d_forward(g_out.unsqueeze(0), d_const)[0]
        l_gan = priors.gan_loss(d_fake, real=True)
        inputs = priors.PriorInputs(k, g_in, g_out, self.mask, self.centre, cfg)
        l_g, terms = self._add_priors(l_gan, inputs, self.lam)
        self.opt_g.step(flat_grad(l_g.sum(), self.g_weights))
        return l_gan, l_g, terms

    def _d_step(self, g_in: torch.Tensor, d_in: torch.Tensor, noise: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """D's update with the updated G (its output plus ``noise`` (B, 3·S²) a constant
        here); returns l_d (B,) and G's kernel with its graph (the next G step's)."""
        k = self.kernel()
        with torch.no_grad():
            g_out2 = self._g_forward(g_in, k.detach())
            g_out2 = g_out2 + noise.reshape(g_out2.shape)
        d_maps = self._d_forward(torch.stack([d_in, g_out2]), self.d_params)
        l_d = 0.5 * (priors.gan_loss(d_maps[0], real=True) + priors.gan_loss(d_maps[1], real=False))
        self.opt_d.step(flat_grad(l_d.sum(), self._d_leaves))
        return l_d, k

    def _g_noise(self, it: int, chunk: int = 100) -> torch.Tensor:
        """Noise added to G's output before D: (B, 3·S²), drawn ``chunk`` iterations at a time.

        ``noise_std · normal(seed_b, STREAM_G_NOISE, it, index)``: counter-based, so it does not
        depend on batching, and drawing it in chunks costs a few ops per 100 iterations.
        """
        start, block = self._noise_chunk
        if start < 0 or not start <= it < start + chunk:
            start = it - it % chunk
            n = 3 * self.cfg.g_output_size**2
            if self._lean:  # the hashes compiled (exact integers), the rest as normal() does
                u = lean_step.uniform_grid(self.seeds, STREAM_G_NOISE, start, chunk, 2 * n)
                z = box_muller(u[..., 0::2].contiguous(), u[..., 1::2].contiguous())
            else:
                ctr = torch.arange(start, start + chunk, device=self.device).view(1, chunk, 1)
                idx = torch.arange(n, device=self.device).view(1, 1, n)
                z = normal(self.seeds.view(-1, 1, 1), STREAM_G_NOISE, ctr, idx)
            block = (self.cfg.noise_std * z).to(self.dtype)
            self._noise_chunk = (start, block)
        return block[:, it - start]

    def _update_schedule(self, it: int, terms: dict[str, torch.Tensor]) -> None:
        """The authors' ``Learner.update``, per image, without host synchronisation.

        The fading prior (bicubic) drives it: once its loss stayed below the threshold for 3
        iterations, its weight is divided by ``bic_decay_rate`` every ``bic_decay_every``;
        when it first falls below ``bic_constraints_below`` the ``late`` priors switch on.
        """
        cfg = self.cfg
        if it == 0:
            return
        if it % cfg.lr_decay_every == 0:
            self.opt_g.lr /= cfg.lr_decay_factor
            self.opt_d.lr /= cfg.lr_decay_factor
        (fading,) = self._fading
        # once every image is similar, the counter is frozen (checked on the host only)
        becomes = None if self._all_similar else self._count_similar(terms[fading])
        if it % cfg.bic_decay_every == 0:
            lam = self.lam[fading]
            decay = self.similar & (lam > cfg.bic_min)
            # in place: a captured step (kgengine.graph_step) reads these tensors
            lam.copy_(torch.where(decay, torch.clamp(lam / cfg.bic_decay_rate, min=cfg.bic_min),
                                  lam))
            insert = decay & self.insert_constraints & (lam < cfg.bic_constraints_below)
            for p in self._late:
                self.lam[p.name].masked_fill_(insert, getattr(cfg, p.weight))
            self.insert_constraints &= ~insert
        if becomes is not None:
            self.similar = self.similar | becomes
            self._all_similar = self._host and bool(self.similar.all())

    def _count_similar(self, l_bic: torch.Tensor) -> torch.Tensor:
        """Updates the counters from the fading-prior loss ``l_bic`` (B,); returns which images
        become ``similar`` now: below the threshold for 3 iterations in a row (the counter
        restarts when it is not)."""
        below = l_bic < self.cfg.bic_loss_threshold
        not_sim = ~self.similar
        becomes = not_sim & below & (self.bic_counter >= 2)
        self.bic_counter = torch.where(not_sim & below & ~becomes, self.bic_counter + 1,
                                       torch.where(not_sim & ~below, 0, self.bic_counter))
        return becomes

    # ------------------------------------------------------------------ loop
    def run(self, iters: int, callback: Callable[[int], None] | None = None,
            every: int = 50, stop: StopRule | None = None) -> float:
        """Run ``iters`` iterations; ``callback(done)`` every ``every``. Returns wall seconds.

        With a ``stop`` rule, an image whose kernel stopped changing keeps its kernel, G and
        losses of that moment (:attr:`iters_used`) and leaves the batch
        (:func:`kgengine.batch_rows.drop`); the loop ends when every image stopped.
        """
        t0 = time.perf_counter()
        tracker = StopTracker(stop, self.b) if stop is not None else None
        # D's tasks take the threads: PyTorch and the ops on this one
        single = torch_single_threaded() if self.compiled else contextlib.nullcontext()
        try:
            with single, serial_ops() if self.compiled else contextlib.nullcontext():
                self._loop(iters, callback, every, stop, tracker)
        finally:
            lean_step.settle(self)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def _loop(self, iters: int, callback: Callable[[int], None] | None, every: int,
              stop: StopRule | None, tracker: StopTracker | None) -> None:
        """:meth:`run`'s iterations (see there)."""
        for i in range(iters):
            self.step()
            if callback is not None and ((i + 1) % every == 0 or i + 1 == iters):
                callback(i + 1)
            if tracker is not None and (i + 1) % stop.every == 0:
                kernels = self._current_kernels()
                now = tracker.check(self.iteration, kernels, self.rows)
                self._freeze(now, kernels)
                if (tracker.stopped_at > 0).all():
                    break
                if now.any():
                    batch_rows.drop(self, now[self.rows])

    @property
    def graph_status(self) -> str:
        """The step's CUDA graph (:mod:`kgengine.graph_step`): off, captured, or why not."""
        st = self._static
        return "off" if st is None else "captured" if st.graph is not None else st.reason

    @property
    def iters_used(self) -> list[int]:
        """Per image: the iteration its result comes from (stopped early, or the last)."""
        return self._per_image([self.iteration] * self.b, 0)

    def _current_kernels(self) -> np.ndarray:
        """The composed kernels of the images still in the batch (:attr:`rows`), (B, K, K)."""
        with torch.no_grad():
            return G.compose_kernel([w.detach().double() for w in self.g_weights]).cpu().numpy()

    def _freeze(self, now: np.ndarray, kernels: np.ndarray) -> None:
        """Keep the kernel, G weights, losses and finite flag of the images in ``now``
        (n_images,) bool, from ``kernels`` (B, K, K) of the batch's :attr:`rows`."""
        at = np.flatnonzero(now[self.rows])
        if not at.size:
            return
        losses, finite = self._losses(), self.finite.cpu().numpy()
        for r in at:
            weights = [w[r].detach().clone() for w in self.g_weights]
            self._frozen[int(self.rows[r])] = (self.iteration, kernels[r], weights, losses[r],
                                               bool(finite[r]))

    def _per_image(self, current: list, field: int) -> list:
        """Per image as given: ``current[r]`` for the image in batch row r, else the item
        ``field`` of its record in ``_frozen``."""
        at = {int(b): r for r, b in enumerate(self.rows)}
        return [self._frozen[b][field] if b in self._frozen else current[at[b]]
                for b in range(self.n_images)]

    def final_kernels(self) -> np.ndarray:
        """The raw composed kernels of the final G (after its last update, or of the moment
        an image stopped), (n_images, K, K) float64."""
        return np.stack(self._per_image(list(self._current_kernels()), 1))

    def final_weights(self) -> list[list[torch.Tensor]]:
        """Per image, G's weights (out, in, k, k) of its result (see :meth:`final_kernels`)."""
        return self._per_image([[w[r].detach() for w in self.g_weights] for r in range(self.b)],
                               2)

    def final_losses(self) -> list[dict[str, float]]:
        """The loss terms of each image's last (or stopping) iteration, one dict per image."""
        return self._per_image(self._losses(), 3)

    def final_finite(self) -> np.ndarray:
        """Per image (n_images,) bool: its losses stayed finite up to its result."""
        return np.array(self._per_image([bool(f) for f in self.finite.cpu().numpy()], 4))

    def _losses(self) -> list[dict[str, float]]:
        """The last iteration's losses of the batch's rows, one dict per row."""
        vals = {k: v.detach().double().cpu().numpy() for k, v in self.last.items()}
        return [{k: float(v[i]) for k, v in vals.items()} for i in range(self.b)]
