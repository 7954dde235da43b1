"""Training one batch of farm images, shared by the local and the Ray runner.

A batch's images are read first (a bad one is set aside with its reason, the batch goes on
without it), then trained together in one batched model with the job settings and each
row's derived seed (:func:`kgengine.api.estimate_kernels`, divergences returned per image).
With ``restarts = K`` every image is trained K times in the same batch (B images: B·K
trainings) and its kernel is the restarts' consensus, with their agreement as confidence.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from kgengine.api import READ_BYTES, EstimateResult, estimate_kernels
from kgengine.errors import BadImageError, TrainingDivergedError
from kgengine.farm.manifest import Row
from kgengine.farm.seeds import derive_seed
from kgengine.farm.settings import FarmSettings
from kgengine.host_threads import map_images
from kgengine.imageio import read_image


def attempt_seed(settings: FarmSettings, row: Row) -> int:
    """The seed of the row's next training: attempt = the number of divergences so far."""
    assert row.sha256 is not None
    return derive_seed(settings.seed, row.sha256, row.diverged)


def read_images(paths: Sequence[str | os.PathLike], min_size: int,
                ) -> tuple[list[np.ndarray], list[int], dict[int, BadImageError]]:
    """Read the images of a batch.

    Args:
        paths: image files. min_size: smallest side accepted (the config's crop size).
    Returns:
        (images read as (H, W, 3) float32 arrays, their indices in ``paths``, the error of
        each image that could not be used, by index).
    """
    def read(path: str | os.PathLike) -> np.ndarray | BadImageError:
        try:
            return read_image(path, min_size=min_size)
        except BadImageError as exc:
            return exc

    got = map_images(read, list(paths), bytes_each=READ_BYTES)  # on the host's threads
    ok = [i for i, g in enumerate(got) if not isinstance(g, BadImageError)]
    bad = {i: g for i, g in enumerate(got) if isinstance(g, BadImageError)}
    return [got[i] for i in ok], ok, bad


def train_batch(images: Sequence[np.ndarray], seeds: Sequence[int], names: Sequence[str],
                settings: FarmSettings, device: str,
                callback: Callable[[int], None] | None = None,
                ) -> list[EstimateResult | TrainingDivergedError]:
    """Train ``images`` in one batched model with the job ``settings``.

    Args:
        images: (H, W, 3) float arrays in [0, 1]. seeds, names: one per image.
        settings: the job settings (x4, dtype, mode, restarts, stop, config). device: torch
            device.
        callback: iterations done, every 50 iterations.
    Returns:
        per image, its :class:`EstimateResult` or its :class:`TrainingDivergedError`.
    Raises:
        BadImageError: an image refused by :func:`kgengine.prepare.prepare_image` (the
            error's ``path`` is the image's name).
        torch.cuda.OutOfMemoryError: the batch does not fit the GPU.
    """
    return estimate_kernels(
        images, seeds=seeds, names=names, x4=settings.x4, device=device,
        config=settings.config, dtype=settings.torch_dtype, mode=settings.mode,
        callback=callback, on_diverge="return", restarts=settings.restarts,
        stop=settings.stop)
