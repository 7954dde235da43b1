"""Kernel pictures with Pillow and NumPy only (no matplotlib).

- :func:`kernel_to_rgb`: one kernel as a heat map, ``(h·p, w·p, 3)`` uint8, nearest-neighbour
  blocks of ``p × p`` pixels per kernel entry.
- :func:`kernel_grid_png`: a grid of kernels with a caption under each cell, written
  atomically as PNG.

The colour map is a simple piecewise-linear ramp black → violet → red → orange → pale
yellow (monotonic in lightness, so it reads in grey too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kgengine.atomic import atomic_write
from kgengine.kernel import common_size, pad_to

#: (position in [0, 1], RGB) anchors of the heat-map ramp.
_ANCHORS = (
    (0.00, (0, 0, 0)),
    (0.25, (60, 15, 110)),
    (0.50, (180, 40, 90)),
    (0.75, (245, 135, 30)),
    (1.00, (252, 250, 190)),
)


def _lut() -> np.ndarray:
    """(256, 3) uint8 colour table interpolating :data:`_ANCHORS`."""
    pos = np.array([a[0] for a in _ANCHORS])
    rgb = np.array([a[1] for a in _ANCHORS], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(x, pos, rgb[:, c]) for c in range(3)], axis=1).round().astype(
        np.uint8
    )


_LUT = _lut()


def kernel_to_rgb(k: np.ndarray, scale_px: int, vmax: float | None = None) -> np.ndarray:
    """Render kernel ``k`` as a heat map: entry ``k[u, v]`` → a ``scale_px`` square of colour.

    The value mapped to the top colour is ``vmax`` (default ``max(k)``); negatives are shown
    as 0 (black), values above ``vmax`` saturate. ``index = round(255 · clip(k / vmax, 0, 1))``.

    Args:
        k: (h, w) kernel (any real values).
        scale_px: pixels per kernel entry (>= 1).
        vmax: value shown at full colour (> 0); ``None`` uses the kernel's maximum.
    Returns:
        (h·scale_px, w·scale_px, 3) uint8 RGB array.
    """
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"kernel: expected (h, w), got shape {k.shape}")
    if scale_px < 1:
        raise ValueError(f"scale_px: expected >= 1, got {scale_px}")
    top = float(np.max(k)) if vmax is None else float(vmax)
    if not np.isfinite(top) or top <= 0:
        idx = np.zeros(k.shape, dtype=np.uint8)
    else:
        idx = np.round(255.0 * np.clip(np.nan_to_num(k) / top, 0.0, 1.0)).astype(np.uint8)
    rgb = _LUT[idx]  # (h, w, 3)
    return np.repeat(np.repeat(rgb, scale_px, axis=0), scale_px, axis=1)


def kernel_grid_png(
    path: str | os.PathLike,
    rows_of_kernels: Sequence[Sequence[np.ndarray]],
    titles: Sequence[Sequence[str]],
    cell_px: int = 132,
    shared_row_scale: bool = True,
) -> Path:
    """Write a PNG grid: one row per list in ``rows_of_kernels``, a caption under each cell.

    Kernels are zero-padded to one odd size (centre index ``h//2`` at the middle, as in
    :func:`kgengine.kernel.pad_to`) so that their positions compare. With
    ``shared_row_scale`` every kernel of a row uses the row's maximum as ``vmax`` (so true and
    estimated kernels compare by brightness); otherwise each uses its own.

    Args:
        path: output PNG (written atomically).
        rows_of_kernels: rows of (h, w) kernels; rows may have different lengths.
        titles: the same nested shape as ``rows_of_kernels``; captions may contain ``\\n``.
        cell_px: approximate cell width in pixels.
    Returns:
        ``path`` as a :class:`Path`.
    """
    if len(rows_of_kernels) != len(titles) or any(
        len(r) != len(t) for r, t in zip(rows_of_kernels, titles, strict=False)
    ):
        raise ValueError("titles must have the same nested shape as rows_of_kernels")
    kernels = [np.asarray(k, np.float64) for row in rows_of_kernels for k in row]
    if not kernels:
        raise ValueError("no kernels to draw")
    size = common_size(*kernels)
    scale_px = max(1, cell_px // size)
    cell = size * scale_px
    font = ImageFont.load_default()
    line_h = 12
    n_lines = max([t.count("\n") + 1 for row in titles for t in row] + [1])
    cap_h = n_lines * line_h + 4
    pad = 6
    n_cols = max(len(r) for r in rows_of_kernels)
    width = pad + n_cols * (cell + pad)
    height = pad + len(rows_of_kernels) * (cell + cap_h + pad)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (row, row_titles) in enumerate(zip(rows_of_kernels, titles, strict=True)):
        padded = [pad_to(np.asarray(k, np.float64), size) for k in row]
        vmax = max((float(p.max()) for p in padded), default=1.0) if shared_row_scale else None
        y = pad + r * (cell + cap_h + pad)
        for c, (k, title) in enumerate(zip(padded, row_titles, strict=True)):
            x = pad + c * (cell + pad)
            canvas.paste(Image.fromarray(kernel_to_rgb(k, scale_px, vmax)), (x, y))
            draw.multiline_text((x, y + cell + 2), title, fill=(0, 0, 0), font=font, spacing=2)

    def write(tmp: str) -> None:
        canvas.save(tmp, format="PNG")

    return atomic_write(path, write)
