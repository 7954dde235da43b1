"""The degradation pipeline: pool kernel -> strided downscale -> LR-side stages -> 8 bits.

:class:`Pipeline` holds a kernel pool, a :class:`~kgengine.degradation.config.PipelineConfig`
and (for the ``real`` stage) a noise bank. For an HR batch ``(B, C, H, W)`` and the
:class:`~kgengine.degradation.draws.Draws` of each image it computes::

    x = (HR_b ⋆ k_b)↓s                     # kgengine's convention, ops.downscale backend
    for stage in draws_b.order:             # e.g. second, gaussian, poisson, real, jpeg
        x = stage(x, draws_b.stages[stage])  # skipped where the draw left it out
    LR8 = round(clip(x, 0, 1) · 255)        # what the PNG holds

(:mod:`kgengine.degradation.stages` has each stage's equation). The same code serves the
offline job (``kgengine degrade --pipeline``, one image at a time on the CPU) and the
training-time :class:`~kgengine.degradation.module.Degrader` (batches on any device): every
stage computes each image independently, so on the same device a batch gives bit-identical
images to single runs (tested), and noise is drawn by NumPy on the CPU from per-image seeds.

Device notes: the downscale op runs on the tensor's device (Numba on CPU, CuPy/Numba-CUDA or
the PyTorch reference on CUDA; its float32 sums can round differently across devices); the
Poisson draw and the JPEG codec (Pillow) run on the CPU, the tensors making a round trip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kgengine.degradation import stages as st
from kgengine.degradation.config import PipelineConfig
from kgengine.degradation.draws import Draws, draw
from kgengine.degradation.noisebank import NoiseBank, load_noise_bank
from kgengine.errors import KGEngineError
from kgengine.imageio import read_image
from kgengine.ops.backend import backend_name, resolve
from kgengine.pool import KernelPool, load_pool


class Pipeline:
    """A configured degradation pipeline (module docstring).

    Args:
        pool: the kernels (:class:`KernelPool`, or a path for :func:`kgengine.pool.load_pool`).
        config: the stages; default: kernel and downscale only.
        scale: the downscaling factor; default (and only allowed value): the pool's.
        bank: the real-noise patches; default: read from ``config.real_noise`` when the
            ``real`` stage is on.
    Raises:
        KGEngineError: a pool for another scale, an empty pool, an unreadable noise bank.
    """

    def __init__(self, pool: KernelPool | str | os.PathLike,
                 config: PipelineConfig | None = None, *, scale: int | None = None,
                 bank: NoiseBank | None = None) -> None:
        self.pool = pool if isinstance(pool, KernelPool) else load_pool(pool, scale)
        self.config = config or PipelineConfig()
        self.scale = self.pool.scale if scale is None else int(scale)
        if self.scale != self.pool.scale:
            raise KGEngineError(
                f"the kernel pool is for x{self.pool.scale}, but scale {self.scale} was asked")
        if len(self.pool) == 0:
            raise KGEngineError("the kernel pool is empty")
        if bank is None and self.config.real_prob > 0:
            bank = load_noise_bank(self.config.real_noise)
            self.config = self.config.replace(real_noise=bank.path)  # absolute .npy
        self.bank = bank
        self._tensors: dict[str, dict[str, torch.Tensor]] = {}

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: no device tensors
        return {**self.__dict__, "_tensors": {}}

    def describe(self, device: torch.device | str = "cpu") -> str:
        """One line: device, downscale backend and stages, e.g.
        ``"pipeline on cpu (downscale: numba): kernel x2 -> gaussian -> jpeg"``."""
        steps = " -> ".join((f"kernel x{self.scale}", *self.config.active()))
        shuffled = " (shuffled per image)" if self.config.shuffle else ""
        dev = torch.device(device)
        return (f"pipeline on {dev.type} (downscale: {backend_name('downscale', dev)}): "
                f"{steps}{shuffled}")

    def settings(self) -> dict[str, Any]:
        """The job settings it adds (``degrade_settings.json``, every manifest entry):
        ``pipeline`` (the config) and ``real_noise_fingerprint`` (None without patches)."""
        fingerprint = self.bank.fingerprint() if self.bank is not None else None
        return {"pipeline": self.config.to_dict(), "real_noise_fingerprint": fingerprint}

    def draw(self, seed: int, key: str) -> Draws:
        """The random choices for image ``key`` (:func:`kgengine.degradation.draws.draw`)."""
        bank = (len(self.bank), self.bank.size) if self.bank is not None else None
        return draw(self.config, seed, key, len(self.pool), bank)

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The pool kernels (N,K,K) and noise patches (N,3,P,P) as float32 on ``device``."""
        key = str(device)
        if key not in self._tensors:
            t = {"kernels": torch.from_numpy(self.pool.kernels.astype(np.float32)).to(device)}
            if self.bank is not None:
                t["patches"] = torch.from_numpy(self.bank.patches).permute(0, 3, 1, 2).to(device)
            self._tensors[key] = t
        return self._tensors[key]

    def _down(self, device: torch.device) -> st.Downscale:
        """The downscale op on ``device`` (safe from several threads: the CPU kernels let one
        thread at a time into Numba's thread pool, :mod:`kgengine.ops._numba_cpu`)."""
        return resolve("downscale", device)

    def check_input(self, hr: torch.Tensor, draws: Sequence[Draws]) -> None:
        """Raise ``ValueError`` unless ``hr`` is float32 (B,C,H,W), H and W multiples of s,
        with one Draws per image and 3 channels where ``real`` or ``jpeg`` may run."""
        if hr.dim() != 4 or hr.dtype != torch.float32:
            raise ValueError(f"hr: expected float32 (B,C,H,W), got {hr.dtype} {tuple(hr.shape)}")
        b, c, h, w = hr.shape
        if h % self.scale or w % self.scale:
            raise ValueError(f"hr: expected H and W multiples of {self.scale}, got {h}x{w}")
        if len(draws) != b:
            raise ValueError(f"draws: expected {b} (one per image), got {len(draws)}")
        if c != 3 and {"real", "jpeg"} & set(self.config.active()):
            raise ValueError(f"hr: the real and jpeg stages need 3 channels, got {c}")

    @torch.no_grad()
    def apply(self, hr: torch.Tensor, draws: Sequence[Draws]) -> torch.Tensor:
        """``(B,C,H,W)`` float32 HR -> ``(B,C,H/s,W/s)`` float32 LR before 8-bit rounding.

        Image b gets ``draws[b]``; every stage runs on the device of ``hr`` (module doc).
        """
        self.check_input(hr, draws)
        dev, down = hr.device, self._down(hr.device)
        t = self._on(dev)
        rows = torch.tensor([d.kernel_row for d in draws], dtype=torch.long, device=dev)
        x = st.kernel_downscale(hr, t["kernels"][rows], self.scale, down)
        for pos in range(max((len(d.order) for d in draws), default=0)):
            for stage in self.config.order:
                idx = [i for i, d in enumerate(draws) if len(d.order) > pos
                       and d.order[pos] == stage and d.stages.get(stage) is not None]
                if idx:
                    params = [draws[i].stages[stage] for i in idx]
                    x[idx] = self._stage(stage, x[idx], params, down, t)
        return x

    def _stage(self, stage: str, x: torch.Tensor, params: list[dict[str, Any]],
               down: st.Downscale, t: dict[str, torch.Tensor]) -> torch.Tensor:
        """One LR-side stage on the images ``x`` (B',C,h,w) with their parameters."""
        if stage == "second":
            ks = np.stack([st.second_kernel(p, self.pool.kernels) for p in params])
            return st.blur_resize(x, torch.from_numpy(ks).to(x.device), params, down)
        one = {"gaussian": st.gaussian_noise, "poisson": st.poisson_noise, "jpeg": st.jpeg}
        out = []
        for i, p in enumerate(params):
            xi = x[i : i + 1]
            if stage == "real":
                out.append(st.real_noise(xi, t["patches"][p["patch"]], p))
            else:
                out.append(one[stage](xi, p))
        return torch.cat(out)

    def degrade8(self, hr: torch.Tensor, draws: Sequence[Draws]) -> torch.Tensor:
        """:meth:`apply` then :func:`~kgengine.degradation.stages.quantize_u8`: uint8 LR."""
        return st.quantize_u8(self.apply(hr, draws))

    def degrade_image(self, hr: np.ndarray, seed: int, key: str) -> tuple[np.ndarray, Draws]:
        """One HR image ``(H, W, 3)`` float32 (sides multiples of s) on the CPU ->
        ``(H/s, W/s, 3)`` uint8 LR and its draws (what ``kgengine degrade`` writes)."""
        draws = self.draw(seed, key)
        chw = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))[None]
        lr8 = self.degrade8(chw, [draws])[0].permute(1, 2, 0).numpy()
        return lr8, draws


def rebuild_pair(entry: dict[str, Any], pool: KernelPool, bank: NoiseBank | None = None
                 ) -> np.ndarray:
    """The 8-bit LR ``(h, w, 3)`` of a pipeline manifest entry, rebuilt from its recorded
    config and draws on the CPU: equal to the written PNG (tested).

    Raises:
        KGEngineError: the entry has no pipeline, or the noise patches have changed.
    """
    if not entry.get("pipeline"):
        raise KGEngineError(f"{entry.get('name')}: not made by the pipeline; use rebuild_lr")
    cfg = PipelineConfig.from_dict(entry["pipeline"])
    pipe = Pipeline(pool, cfg, scale=entry["scale"], bank=bank)
    want = entry.get("real_noise_fingerprint")
    if want and pipe.bank is not None and pipe.bank.fingerprint() != want:
        raise KGEngineError(f"{pipe.bank.path}: not the noise patches this pair was made with")
    img = read_image(entry["hr_source"])
    h, w = entry["crop"]
    hr = torch.from_numpy(np.ascontiguousarray(img[:h, :w].transpose(2, 0, 1)))[None]
    lr8 = pipe.degrade8(hr, [Draws.from_dict(entry["draws"])])
    return lr8[0].permute(1, 2, 0).numpy()
