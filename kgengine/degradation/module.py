"""On-the-fly degradation in training loops: the ``nn.Module`` :class:`Degrader` and the
``Dataset`` :class:`PairDataset`, both running :class:`~kgengine.degradation.pipeline.Pipeline`.

Same seed, same image key (the HR file name), same HR pixels -> same LR as the offline
``kgengine degrade`` with the same pool and pipeline: bit-exact on the CPU, also with JPEG
(the codec is Pillow in both, on the CPU) and with any batch composition (tested). On a GPU
the downscale and second-round blur run on the device (CuPy, Numba-CUDA or the PyTorch
reference) and their float32 sums may round differently from the CPU's Numba kernel (about
1e-7); after 8-bit rounding an LR pixel then differs by at most one level (1/255) without
JPEG, and, since JPEG quantises DCT blocks, a block touched by such a pixel can differ by
a few levels with JPEG. Noise is drawn by NumPy on the CPU and moved to the device; the
Poisson draw and the JPEG codec are CPU round trips (the whole LR image, per sample).

Example::

    degrader = Degrader("pool/kernel_pool.npz", load_config("degrade.toml"), seed=0).cuda()
    for hr, names in loader:                     # hr: (B,3,H,W) float32 in [0,1], H,W % s == 0
        lr = degrader(hr.cuda(), names)          # (B,3,H/s,W/s), on the 8-bit grid
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, get_worker_info

from kgengine.degradation.config import PipelineConfig
from kgengine.degradation.draws import Draws, stage_rng
from kgengine.degradation.noisebank import NoiseBank
from kgengine.degradation.pipeline import Pipeline
from kgengine.degradation.plan import crop_to_scale, list_hr_files
from kgengine.degradation.stages import from_u8, quantize_u8
from kgengine.errors import BadImageError, KGEngineError
from kgengine.imageio import read_image
from kgengine.pool import KernelPool


class Degrader(nn.Module):
    """``hr (B,C,H,W) -> lr (B,C,H/s,W/s)``: the pipeline on any device (module docstring).

    Args:
        pool: a :class:`KernelPool` or a pool path. config: the pipeline (default: the
            pool kernel and downscale only). seed: the job seed (as ``kgengine degrade
            --seed``). scale: must be the pool's (default). bank: real-noise patches
            (default: from ``config.real_noise``).
        quantize: return ``round(clip(lr)·255)/255`` (what the offline PNG holds; default),
            else the float LR before rounding (after JPEG it is on the 8-bit grid anyway).
        stream: prefix of the automatic image keys (see :meth:`forward`), e.g. the rank.
    Attributes:
        last_draws: the :class:`Draws` of the last batch (JSON-able with ``to_dict()``).
    """

    def __init__(self, pool: KernelPool | str | os.PathLike,
                 config: PipelineConfig | None = None, *, seed: int = 0,
                 scale: int | None = None, bank: NoiseBank | None = None,
                 quantize: bool = True, stream: str = "") -> None:
        super().__init__()
        self.pipeline = Pipeline(pool, config, scale=scale, bank=bank)
        self.seed, self.quantize, self.stream = int(seed), quantize, stream
        self.calls = 0
        self.last_draws: list[Draws] = []

    @property
    def scale(self) -> int:
        """The downscaling factor s."""
        return self.pipeline.scale

    def forward(self, hr: torch.Tensor, names: Sequence[str] | None = None) -> torch.Tensor:
        """Degrade a batch.

        Args:
            hr: (B, C, H, W) floating tensor in [0, 1] on any device, H and W multiples of
                s; C = 3 when the ``real`` or ``jpeg`` stage is on. Computed in float32.
            names: B image keys (HR file names: the same key gives the same degradation as
                ``kgengine degrade``); default ``f"{stream}#{call}:{i}"`` for call number
                ``call`` of this module (new draws at every call). In a ``DataLoader``
                worker (e.g. in ``collate_fn``) the default is
                ``f"{stream}#w{seed}.{call}:{i}"`` with the worker's seed (torch's, new
                each epoch): each worker starts with a copy of the module and its count,
                so before 0.9.27 the workers drew the same degradations, every epoch.
        Returns:
            (B, C, H/s, W/s) tensor, ``hr``'s dtype and device.
        """
        if names is None:
            worker = get_worker_info()
            call = self.calls if worker is None else f"w{worker.seed}.{self.calls}"
            names = [f"{self.stream}#{call}:{i}" for i in range(hr.shape[0])]
        self.calls += 1
        self.last_draws = [self.pipeline.draw(self.seed, str(n)) for n in names]
        lr = self.pipeline.apply(hr.to(torch.float32), self.last_draws)
        if self.quantize:
            lr = from_u8(quantize_u8(lr))
        return lr.to(hr.dtype)

    def extra_repr(self) -> str:
        stages = " -> ".join(("kernel", *self.pipeline.config.active()))
        return (f"scale={self.scale}, kernels={len(self.pipeline.pool)}, stages={stages}, "
                f"shuffle={self.pipeline.config.shuffle}, seed={self.seed}, "
                f"quantize={self.quantize}")


def _patch_side(patch: object, scale: int) -> int | None:
    """``patch`` as an int (any integer type, NumPy's too), a positive multiple of ``scale``,
    or None; else ``ValueError`` (a float such as 64.0 failed later in slicing)."""
    if patch is None:
        return None
    try:
        side = operator.index(patch)
    except TypeError:
        side = 0
    if isinstance(patch, bool) or side < 1 or side % scale:
        raise ValueError(f"patch: expected a positive multiple of {scale}, got {patch!r}")
    return side


def _check_names(files: list[Path]) -> None:
    """Refuse two files of one name: the name is the key of an image's draws."""
    seen: dict[str, Path] = {}
    for p in files:
        if p.name in seen:
            raise KGEngineError(f"{p}: same file name as {seen[p.name]} (a name is the key of "
                                "the degradation draws; give files with distinct names)")
        seen[p.name] = p


class PairDataset(Dataset):
    """LR/HR pairs made on the fly from HR files, for ``DataLoader`` workers (CPU).

    Item ``i``: ``{"hr": (3,H,W) float32, "lr": (3,H/s,W/s) float32 on the 8-bit grid,
    "key": str}``, HR cropped top-left to multiples of s. With ``epoch = 0`` (the default)
    and no ``patch``, the LR is exactly the PNG that ``kgengine degrade`` writes for the
    same seed, pool and pipeline (key = file name). :meth:`set_epoch` draws new
    degradations per epoch (key ``f"{name}@{epoch}"``). With ``patch`` (HR side, a multiple
    of s) an HR crop of ``patch × patch`` at a random position (multiples of s, drawn from
    the key) is degraded, so LR and HR stay aligned.

    The epoch lives in shared memory, so :meth:`set_epoch` reaches ``DataLoader`` workers
    that outlive an epoch (``persistent_workers=True``; before 0.9.27 they kept drawing
    epoch 0's degradations).

    Args:
        hr: a folder of HR images (its files) or a list of files, whose names must differ
            (a name is the key of the draws: two files of one name would get one draw).
        pool, config, seed, scale, bank: as :class:`Degrader`.
    """

    def __init__(self, hr: str | os.PathLike | Sequence[str | os.PathLike],
                 pool: KernelPool | str | os.PathLike, config: PipelineConfig | None = None,
                 *, seed: int = 0, scale: int | None = None, patch: int | None = None,
                 bank: NoiseBank | None = None) -> None:
        is_path = isinstance(hr, str | os.PathLike)  # a folder (a file or typo: refused)
        if is_path and Path(hr).is_file():
            raise KGEngineError(f"{hr}: is a file, not a folder (give a list for files)")
        self.files = list_hr_files(hr) if is_path else [Path(p) for p in hr]
        _check_names(self.files)
        self.pipeline = Pipeline(pool, config, scale=scale, bank=bank)
        self.seed, self.patch = int(seed), _patch_side(patch, self.pipeline.scale)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch whose draws items get (:meth:`set_epoch`)."""
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of ``epoch`` (0: those of the offline job), in every worker."""
        self._epoch[0] = int(epoch)

    def key(self, i: int) -> str:
        """The image key of item ``i`` in the current epoch."""
        name = self.files[i].name
        return name if self.epoch == 0 else f"{name}@{self.epoch}"

    def __len__(self) -> int:
        return len(self.files)

    def _crop(self, img: np.ndarray, key: str, path: Path) -> np.ndarray:
        crop = crop_to_scale(img, self.pipeline.scale)
        if self.patch is None:
            return crop
        s, p = self.pipeline.scale, self.patch
        h, w = crop.shape[:2]
        if min(h, w) < p:
            raise BadImageError(path, f"image is {w}x{h}, smaller than the patch {p}")
        rng = stage_rng(self.seed, key, "crop")
        y, x = (s * int(rng.integers(0, (n - p) // s + 1)) for n in (h, w))
        return crop[y : y + p, x : x + p]

    def __getitem__(self, i: int) -> dict[str, Any]:
        key = self.key(i)
        hr = self._crop(read_image(self.files[i]), key, self.files[i])
        hr_t = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))
        lr8 = self.pipeline.degrade8(hr_t[None], [self.pipeline.draw(self.seed, key)])
        return {"hr": hr_t, "lr": from_u8(lr8[0]), "key": key}
