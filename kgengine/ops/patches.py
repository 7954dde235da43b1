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

Backends (:mod:`kgengine.ops.backend`): ``torch`` = :func:`sample_patches_ref`; ``numba``
(CPU), ``numba_cuda`` and ``cupy`` (``kernels/patches.cu``, one block per (chunk, kind,
image), thread 0 does the binary search). On CUDA the tensors are handed over zero-copy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kgengine.ops.backend import resolve
from kgengine.ops.rng import STREAM_D_NOISE, STREAM_D_POS, STREAM_G_POS, normal, uniform

FAST_DTYPES = (torch.float32, torch.float64)


class PatchBatch(NamedTuple):
    """Crops of one iteration.

    g_crops: (B, C, g_size, g_size), d_crops: (B, C, d_size, d_size), contiguous, images'
    dtype; g_topleft, d_topleft: (B, 2) int64 ``(top, left)`` of each crop.
    """

    g_crops: torch.Tensor
    d_crops: torch.Tensor
    g_topleft: torch.Tensor
    d_topleft: torch.Tensor


def _check(
    images: torch.Tensor,
    cdf: torch.Tensor,
    sizes_hw: torch.Tensor,
    seeds: torch.Tensor,
    g_size: int,
    d_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the arguments; return ``(sizes_hw, seeds)`` as int64 on the images' device.

    Reads ``sizes_hw`` on the host (a tiny device-to-host copy if it lives on a GPU).
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a (B,C,H,W) tensor, got {got}")
    if not images.is_floating_point():
        raise ValueError(f"images: expected a floating-point tensor, got {images.dtype}")
    b, _, h, w = images.shape
    if tuple(cdf.shape) != (b, 2, h * w):
        raise ValueError(f"cdf: expected shape ({b}, 2, {h * w}), got {tuple(cdf.shape)}")
    if cdf.dtype != torch.float64:
        raise ValueError(f"cdf: expected float64, got {cdf.dtype}")
    if tuple(sizes_hw.shape) != (b, 2):
        raise ValueError(f"sizes_hw: expected shape ({b}, 2), got {tuple(sizes_hw.shape)}")
    if tuple(seeds.shape) != (b,):
        raise ValueError(f"seeds: expected shape ({b},), got {tuple(seeds.shape)}")
    if min(g_size, d_size) < 1:
        raise ValueError(f"crop sizes must be >= 1, got g_size={g_size}, d_size={d_size}")
    need = max(g_size, d_size)
    for i, (hb, wb) in enumerate(sizes_hw.detach().cpu().tolist()):
        if hb > h or wb > w:
            raise ValueError(f"image {i}: size {hb}x{wb} exceeds the padded batch {h}x{w}")
        if hb < need or wb < need:
            raise ValueError(
                f"image {i} is {hb}x{wb} pixels, smaller than the {need}x{need} crop; "
                "use a larger image or a smaller crop size"
            )
    dev = images.device
    return sizes_hw.to(dev, torch.int64), seeds.to(dev, torch.int64)


def _origin_ref(
    cdf: torch.Tensor,
    sizes: torch.Tensor,
    seeds: torch.Tensor,
    kind: int,
    iteration: int,
    size: int,
    width: int,
) -> torch.Tensor:
    """(B, 2) int64 even top-left of the crops of ``kind`` (module docstring)."""
    stream = STREAM_G_POS if kind == 0 else STREAM_D_POS
    zero = torch.zeros_like(seeds)
    u = uniform(seeds, stream, iteration, zero)  # (B,) float64
    c = cdf[:, kind].contiguous()  # (B, n)
    target = u * c[:, -1]
    flat = torch.searchsorted(c, target.unsqueeze(1), right=True).squeeze(1)
    flat = flat.clamp_(max=c.shape[1] - 1)
    rc = torch.stack((flat // width, flat % width), dim=1)  # (B, 2)
    tl = torch.minimum((rc - size // 2).clamp_(min=0), sizes - size)
    return tl - tl % 2


def _gather_ref(images: torch.Tensor, tl: torch.Tensor, size: int) -> torch.Tensor:
    """``images[b, :, top:top+size, left:left+size]`` for each b: (B, C, size, size)."""
    b = images.shape[0]
    ar = torch.arange(size, device=images.device)
    bi = torch.arange(b, device=images.device)[:, None, None]
    rows = (tl[:, 0:1] + ar)[:, :, None]  # (B, size, 1)
    cols = (tl[:, 1:2] + ar)[:, None, :]  # (B, 1, size)
    return images[bi, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # (B,s,s,C)->(B,C,s,s)


def sample_patches_ref(
    images: torch.Tensor,
    cdf: torch.Tensor,
    sizes_hw: torch.Tensor,
    seeds: torch.Tensor,
    iteration: int,
    g_size: int,
    d_size: int,
    noise_std: float,
) -> PatchBatch:
    """Plain PyTorch reference of :func:`sample_patches` (vectorised over the batch)."""
    sizes, seeds = _check(images, cdf, sizes_hw, seeds, g_size, d_size)
    return _ref_impl(images, cdf, sizes, seeds, iteration, g_size, d_size, noise_std)


def _ref_impl(
    images: torch.Tensor,
    cdf: torch.Tensor,
    sizes: torch.Tensor,
    seeds: torch.Tensor,
    iteration: int,
    g_size: int,
    d_size: int,
    noise_std: float,
) -> PatchBatch:
    b, c, _, w = images.shape
    g_tl = _origin_ref(cdf, sizes, seeds, 0, iteration, g_size, w)
    d_tl = _origin_ref(cdf, sizes, seeds, 1, iteration, d_size, w)
    g = _gather_ref(images, g_tl, g_size)
    d = _gather_ref(images, d_tl, d_size)
    idx = torch.arange(c * d_size * d_size, device=images.device).expand(b, -1)
    z = normal(seeds, STREAM_D_NOISE, iteration, idx).reshape(d.shape)
    d = (d.to(torch.float64) + noise_std * z).to(images.dtype)
    return PatchBatch(g, d, g_tl, d_tl)


def sample_patches(
    images: torch.Tensor,
    cdf: torch.Tensor,
    sizes_hw: torch.Tensor,
    seeds: torch.Tensor,
    iteration: int,
    g_size: int,
    d_size: int,
    noise_std: float,
    backend: str | None = None,
) -> PatchBatch:
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
    sizes, seeds = _check(images, cdf, sizes_hw, seeds, g_size, d_size)
    name = resolve("sample_patches", images.device, backend)
    if name == "torch" or images.dtype not in FAST_DTYPES:
        return _ref_impl(images, cdf, sizes, seeds, iteration, g_size, d_size, noise_std)
    args = (
        images.detach(),
        cdf.detach(),
        sizes,
        seeds,
        int(iteration),
        int(g_size),
        int(d_size),
        float(noise_std),
    )
    if name == "numba":
        from kgengine.ops import _numba_cpu as impl
    elif name == "numba_cuda":
        from kgengine.ops import _numba_cuda as impl
    elif name == "cupy":
        from kgengine.ops import _cupy as impl
    else:
        raise ValueError(f"backend: no sample_patches implementation named {name!r}")
    return PatchBatch(*impl.sample_patches(*args))
