"""The pipeline's stages on float32 torch tensors ``(B, C, h, w)`` in [0, 1], any device.

Each stage is one function of the image batch and the stage's per-image parameters (the
:class:`~kgengine.degradation.draws.Draws` of each image). Noise samples are drawn on the CPU
by NumPy from each image's ``sample_seed`` and then moved to the tensor's device, so a stage
gives the same values on every device and for every batch composition; elementwise
arithmetic is done by torch in float32.

=============  ===========================================================================
stage          what it computes (per image; ``clip`` = clamp to [0, 1])
=============  ===========================================================================
kernel         ``LR[c,i,j] = Σ_{u,v} k[u,v] · HR[c, R(s·i+u−K//2), R(s·j+v−K//2)]``
               (:func:`kernel_downscale`; kgengine's convention, = ``kgengine.degrade``)
second          ``y = (x ⋆ k2)`` (stride 1, same convention), then
               ``resize(resize(y, round(r·h), round(r·w)), h, w)`` with one
               ``F.interpolate`` mode (:func:`blur_resize`)
gaussian       ``clip(x + σ·n)``, ``n ~ N(0,1)`` float32 of shape (C,h,w), or (1,h,w)
               for gray noise (:func:`gaussian_noise`)
poisson        ``clip(Poisson(peak·clip(x)) / peak)``; gray: ``clip(x + (Poisson(peak·Y)
               − peak·Y)/peak)`` with ``Y = 0.299R + 0.587G + 0.114B`` (:func:`poisson_noise`)
real           ``clip(x + a·N[:, (i+oy) mod P, (j+ox) mod P])`` for a real-noise patch N
               (:func:`real_noise`)
jpeg           ``decode(encode(q8(x), quality)) / 255`` with Pillow (libjpeg), on the CPU
               (:func:`jpeg`)
=============  ===========================================================================

``q8(x) = round(clip(x)·255)`` as uint8 (:func:`quantize_u8`, round half to even, as
:func:`kgengine.imageio.to_uint8`); ``x8 / 255`` in float32 (:func:`from_u8`) equals what
:func:`kgengine.imageio.read_image` returns for that 8-bit PNG.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from kgengine.kernel import anisotropic_gaussian

#: ``down(x, kernel, scale, border)``: a resolved :func:`kgengine.ops.downscale` backend.
Downscale = Callable[[torch.Tensor, torch.Tensor, int, str], torch.Tensor]
LUMA = (0.299, 0.587, 0.114)


def quantize_u8(x: torch.Tensor) -> torch.Tensor:
    """``round(clip(x, 0, 1) · 255)`` as uint8, same shape and device."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def from_u8(x8: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 ``x8 / 255``."""
    return x8.to(torch.float32) / 255.0


def kernel_downscale(hr: torch.Tensor, kernels: torch.Tensor, scale: int, down: Downscale
                     ) -> torch.Tensor:
    """The first stage: ``(B,C,H,W), (B,K,K) -> (B,C,ceil(H/s),ceil(W/s))`` (table above)."""
    return down(hr, kernels, scale, "reflect")


def second_kernel(params: dict[str, Any], pool_kernels: np.ndarray) -> np.ndarray:
    """The second kernel of one image: pool row ``params["row"]``, or the anisotropic
    Gaussian ``Σ = R(θ) diag(σ0², σ1²) R(θ)ᵀ`` of size ``params["size"]`` (float32)."""
    if params["kernel"] == "pool":
        return pool_kernels[params["row"]].astype(np.float32)
    s0, s1 = params["sigma"]
    return anisotropic_gaussian(params["size"], s0**2, s1**2, params["theta"]).astype(np.float32)


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    corners = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(x, size=size, mode=mode, align_corners=corners)


def resize_back(x: torch.Tensor, r: float, mode: str) -> torch.Tensor:
    """``(1,C,h,w)``: resize to ``(max(1, round(r·h)), max(1, round(r·w)))`` and back to
    ``(h, w)`` with ``F.interpolate(mode)`` (``align_corners=False``; unchanged if r ≈ 1)."""
    h, w = x.shape[-2:]
    size = (max(1, round(r * h)), max(1, round(r * w)))
    if size == (h, w):
        return x
    return _interpolate(_interpolate(x, size, mode), (h, w), mode)


