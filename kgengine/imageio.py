"""Reading and writing images, with one-line errors that name the file and the problem.

``read_image`` is kgengine's one input loader. It returns float32 RGB ``(H, W, 3)`` in
``[0, 1]`` and applies the same checks to every format:

- **size first**: the pixel count is read from the header (Pillow's, or the ``.npy``
  header through a memory map) and an image over :data:`MAX_PIXELS` is refused before any
  pixel is decoded; Pillow's own decompression-bomb limit is raised to the same value (and
  its warning silenced), so it neither refuses a valid image below kgengine's limit nor
  prints; an image below ``min_size`` is refused from its header too;
- **orientation**: a JPEG/TIFF's EXIF orientation is applied (a "rotate 90" photo is read
  upright), also by :func:`image_size`;
- **values**: 8-bit data is divided by 255, 16-bit by 65535 (PNG/TIFF/PGM/PPM or ``uint8`` /
  ``uint16`` ``.npy``; Pillow decodes a 16-bit *colour* PNG to 8 bits per channel, so it
  is read at 8-bit precision: save a ``uint16`` ``.npy`` to keep 16 bits); float data
  (``.npy``, float TIFF) must already lie in [0, 1]; NaN/inf are refused; grayscale is
  replicated to 3 channels, palettes expanded, alpha dropped (KernelGAN sees only colour);
- **shape**: ``.npy`` arrays are ``(H, W)`` or ``(H, W, C)`` with C in 1, 3, 4; an image
  whose shorter side is below ``min_size`` is refused.

Unreadable, truncated, non-image, folder, NaN/inf, out-of-range, too small and huge inputs
raise :class:`~kgengine.errors.BadImageError`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kgengine.atomic import atomic_write
from kgengine.errors import BadImageError

#: Largest accepted image, in pixels (about 16k x 12k); larger ones are refused.
MAX_PIXELS = 200_000_000
#: EXIF orientations that swap width and height (transpose, rotate 90/270, transverse).
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


def read_image(path: str | os.PathLike, min_size: int = 0) -> np.ndarray:
    """Read an image as float32 RGB ``(H, W, 3)`` in ``[0, 1]`` (checks: module docstring).

    Args:
        path: a PNG/JPEG/TIFF/BMP/... file readable by Pillow, or a ``.npy`` array.
        min_size: refuse images whose shorter side is below this (pixels), from the header,
            before anything is decoded.
    Raises:
        BadImageError: with a one-line ``"<path>: <reason>"`` message.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".npy":
        img = _read_npy(path, min_size)
    else:
        img = _read_pillow(path, min_size)
    return check_image(img, path, min_size)


def check_image(img: np.ndarray, where: object, min_size: int = 0) -> np.ndarray:
    """The value and size checks :func:`read_image` applies to every decoded image.

    Args:
        img: (H, W, C) float image. where: the file (or name) the messages start with.
        min_size: refuse images whose shorter side is below this (pixels).
    Returns:
        ``img`` unchanged.
    Raises:
        BadImageError: NaN/inf, values outside [0, 1], or a side below ``min_size``.
    """
    if img.size == 0:
        raise BadImageError(where, f"image is empty (shape {img.shape})")
    if not np.isfinite(img).all():
        raise BadImageError(where, "image contains NaN or inf values")
    lo, hi = float(img.min()), float(img.max())
    if lo < 0.0 or hi > 1.0:
        raise BadImageError(where, f"float values must lie in [0, 1], found {lo:.4g} to "
                                   f"{hi:.4g} (divide by the maximum or clip first)")
    h, w = img.shape[:2]
    if min(h, w) < min_size:
        raise BadImageError(where, f"image is {w}x{h}, too small: needs {min_size} px a side")
    return img


