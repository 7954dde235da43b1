"""Every random choice of the pipeline for one image, drawn from ``(seed, image name)``.

Each LR-side stage has its own NumPy Generator, seeded from a hash of the job seed, the
image key (its file name) and the stage name (:func:`stage_rng`)::

    rng_stage = np.random.default_rng(sha256("kgengine-pipeline:{seed}:{key}:{stage}")[:8])

so a stage's draws do not depend on which other stages are on, on the batch, the order
of the files, the device or the process. A stage draws, in this order: whether it applies
(``rng.random() < prob``), then its parameters, then (noise stages) the 63-bit seed of the
Generator that draws its noise samples, ``np.random.default_rng(sample_seed)``, once the LR
size is known. The pool kernel's row is :func:`kgengine.degradation.plan.kernel_row` (the
same row as ``kgengine degrade`` without a pipeline) and the shuffled order comes from the
Generator of the pseudo-stage ``"order"``. Global random state is never used.

:class:`Draws` is JSON-able (:meth:`Draws.to_dict`): the manifest records it, and
:func:`kgengine.degradation.pipeline.Pipeline.apply` rebuilds the LR from it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kgengine.degradation.config import PipelineConfig
from kgengine.degradation.plan import hash_int, kernel_row


def stage_rng(seed: int, key: str, stage: str) -> np.random.Generator:
    """The Generator of ``stage`` for image ``key`` (module docstring)."""
    return np.random.default_rng(hash_int("kgengine-pipeline", seed, key, stage))


@dataclass(frozen=True)
class Draws:
    """The random choices of one image.

    Attributes:
        key: the image key the draws come from (its HR file name).
        kernel_row: the pool row of the first kernel.
        order: the configured stages (probability > 0) in the order they run.
        stages: per stage of ``order``: its parameters (a JSON-able dict), or None when its
            probability draw left it out for this image.
    """

    key: str
    kernel_row: int
    order: tuple[str, ...]
    stages: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def applied(self) -> list[str]:
        """The stages that run on this image, in order."""
        return [s for s in self.order if self.stages.get(s) is not None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the manifest's ``draws``)."""
        return {"key": self.key, "kernel_row": self.kernel_row, "order": list(self.order),
                "stages": self.stages}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Draws:
        """The inverse of :meth:`to_dict`."""
        return cls(data["key"], int(data["kernel_row"]), tuple(data["order"]),
                   dict(data["stages"]))


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**63 - 1))


def _second(cfg: PipelineConfig, rng: np.random.Generator, n_kernels: int) -> dict[str, Any]:
    out: dict[str, Any] = {"kernel": cfg.second_kernel}
    if cfg.second_kernel == "pool":
        out["row"] = int(rng.integers(0, n_kernels))
    else:
        sy, sx = rng.uniform(*cfg.second_sigma, size=2)
        out.update(size=cfg.second_size, sigma=[float(sy), float(sx)],
                   theta=float(rng.uniform(0.0, math.pi)))
    out["resize"] = float(rng.uniform(*cfg.second_resize))
    out["mode"] = cfg.resize_modes[int(rng.integers(0, len(cfg.resize_modes)))]
    return out


def _gaussian(cfg: PipelineConfig, rng: np.random.Generator) -> dict[str, Any]:
    sigma = float(rng.uniform(*cfg.gaussian_sigma))
    return {"sigma": sigma, "gray": bool(rng.random() < cfg.gray_prob), "seed": _seed(rng)}


def _poisson(cfg: PipelineConfig, rng: np.random.Generator) -> dict[str, Any]:
    lo, hi = np.log(cfg.poisson_peak)
    peak = float(np.exp(rng.uniform(lo, hi)))
    return {"peak": peak, "gray": bool(rng.random() < cfg.gray_prob), "seed": _seed(rng)}


def _real(cfg: PipelineConfig, rng: np.random.Generator, bank: tuple[int, int]
          ) -> dict[str, Any]:
    n_patches, size = bank
    return {"patch": int(rng.integers(0, n_patches)),
            "offset": [int(v) for v in rng.integers(0, size, size=2)],
            "scale": float(rng.uniform(*cfg.real_scale))}


def _jpeg(cfg: PipelineConfig, rng: np.random.Generator) -> dict[str, Any]:
    lo, hi = cfg.jpeg_quality
    return {"quality": int(rng.integers(lo, hi + 1))}


def draw(
    cfg: PipelineConfig, seed: int, key: str, n_kernels: int,
    bank: tuple[int, int] | None = None,
) -> Draws:
    """All random choices for image ``key`` (module docstring).

    Args:
        cfg: the pipeline. seed: the job seed. key: the image's file name.
        n_kernels: pool size N. bank: ``(number of noise patches, patch size)``, needed
            when the ``real`` stage is on.
    """
    order = cfg.active()
    if cfg.shuffle and len(order) > 1:
        perm = stage_rng(seed, key, "order").permutation(len(order))
        order = tuple(order[i] for i in perm)
    stages: dict[str, dict[str, Any] | None] = {}
    for stage in order:
        rng = stage_rng(seed, key, stage)
        if not rng.random() < getattr(cfg, f"{stage}_prob"):
            stages[stage] = None
        elif stage == "second":
            stages[stage] = _second(cfg, rng, n_kernels)
        elif stage == "real":
            if bank is None:
                raise ValueError("draw: the real stage needs bank=(n_patches, patch_size)")
            stages[stage] = _real(cfg, rng, bank)
        else:
            stages[stage] = {"gaussian": _gaussian, "poisson": _poisson, "jpeg": _jpeg}[stage](
                cfg, rng)
    return Draws(key, kernel_row(seed, key, n_kernels), order, stages)