def blur_resize(x: torch.Tensor, kernels: torch.Tensor, params: list[dict[str, Any]],
                down: Downscale) -> torch.Tensor:
    """The second round on ``(B,C,h,w)`` with ``(B,k,k)`` kernels; shape kept."""
    y = down(x, kernels, 1, "reflect")
    return torch.cat([resize_back(y[i : i + 1], p["resize"], p["mode"])
                      for i, p in enumerate(params)])


def unit_normal(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """``np.random.default_rng(seed).standard_normal(shape, dtype=float32)``."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def gaussian_noise(x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """``(1,C,h,w) -> clip(x + σ·n)`` (table above); ``params``: sigma, gray, seed."""
    _, c, h, w = x.shape
    n = unit_normal(params["seed"], (1 if params["gray"] else c, h, w))
    return (x + params["sigma"] * torch.from_numpy(n).to(x.device)).clamp(0.0, 1.0)


def luma(x: torch.Tensor) -> torch.Tensor:
    """``(B,3,h,w) -> (B,1,h,w)``: ``0.299 R + 0.587 G + 0.114 B``."""
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


def poisson_noise(x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """``(1,C,h,w)``: shot noise with ``peak`` photons at white (table above).

    The counts are drawn by ``np.random.default_rng(seed).poisson(λ)`` with
    ``λ = peak·signal`` (float64 of the float32 product), so E[y] = signal and
    Var[y] = signal / peak.
    """
    peak = params["peak"]
    xc = x.clamp(0.0, 1.0)
    signal = luma(xc) if params["gray"] else xc
    lam = (signal * peak).cpu().double().numpy()
    counts = np.random.default_rng(params["seed"]).poisson(lam).astype(np.float32)
    shot = torch.from_numpy(counts).to(x.device) / peak
    out = xc + (shot - signal) if params["gray"] else shot
    return out.clamp(0.0, 1.0)


def tiled_patch(patch: torch.Tensor, h: int, w: int, offset: tuple[int, int]) -> torch.Tensor:
    """``(C,P,P) -> (C,h,w)``: ``out[:, i, j] = patch[:, (i+oy) mod P, (j+ox) mod P]``."""
    size = patch.shape[-1]
    rows = (torch.arange(h, device=patch.device) + offset[0]) % size
    cols = (torch.arange(w, device=patch.device) + offset[1]) % size
    return patch[:, rows][:, :, cols]


def real_noise(x: torch.Tensor, patch: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """``(1,3,h,w)``, a ``(3,P,P)`` patch: ``clip(x + a·tiled patch)`` (table above)."""
    if x.shape[1] != patch.shape[0]:
        raise ValueError(f"real noise: expected {patch.shape[0]} channels, got {x.shape[1]}")
    noise = tiled_patch(patch, x.shape[2], x.shape[3], tuple(params["offset"]))
    return (x + params["scale"] * noise).clamp(0.0, 1.0)


def jpeg_encode(img8: np.ndarray, quality: int) -> bytes:
    """The bytes of ``Image.fromarray(img8).save(buf, format="JPEG", quality=quality)``.

    Args:
        img8: (h, w, 3) or (h, w) uint8.
    """
    buf = io.BytesIO()
    Image.fromarray(img8).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_decode(data: bytes, channels: int) -> np.ndarray:
    """JPEG bytes -> (h, w, channels) uint8 (Pillow)."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.array(im.convert("RGB" if channels == 3 else "L"))  # writable copy
    return arr if arr.ndim == 3 else arr[..., None]


def jpeg(x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """``(1,C,h,w)``, C in {1, 3}: 8-bit JPEG round trip at ``params["quality"]`` on the CPU
    (Pillow), result back on x's device (table above)."""
    c = x.shape[1]
    if c not in (1, 3):
        raise ValueError(f"jpeg: expected 1 or 3 channels, got {c}")
    img8 = quantize_u8(x[0]).permute(1, 2, 0).cpu().numpy()
    data = jpeg_encode(img8 if c == 3 else img8[..., 0], params["quality"])
    dec = torch.from_numpy(jpeg_decode(data, c)).permute(2, 0, 1)[None]
    return from_u8(dec.to(x.device))
