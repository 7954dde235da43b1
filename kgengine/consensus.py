"""Combining K restarts of one image into one kernel, and how much they agree.

KernelGAN is chaotic: seeds of the same image give different kernels, some of them poor.
``--restarts K`` trains K seeds of an image (one batch) and combines them here, by a rule that
needs no ground truth:

1. every kernel is normalised to sum 1, zero-padded to a common canvas and centred (centre of
   mass on the canvas centre: a kernel's translation is not identifiable from one image);
2. ``d_ij = ‖k_i − k_j‖₂``; the medoid ``m = argmin_i Σ_j d_ij``;
3. inliers: ``d_mj ≤ max(2·median_{j≠m} d_mj, floor)``; a kernel far from the medoid (a failed
   restart) is rejected;
4. the combined kernel is the mean of the inliers (``rule="mean"``), or the medoid itself
   (``rule="medoid"``), renormalised and centred;
5. ``confidence = mean_i cos(k_i, k̂)`` over *all* restarts, ``cos(a, b) = ⟨a,b⟩/(‖a‖‖b‖)``,
   in [0, 1] for non-negative kernels: 1 when every restart found the same kernel, lower
   when they disagree or some failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kgengine.errors import BadKernelError
from kgengine.kernel import center_kernel, check_kernel, common_size, pad_to

#: Inlier radius floor (L2 distance of sum-1 kernels): identical-looking restarts are kept.
MIN_RADIUS = 1e-3
RULES = ("mean", "medoid")


@dataclass(frozen=True)
class Consensus:
    """The combined kernel of K restarts.

    Attributes:
        kernel: (S, S) float64, sums to 1, centred; S = the restarts' common size.
        confidence: mean cosine similarity of the restarts to ``kernel``, in [0, 1].
        medoid: index of the medoid restart.
        inliers: indices of the restarts averaged into ``kernel``.
        distances: (K, K) pairwise L2 distances of the centred restarts.
    """

    kernel: np.ndarray
    confidence: float
    medoid: int
    inliers: tuple[int, ...]
    distances: np.ndarray


def centred_stack(kernels: list[np.ndarray]) -> np.ndarray:
    """(K, S, S): each kernel checked, its negative entries clipped (a kernel's centre of
    mass is taken on its positive mass; the estimator's cleaned kernels have none),
    renormalised, padded to the common size and centred.

    Raises:
        BadKernelError: a kernel with NaN/inf, a sum that is not positive, or no positive
            entries.
    """
    size = common_size(*kernels)
    out = []
    for i, k in enumerate(kernels):
        k = check_kernel(k, f"restart {i}")
        if k.min() < 0.0:
            k = np.clip(k, 0.0, None)
            if not k.sum() > 0:
                raise BadKernelError(f"restart {i}: the kernel has no positive entries")
            k = k / k.sum()
        out.append(center_kernel(pad_to(k, size)))
    return np.stack(out)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """``⟨a, b⟩ / (‖a‖·‖b‖)`` of two same-shape arrays (0 if either is all zero)."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.sum(a * b) / (na * nb)) if na > 0 and nb > 0 else 0.0


def combine(kernels: list[np.ndarray], rule: str = "mean") -> Consensus:
    """Combine K ≥ 1 kernels of one image by the rule in the module docstring.

    Args:
        kernels: K kernels (h, w), any sizes, positive sums.
        rule: ``mean`` (robust mean of the inliers) or ``medoid``.
    Returns:
        :class:`Consensus`. K = 1 gives that kernel (centred) with confidence 1.
    """
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    if not kernels:
        raise ValueError("combine: no kernels")
    ks = centred_stack(kernels)
    flat = ks.reshape(len(ks), -1)
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    medoid = int(np.argmin(dist.sum(axis=1)))
    others = np.delete(dist[medoid], medoid)
    radius = max(2.0 * float(np.median(others)), MIN_RADIUS) if others.size else MIN_RADIUS
    inliers = tuple(int(i) for i in np.flatnonzero(dist[medoid] <= radius))
    if rule == "medoid":
        k = ks[medoid]
    else:
        k = ks[list(inliers)].mean(axis=0)  # centred: the centre of mass is linear
        k = k / k.sum()
    confidence = min(1.0, float(np.mean([cosine(ki, k) for ki in ks])))  # 1 + 2e-16 seen
    return Consensus(k, confidence, medoid, inliers, dist)