def check_array(image: np.ndarray, where: object) -> np.ndarray:
    """An in-memory image as :func:`read_image` returns a file: float32 ``(H, W, 3)``.

    ``image``: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped), of
    bool, integer or float values in [0, 1] (an integer array is not rescaled: divide a
    uint8 image by 255 first). Raises :class:`BadImageError` naming ``where`` and the problem.
    """
    if image.dtype.kind not in "biuf":
        raise BadImageError(where, f"unsupported dtype {image.dtype}: expected floats in [0, 1]")
    if image.dtype.kind in "iu" and image.size and (image.min() < 0 or image.max() > 1):
        top = {"uint8": "255", "uint16": "65535"}.get(image.dtype.name, "the maximum")
        raise BadImageError(where, f"{image.dtype} values from {image.min()} to {image.max()}: "
                                   f"expected floats in [0, 1] (divide by {top} first)")
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise BadImageError(where, f"expected an (H,W) or (H,W,C) array with C in 1, 3, 4 "
                                   f"(channels last), got shape {image.shape}")
    return check_image(_to_rgb(arr[..., :3]), where)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`read_image` will return it, from the header
    only (EXIF orientation applied, nothing decoded).

    Raises:
        BadImageError: the file is missing or its header cannot be read.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".npy":
        shape = _npy_array(path).shape
        return int(shape[1]), int(shape[0])
    try:
        with _pillow_limits(), Image.open(path) as im:
            return _upright_size(im)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise BadImageError(path, f"cannot read the image header ({type(exc).__name__})") from None


