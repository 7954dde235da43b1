"""An image made ready for training: shaved, even-sized, in [-1, 1], with its crop maps; and B
such images packed into one zero-padded batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kgengine.config import KernelGANConfig
from kgengine.errors import BadImageError
from kgengine.probmap import crop_probability_maps


@dataclass
class PreparedImage:
    """An image ready for training: shaved, even-sized, in [-1, 1], with its crop CDFs."""

    pixels: np.ndarray  # (h, w, 3) float32 in [-1, 1]
    g_map: np.ndarray  # (h, w) float64, sums to 1
    d_map: np.ndarray  # (h, w) float64, sums to 1


def min_image_side(cfg: KernelGANConfig) -> int:
    """The smallest image side that trains: ``crop_size`` rounded up to even, since the image
    is trimmed to even sides (an odd crop of 27 on a 27 px image left 26, and the crop
    sampler raised a traceback, 0.9.29)."""
    return cfg.crop_size + cfg.crop_size % 2


def prepare_image(img: np.ndarray, cfg: KernelGANConfig, name: str = "<array>") -> PreparedImage:
    """Shave ``cfg.shave`` px (less if the image is small), trim to even, map to [-1, 1].

    Args:
        img: (H, W, 3) float in [0, 1].
    Raises:
        BadImageError: if the image is smaller than :func:`min_image_side` on a side.
    """
    h, w = img.shape[:2]
    need = min_image_side(cfg)
    if min(h, w) < need:
        raise BadImageError(name, f"image is {w}x{h}, too small: needs {need} px a side")
    shave = min(cfg.shave, (min(h, w) - need) // 2)
    img = img[shave : h - shave, shave : w - shave]
    h, w = img.shape[0] - img.shape[0] % 2, img.shape[1] - img.shape[1] % 2
    img = np.ascontiguousarray(img[:h, :w], dtype=np.float64)
    g_map, d_map = crop_probability_maps(
        img, cfg.crop_size, cfg.g_output_size, cfg.grad_window, cfg.grad_percent,
        cfg.grad_clip_magnitude,
    )
    return PreparedImage((img * 2.0 - 1.0).astype(np.float32), g_map, d_map)


def pack_images(images: list[PreparedImage]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad B images into one batch and their crop maps into cumulative sums.

    Returns:
        pixels (B, 3, Hmax, Wmax) float32 and CDFs (B, 2, Hmax·Wmax) float64 (G's map, then
        D's, row-major, zero outside each image).
    """
    hmax = max(im.pixels.shape[0] for im in images)
    wmax = max(im.pixels.shape[1] for im in images)
    pix = np.zeros((len(images), 3, hmax, wmax), np.float32)
    cdf = np.zeros((len(images), 2, hmax * wmax), np.float64)
    for i, im in enumerate(images):
        h, w = im.pixels.shape[:2]
        pix[i, :, :h, :w] = im.pixels.transpose(2, 0, 1)
        for t, m in enumerate((im.g_map, im.d_map)):
            padded = np.zeros((hmax, wmax))
            padded[:h, :w] = m
            cdf[i, t] = np.cumsum(padded.ravel())
    return pix, cdf


def write_crops(images: torch.Tensor, crops: torch.Tensor, topleft: torch.Tensor,
                host: bool | None = None) -> None:
    """Write crops (B, C, s, s) back into images (B, C, H, W) at ``topleft`` (B, 2), in place
    (the authors' defect 2: D's noisy crops stay in the image). ``host`` (default: on CPU)
    a slice copy per image, else all B at once (one indexed copy, no host sync). The same
    values land either way."""
    s = crops.shape[-1]
    with torch.no_grad():
        if images.device.type == "cpu" if host is None else host:
            pix, values = images.numpy(), crops.numpy()
            for b, (r, c) in enumerate(topleft.numpy().tolist()):
                pix[b, :, r : r + s, c : c + s] = values[b]
            return
        ar = torch.arange(s, device=topleft.device)
        rows = (topleft[:, 0:1] + ar).unsqueeze(2)  # (B, s, 1)
        cols = (topleft[:, 1:2] + ar).unsqueeze(1)  # (B, 1, s)
        b = torch.arange(crops.shape[0], device=topleft.device).view(-1, 1, 1)
        images.permute(0, 2, 3, 1)[b, rows, cols] = crops.permute(0, 2, 3, 1)
