"""The ``torch`` backend: plain PyTorch references of the ops, on any device and dtype.

The custom backends are tested against these, and use them for their backward pass and for
dtypes they do not compile (:data:`kgengine.ops._spec.FAST_DTYPES`).

Downscale (kgengine's convention, see :mod:`kgengine.kernel`), reflect border::

    y[b, c, i, j] = sum_{u,v} k[u, v] * x[b, c, R_H(s*i + u - kh//2), R_W(s*j + v - kw//2)]

with whole-sample reflection ``R_n`` (:func:`reflect_pad`); valid border: no padding,
``y[b, c, i, j] = sum_{u,v} k[u, v] * x[b, c, s*i + u, s*j + v]``.

Patch sampling: the spec in :mod:`kgengine.ops.patches`, vectorised over the batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from kgengine.ops._spec import PatchBatch, check_downscale, check_patches, reflect_index
from kgengine.ops.rng import STREAM_D_NOISE, STREAM_D_POS, STREAM_G_POS, normal, uniform


# ---------------------------------------------------------------------------- downscale
def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Whole-sample reflect padding of the last two dims, for any pad size. (..., H, W)."""
    h, w = x.shape[-2:]
    if top < h and bottom < h and left < w and right < w and x.dim() in (3, 4):
        return F.pad(x, (left, right, top, bottom), mode="reflect")
    ri = torch.from_numpy(reflect_index(h, top, bottom)).to(x.device)
    ci = torch.from_numpy(reflect_index(w, left, right)).to(x.device)
    return x.index_select(-2, ri).index_select(-1, ci)


def degrade_torch(hr: torch.Tensor, kernel: torch.Tensor, scale: int) -> torch.Tensor:
    """Strided correlation ``(hr ⋆ k)↓s`` with reflect borders, for any integer scale.

    ``LR[b, c, i, j] = sum_{u,v} k[b, u, v] * HR[b, c, R(s*i + u - kh//2), R(s*j + v - kw//2)]``.

    Args:
        hr: (B, C, H, W) float tensor.
        kernel: (h, w) or (1, h, w) shared by the batch, or (B, h, w) one kernel per image;
            cast to hr's dtype and device.
        scale: integer sub-sampling factor s >= 1.
    Returns:
        (B, C, ceil(H/s), ceil(W/s)) tensor, hr's dtype.
    """
    if hr.dim() != 4:
        raise ValueError(f"hr: expected (B,C,H,W), got shape {tuple(hr.shape)}")
    b, c, h, w = hr.shape
    kernel = kernel.to(dtype=hr.dtype, device=hr.device)
    if kernel.dim() == 2:
        kernel = kernel.expand(b, *kernel.shape)
    elif kernel.dim() == 3 and kernel.shape[0] == 1:  # shared, as ops.downscale takes it
        kernel = kernel.expand(b, *kernel.shape[1:])
    if kernel.dim() != 3 or kernel.shape[0] != b:
        raise ValueError(f"kernel: expected (h,w) or ({b},h,w), got shape {tuple(kernel.shape)}")
    kh, kw = kernel.shape[-2:]
    cy, cx = kh // 2, kw // 2
    # Pad so that output row i reads padded rows s*i .. s*i+kh-1; only the kept rows matter.
    out_h, out_w = -(-h // scale), -(-w // scale)
    bottom = max(0, (out_h - 1) * scale + kh - cy - h)
    right = max(0, (out_w - 1) * scale + kw - cx - w)
    xp = reflect_pad(hr, cy, bottom, cx, right)
    weight = kernel.repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, kh, kw)
    xp = xp.reshape(1, b * c, *xp.shape[-2:])
    with ieee_convolutions(xp.is_cuda):
        y = F.conv2d(xp, weight, stride=scale, groups=b * c)
    return y[..., :out_h, :out_w].reshape(b, c, out_h, out_w)


