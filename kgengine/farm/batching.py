"""Batch sizing: the default batch size, GPU memory probing, and the out-of-memory back-off.

When no batch size is given: :data:`CPU_BATCH` on CPU (throughput grows up to about B = 8 on
small CPUs and flattens after, see ``bench/bench_farm.py``), fewer where the host's available
memory would not hold that many of the largest image (:mod:`kgengine.host_memory`),
and on CUDA the largest B whose measured footprint fits 80 % of the GPU's total memory,
unless other processes leave too little of it free (:func:`batch_for_memory`). With
``restarts = K`` a batch of B images trains B·K models, so both defaults are divided by K
(at least 1). A batch that still runs out of GPU memory is queued again and the batch size
halved; an image that does not fit alone fails (:func:`back_off`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kgengine.errors import KGEngineError
from kgengine.farm.manifest import Row
from kgengine.farm.records import FarmJob
from kgengine.farm.settings import FarmSettings
from kgengine.host_memory import cpu_batch_for_memory
from kgengine.prepare import prepare_image
from kgengine.trainer import BatchTrainer

#: Batch size on CPU when not given (see the module docstring).
CPU_BATCH = 8
#: Upper bound of the automatic batch size on GPU.
MAX_AUTO_BATCH = 512


def largest_pixels(rows: Sequence[Row]) -> int:
    """The largest H·W among ``rows`` (0 for rows whose size is unknown, or no rows)."""
    return max(((r.width or 0) * (r.height or 0) for r in rows), default=0)


def default_batch(device: torch.device, settings: FarmSettings, rows: Sequence[Row]) -> int:
    """The batch size for training ``rows`` here: :func:`auto_batch` (CPU_BATCH if none)."""
    return auto_batch(device, settings, largest_pixels(rows)) if rows else CPU_BATCH


def auto_batch(device: torch.device, settings: FarmSettings, max_pixels: int = 0) -> int:
    """The batch size (images) when none is given: :data:`CPU_BATCH` on CPU; on CUDA the
    largest B with

    ``base + B · K · (per_image + max_pixels · bytes_per_pixel) <= 0.8 · memory``
    (:func:`batch_for_memory`: total memory, or free memory when the GPU is busy),

    ``per_image`` and ``base`` measured by training B = 1 and B = 3 small images for 3
    iterations (``torch.cuda.max_memory_allocated``), ``bytes_per_pixel`` = the image
    (3 channels of ``dtype``) plus its two float64 crop CDFs, since a batch holds its images
    zero-padded to the largest one (``max_pixels`` = the largest H·W expected); K =
    ``settings.restarts`` trainings per image. On CPU: ``CPU_BATCH // K``, at least 1, and
    at most what the host's available memory holds at ``max_pixels``
    (:func:`kgengine.host_memory.cpu_batch_for_memory`; the kernels are the same bytes at
    any CPU batch size).
    """
    k = max(1, settings.restarts)
    if device.type != "cuda":
        return cpu_batch_for_memory(max(1, CPU_BATCH // k), max_pixels, k)
    per_image, base = measure_gpu_footprint(device, settings)
    bytes_pp = 3 * torch.tensor([], dtype=settings.torch_dtype).element_size() + 2 * 8
    free, total = torch.cuda.mem_get_info(device)
    return batch_for_memory(total, free, base, k * (per_image + max_pixels * bytes_pp))


def batch_for_memory(total: float, free: float, base: float, per_item: float) -> int:
    """The automatic GPU batch size from memory sizes in bytes.

    ``B = (0.8 · total − base) // per_item`` (at most :data:`MAX_AUTO_BATCH`, at least 1):
    from the device's *total* memory, so one GPU model gives one batch size whatever else
    runs on it. On a GPU the kernels depend on the batch size (``bench/data/gpu_h200.md``),
    so this keeps a pool reproducible. Only when that batch would not fit in 90 % of the
    free memory (other processes hold the GPU) does it fall back to
    ``(0.8 · free − base) // per_item``.
    """
    want = max(1, min(MAX_AUTO_BATCH, int((0.8 * total - base) // per_item)))
    if base + want * per_item <= 0.9 * free:
        return want
    return max(1, min(MAX_AUTO_BATCH, int((0.8 * free - base) // per_item)))


def measure_gpu_footprint(device: torch.device, settings: FarmSettings) -> tuple[float, float]:
    """(bytes per image, fixed bytes) of training on ``device``, from B = 1 and B = 3 runs."""
    cfg = settings.config.replace(iters=3)
    side = cfg.crop_size + 2 * cfg.shave + 8
    img = np.random.default_rng(0).random((side, side, 3)).astype(np.float32)
    peaks = []
    for b in (1, 3):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        prep = [prepare_image(img, cfg)] * b
        trainer = BatchTrainer(prep, list(range(b)), cfg, device, settings.torch_dtype,
                               settings.mode)
        trainer.run(cfg.iters)
        peaks.append(torch.cuda.max_memory_allocated(device) - start)
        del trainer
    per_image = max((peaks[1] - peaks[0]) / 2, 1.0)
    return per_image, max(peaks[0] - per_image, 0.0)


def back_off(job: FarmJob, chunk: list[Row], batch: int, gpu: bool = True) -> int:
    """After ``chunk`` ran out of GPU memory (``gpu``) or host memory (a ``MemoryError``: a
    photo too large, or too many large ones in a batch) in a batch of ``batch``: the new
    batch size.

    Its rows still running go back to ``pending`` and the batch size is halved; at a batch of
    1 they are marked failed instead (an image that does not fit alone).
    """
    what = "GPU memory" if gpu else "memory"
    still = job.still_running(chunk)
    if gpu:
        torch.cuda.empty_cache()
    if batch == 1:
        for r in still:
            job.finish(r, KGEngineError(f"{r.path}: out of {what} even in a batch of 1"))
        return batch
    batch = max(1, batch // 2)
    job.man.requeue([r.id for r in still], f"out of {what}; retried in batches of {batch}")
    job.hooks.log(f"out of {what}: batch size lowered to {batch}")
    return batch
