"""Fused patch sampling: draw G's and D's crop positions from probability maps and gather the
crops (D's with noise) for a padded batch of images, in one pass.

For image ``b`` and crop kind ``t`` (0 = G: stream ``STREAM_G_POS``, size ``g_size``;
1 = D: stream ``STREAM_D_POS``, size ``d_size``), with ``n = H*W`` and ``size`` the kind's::

    u     = uniform(seed_b, stream_t, iteration, 0)                     (kgengine.ops.rng)
    flat  = min{f : cdf[b, t, f] > u * cdf[b, t, n-1]}                   (searchsorted right)
    row, col = divmod(flat, W)
    top   = min(max(0, row - size//2), h_b - size);  top  -= top % 2    (even alignment)
    left  = min(max(0, col - size//2), w_b - size);  left -= left % 2
    crop  = images[b, :, top:top+size, left:left+size]

so the crop centre follows the (unnormalised) map whose cumulative sums are ``cdf[b, t]``.
D's crop gets noise, computed in float64 and rounded once to the image dtype::

    d[b, c, y, x] = crop[c, y, x] + noise_std * normal(seed_b, STREAM_D_NOISE, iteration,
                                                        (c*d_size + y)*d_size + x)

Backends (:mod:`kgengine.ops.backend`), each a module with a ``sample_patches`` of this op's
signature: ``torch`` = :func:`sample_patches_ref` (:mod:`kgengine.ops._torch`); ``numba``
(CPU), ``numba_cuda`` and ``cupy`` (``kernels/patches.cu``, one block per (chunk, kind,
image), thread 0 does the binary search). On CUDA the tensors are handed over zero-copy.
A training loop resolves the backend once: ``fn = resolve("sample_patches", device)``,
then calls ``fn(images, cdf, sizes_hw, seeds, iteration, g_size, d_size, noise_std)``.
"""

from __future__ import annotations

import torch

from kgengine.ops._spec import FAST_DTYPES, PatchBatch, device_of
from kgengine.ops._torch import sample_patches as sample_patches_ref
from kgengine.ops.backend import resolve

__all__ = ["FAST_DTYPES", "PatchBatch", "sample_patches", "sample_patches_ref"]


def sample_patches(
    images: torch.Tensor, cdf: torch.Tensor, sizes_hw: torch.Tensor, seeds: torch.Tensor,
    iteration: int, g_size: int, d_size: int, noise_std: float, backend: str | None = None,
) -> PatchBatch:  # fmt: skip
    """Draw and gather G's and D's crops for every image of a padded batch (module docstring).

    Args:
        images: (B, C, H, W) float32/float64, any strides; image b occupies [:h_b, :w_b].
        cdf: (B, 2, H*W) float64 cumulative sums of the crop-centre maps (row 0: G's crop,
            row 1: D's), zero mass outside the image, so ``cdf[b, t, -1] > 0``.
        sizes_hw: (B, 2) int64 ``(h_b, w_b)``, each >= max(g_size, d_size).
        seeds: (B,) int64 per-image seeds. iteration: the counter of the random streams.
        g_size, d_size: crop sizes. noise_std: std of D's additive Gaussian noise.
        backend: None (automatic), "torch", "numba", "numba_cuda" or "cupy".
    Returns:
        :class:`PatchBatch`; identical positions in every backend, crops equal to rounding.
    Raises:
        ValueError: bad shapes, or an image smaller than a crop.
    """
    fn = resolve("sample_patches", device_of("images", images), backend)
    return fn(images, cdf, sizes_hw, seeds, iteration, g_size, d_size, noise_std)