@contextlib.contextmanager
def ieee_convolutions(on_cuda: bool) -> Iterator[None]:
    """cuDNN convolutions in float32 arithmetic within the block, when ``on_cuda``.

    PyTorch's default lets cuDNN run float32 convolutions in TF32 on Ampere and newer GPUs
    (a 10-bit mantissa: about 1e-3 relative), so a degrade on such a GPU differed from the
    CPU's and from the ONNX degraders (whose CUDA provider sets ``use_tf32=0``) by that
    much (0.9.29's review). The setting is PyTorch's global one, restored on exit; on CPU
    nothing changes.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if not on_cuda:
        yield
    elif conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old_flag = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old_flag


def downscale(
    x: torch.Tensor, kernel: torch.Tensor, scale: int, border: str = "reflect"
) -> torch.Tensor:
    """Reference downscale: ``F.conv2d`` with stride (after :func:`reflect_pad` for reflect).

    Args:
        x: (B, C, H, W) float tensor (any strides, dtype, device).
        kernel: (kh, kw) or (B, kh, kw).
        scale: 1, 2, 3 or 4. border: "reflect" or "valid".
    Returns:
        (B, C, out_h, out_w), see :func:`kgengine.ops._spec.output_size`; differentiable.
    """
    k = check_downscale(x, kernel, scale, border)
    if border == "reflect":
        return degrade_torch(x, k.expand(x.shape[0], *k.shape[1:]), scale)
    # valid: one (1 x kh·kw) @ (kh·kw x C·L) product per image over unfolded columns, the
    # same arithmetic whatever B is (a grouped conv's algorithm depends on the group count)
    b, c, h, w = x.shape
    kh, kw = k.shape[-2:]
    oh, ow = (h - kh) // scale + 1, (w - kw) // scale + 1
    cols = F.unfold(x.reshape(b * c, 1, h, w), (kh, kw), stride=scale)  # (B·C, kh·kw, L)
    cols = cols.view(b, c, kh * kw, oh * ow).transpose(1, 2).reshape(b, kh * kw, c * oh * ow)
    y = torch.bmm(k.expand(b, kh, kw).reshape(b, 1, kh * kw), cols)  # (B, 1, C·L)
    return y.view(b, c, oh, ow)


# ------------------------------------------------------------------------ sample_patches
def _origin(
    cdf: torch.Tensor,
    sizes: torch.Tensor,
    seeds: torch.Tensor,
    kind: int,
    iteration: int,
    size: int,
    width: int,
) -> torch.Tensor:
    """(B, 2) int64 even top-left of the crops of ``kind`` (0 = G, 1 = D)."""
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


def _gather(images: torch.Tensor, tl: torch.Tensor, size: int) -> torch.Tensor:
    """``images[b, :, top:top+size, left:left+size]`` for each b: (B, C, size, size)."""
    b = images.shape[0]
    ar = torch.arange(size, device=images.device)
    bi = torch.arange(b, device=images.device)[:, None, None]
    rows = (tl[:, 0:1] + ar)[:, :, None]  # (B, size, 1)
    cols = (tl[:, 1:2] + ar)[:, None, :]  # (B, 1, size)
    return images[bi, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # (B,s,s,C)->(B,C,s,s)


def sample_patches_checked(
    images: torch.Tensor, cdf: torch.Tensor, sizes: torch.Tensor, seeds: torch.Tensor,
    iteration: int, g_size: int, d_size: int, noise_std: float,
) -> PatchBatch:  # fmt: skip
    """:func:`sample_patches` on arguments already validated by ``check_patches``."""
    b, c, _, w = images.shape
    g_tl = _origin(cdf, sizes, seeds, 0, iteration, g_size, w)
    d_tl = _origin(cdf, sizes, seeds, 1, iteration, d_size, w)
    g = _gather(images, g_tl, g_size)
    d = _gather(images, d_tl, d_size)
    idx = torch.arange(c * d_size * d_size, device=images.device).expand(b, -1)
    z = normal(seeds, STREAM_D_NOISE, iteration, idx).reshape(d.shape)  # (B, C, d, d) float64
    d = (d.to(torch.float64) + noise_std * z).to(images.dtype)
    return PatchBatch(g, d, g_tl, d_tl)


def sample_patches(
    images: torch.Tensor, cdf: torch.Tensor, sizes_hw: torch.Tensor, seeds: torch.Tensor,
    iteration: int, g_size: int, d_size: int, noise_std: float,
) -> PatchBatch:  # fmt: skip
    """Reference patch sampling (vectorised over the batch); arguments and result as in
    :func:`kgengine.ops.sample_patches`."""
    sizes, seeds = check_patches(images, cdf, sizes_hw, seeds, g_size, d_size)
    return sample_patches_checked(images, cdf, sizes, seeds, iteration, g_size, d_size, noise_std)