def _upright_size(im: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image once its EXIF orientation is applied.

    Pillow's TIFF plugin (13) already reports a rotated TIFF's upright size on open (and
    rotates it on load), so a TIFF whose size is its tags' ``ImageWidth``/``ImageLength``
    swapped is not swapped again.
    """
    w, h = im.size
    if _orientation(im) not in _SWAPPING_ORIENTATIONS:
        return w, h
    if im.format == "TIFF" and w != h:
        tags = getattr(im, "tag_v2", {})
        if (tags.get(256), tags.get(257)) == (h, w):  # already upright
            return w, h
    return h, w


#: The problem named when a file to read is a symbolic link that leads nowhere.
BROKEN_LINK = "a symbolic link to nothing (broken, or a loop)"


#: A noise bank's files (:mod:`kgengine.degradation.noisebank` writes them): a patch array
#: next to its index is never an input of a folder listing (0.9.27: ``noise collect -o`` a
#: photo folder made ``degrade``, ``farm`` and ``estimate`` read the patches as an image).
NOISE_BANK_FILES = ("noise_patches.npy", "noise_index.json")


#: Files a folder listing takes as images (``estimate``, ``farm``, ``degrade``, ``noise
#: collect``, ``synth``), case-insensitive; names starting with "." (macOS ``._a.png``) are
#: never listed (:func:`folder_image`).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".npy")


def image_name(name: str) -> bool:
    """Whether a file of this name is an image of a folder: not hidden, an
    :data:`IMAGE_SUFFIXES` suffix."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def folder_image(path: Path) -> bool:
    """Whether a folder listing takes ``path`` as an image: :func:`image_name` and
    :func:`listed_file` (the one rule of every command that reads a folder of photos)."""
    return image_name(path.name) and listed_file(path)


def listed_file(path: Path) -> bool:
    """Whether a folder listing takes ``path`` as a file: a regular file (or a link to one),
    or a symbolic link to nothing (broken, or a loop), so that reading it fails as one bad
    file naming the link instead of vanishing from the job without a word; not a noise
    bank's patch file (:data:`NOISE_BANK_FILES`)."""
    if path.name == NOISE_BANK_FILES[0] and (path.parent / NOISE_BANK_FILES[1]).is_file():
        return False
    return path.is_file() or (path.is_symlink() and not path.exists())


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise BadImageError(path, "is a folder, not an image file")
    if not path.is_file():
        raise BadImageError(path, BROKEN_LINK if path.is_symlink() else "no such file")


def _check_pixels(path: Path, w: int, h: int, min_size: int = 0) -> None:
    if w * h > MAX_PIXELS:
        raise BadImageError(path, f"image is {w}x{h}, larger than {MAX_PIXELS} pixels")
    if w < 1 or h < 1:
        raise BadImageError(path, f"image is {w}x{h}: empty")
    if min(w, h) < min_size:  # the message check_image gives
        raise BadImageError(path, f"image is {w}x{h}, too small: needs {min_size} px a side")


# ---------------------------------------------------------------------- .npy
def _npy_array(path: Path, min_size: int = 0) -> np.ndarray:
    """The ``.npy`` array memory-mapped (header read, no data loaded), shape checked."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure (truncated, pickled, ...) is a bad file
        raise BadImageError(path, f"cannot read .npy array ({type(exc).__name__})") from None
    if not isinstance(arr, np.ndarray) or arr.ndim not in (2, 3) or (
            arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        shape = getattr(arr, "shape", "?")
        raise BadImageError(path, f"expected an (H,W) or (H,W,C) array with C in 1, 3, 4, "
                                  f"got shape {shape}")
    _check_pixels(path, int(arr.shape[1]), int(arr.shape[0]), min_size)
    return arr


def _read_npy(path: Path, min_size: int = 0) -> np.ndarray:
    arr = _npy_array(path, min_size)
    if arr.dtype.kind == "u" and arr.dtype.itemsize in (1, 2):  # either byte order
        scale = 255.0 if arr.dtype.itemsize == 1 else 65535.0
    elif np.issubdtype(arr.dtype, np.floating) or arr.dtype.kind == "b":
        scale = 1.0  # floats checked to lie in [0, 1] by read_image; bool is 0 or 1
    else:
        raise BadImageError(path, f"unsupported dtype {arr.dtype}: expected uint8, uint16, "
                                  "bool or floats in [0, 1]")
    img = np.array(arr, dtype=np.float32)  # copies out of the memory map
    del arr
    if scale != 1.0:
        img /= scale
    if img.ndim == 2:
        img = img[..., None]
    return _to_rgb(img[..., :3] if img.shape[2] == 4 else img)


# ---------------------------------------------------------------------- Pillow formats
@contextlib.contextmanager
def _pillow_limits() -> Iterator[None]:
    """Pillow's decompression-bomb limit raised to kgengine's :data:`MAX_PIXELS` (its own
    default, 89.5 MP, would refuse valid images; it is never lowered), without its warning:
    kgengine checks the size itself."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # a damaged file's "Corrupt EXIF data" & co.: the read fails on one line, or works
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
        yield


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright; 1 too when absent or unreadable)."""
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - broken EXIF: read the pixels as stored
        return 1


def _read_pillow(path: Path, min_size: int = 0) -> np.ndarray:
    try:
        with _pillow_limits(), Image.open(path) as im:
            _check_pixels(path, *_upright_size(im), min_size)
            fmt = im.format
            im.load()
            if _orientation(im) != 1:
                im = ImageOps.exif_transpose(im)
            return _pil_to_float(im, path, fmt)
    except BadImageError:
        raise
    except Image.DecompressionBombError:
        raise BadImageError(path, f"image is larger than {MAX_PIXELS} pixels") from None
    except OSError as exc:
        msg = str(exc).split("\n")[0]
        if "truncated" in msg.lower():
            raise BadImageError(path, "image file is truncated") from None
        if "cannot identify" in msg.lower():
            raise BadImageError(path, "not an image file (unrecognised format)") from None
        raise BadImageError(path, f"cannot decode image: {msg}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file
        raise BadImageError(path, f"cannot decode image ({type(exc).__name__}: {exc})") from None


def _pil_to_float(im: Image.Image, path: Path, fmt: str | None = None) -> np.ndarray:
    """Pixels as float32 RGB in [0, 1]; ``fmt`` is the file's format (Pillow's name)."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise BadImageError(path, f"32-bit integer pixels from {arr.min():.0f} to "
                                      f"{arr.max():.0f}: expected 8- or 16-bit values")
        # 16-bit PNG/TIFF ("I;16") and PGM/PPM (Pillow scales their maxval to 65535) are
        # 16-bit whatever their values; a 32-bit integer TIFF is read as 8-bit where it fits
        sixteen = mode.startswith("I;16") or fmt in ("PPM", "PGM", "PNM")
        scale = 65535.0 if sixteen or arr.max(initial=0) > 255 else 255.0
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
