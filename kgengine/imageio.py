"""Reading and writing images, with one-line errors that name the file and the problem.

``read_image`` returns float32 RGB ``(H, W, 3)`` in ``[0, 1]``:
- 8-bit RGB/L/P/LA/RGBA and 16-bit images are accepted: grayscale is replicated to 3
  channels, palette images are expanded, alpha is dropped (KernelGAN sees only colour),
  16-bit values are divided by 65535;
- ``.npy`` files holding ``(H, W)``/``(H, W, C)`` floats in [0, 1] are accepted too;
- unreadable, truncated, non-image, NaN/inf, too small and huge inputs raise
  :class:`~kgengine.errors.BadImageError`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from kgengine.atomic import atomic_write
from kgengine.errors import BadImageError

#: Largest accepted image, in pixels (about 16k x 12k); larger ones are refused.
MAX_PIXELS = 200_000_000


def read_image(path: str | os.PathLike, min_size: int = 0) -> np.ndarray:
    """Read an image as float32 RGB ``(H, W, 3)`` in ``[0, 1]``.

    Args:
        path: a PNG/JPEG/TIFF/BMP/... file readable by Pillow, or a ``.npy`` array.
        min_size: refuse images whose shorter side is below this (pixels).
    Raises:
        BadImageError: with a one-line ``"<path>: <reason>"`` message.
    """
    path = Path(path)
    if not path.is_file():
        raise BadImageError(path, "no such file")
    if path.suffix.lower() == ".npy":
        img = _read_npy(path)
    else:
        img = _read_pillow(path)
    if not np.isfinite(img).all():
        raise BadImageError(path, "image contains NaN or inf values")
    h, w = img.shape[:2]
    if min(h, w) < min_size:
        raise BadImageError(path, f"image is {w}x{h}, too small: needs {min_size} px a side")
    return img


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise BadImageError(path, f"cannot read .npy array ({type(exc).__name__})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or not np.issubdtype(arr.dtype, np.number):
        raise BadImageError(path, f"expected an (H,W) or (H,W,C) numeric array, got {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise BadImageError(path, "image contains NaN or inf values")
    return _to_rgb(arr[..., :3] if arr.shape[2] == 4 else arr)


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadImageError(path, f"image is {w}x{h}, larger than {MAX_PIXELS} pixels")
                im.load()
                arr = _pil_to_float(im)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImageError(path, "image is too large (decompression-bomb limit)") from None
    except OSError as exc:
        msg = str(exc).split("\n")[0]
        if "truncated" in msg.lower():
            raise BadImageError(path, "image file is truncated") from None
        if "cannot identify" in msg.lower():
            raise BadImageError(path, "not an image file (unrecognised format)") from None
        raise BadImageError(path, f"cannot decode image: {msg}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
        raise BadImageError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from None
    return arr


def _pil_to_float(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        return _to_rgb((arr / scale).astype(np.float32)[..., None])
    if mode == "F":
        return _to_rgb(np.asarray(im, dtype=np.float32)[..., None])
    if mode in ("1", "L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode == "1":
            im = im.convert("L")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.asarray(im)
        if arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        else:
            arr = arr.astype(np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[2] in (2, 4):  # drop alpha
            arr = arr[..., :-1]
        return _to_rgb(arr)
    return _to_rgb(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W, 1|3) float -> (H, W, 3) float32, contiguous."""
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr, dtype=np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 with rounding and clipping."""
    return np.clip(np.round(np.asarray(img) * 255.0), 0, 255).astype(np.uint8)


def write_png(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Atomically write a float ``(H, W[, 3])`` image in [0, 1] as an 8-bit PNG."""
    pil = Image.fromarray(to_uint8(img))

    def write(tmp: str) -> None:
        pil.save(tmp, format="PNG")

    return atomic_write(path, write)
