"""Looking at a kernel pool: widths and anisotropy from moments, text histograms, PNG mosaic,
the confidence distribution, and a filtered copy by confidence (``kgengine pool filter``).

Kernel shape from second moments (entries clipped at 0, then normalised to sum 1; positions
``p = (y, x)`` in kernel pixels, i.e. HR pixels):

    m = Σ k(p) · p,    C = Σ k(p) · (p − m)(p − m)ᵀ,    λ₁ ≥ λ₂ the eigenvalues of C,
    width (major, minor) = (√λ₁, √λ₂),    anisotropy = √λ₁ / √λ₂ ≥ 1,
    angle = atan2 of C's major eigenvector (y, x), radians in (−π/2, π/2].

For a Gaussian ``exp(−½ pᵀ Σ⁻¹ p)`` the widths are its standard deviations along its axes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kgengine.atomic import atomic_write
from kgengine.errors import KGEngineError
from kgengine.pool import (
    POOL_FILE,
    KernelPool,
    check_min_confidence,
    filter_pool,
    load_pool,
    save_pool,
    top_threshold,
)

#: Anisotropy shown for kernels with a zero minor width (a line): the histogram's cap.
ANISOTROPY_CAP = 20.0


def kernel_shape(k: np.ndarray) -> tuple[float, float, float]:
    """(major width, minor width, angle) of kernel ``k`` (h, w) from its moments (see above)."""
    k = np.clip(np.asarray(k, dtype=np.float64), 0.0, None)
    total = k.sum()
    if not total > 0:
        raise ValueError("kernel has no positive entries")
    k = k / total
    yy, xx = np.mgrid[0 : k.shape[0], 0 : k.shape[1]].astype(np.float64)
    my, mx = (k * yy).sum(), (k * xx).sum()
    dy, dx = yy - my, xx - mx
    cov = np.array([[(k * dy * dy).sum(), (k * dy * dx).sum()],
                    [(k * dy * dx).sum(), (k * dx * dx).sum()]])
    vals, vecs = np.linalg.eigh(cov)  # ascending
    lam_minor, lam_major = np.clip(vals, 0.0, None)
    vy, vx = vecs[:, 1]
    angle = float(np.arctan2(vy, vx))
    if angle <= -np.pi / 2:
        angle += np.pi
    elif angle > np.pi / 2:
        angle -= np.pi
    return float(np.sqrt(lam_major)), float(np.sqrt(lam_minor)), angle


def pool_shapes(pool: KernelPool) -> np.ndarray:
    """(N, 4) array: major width, minor width, anisotropy (capped), angle per kernel."""
    rows = []
    for k in pool.kernels:
        major, minor, angle = kernel_shape(k)
        aniso = major / minor if minor > 0 else ANISOTROPY_CAP
        rows.append((major, minor, min(aniso, ANISOTROPY_CAP), angle))
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def text_histogram(values: np.ndarray, bins: int = 10, width: int = 40) -> list[str]:
    """Lines ``"  lo – hi | ####### count"``, bars scaled so the fullest bin has ``width``."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return ["  (no values)"]
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    top = max(int(counts.max()), 1)
    lines = []
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        bar = "#" * int(round(width * c / top))
        lines.append(f"  {a:7.3f} - {b:7.3f} | {bar} {c}")
    return lines


def resolve_pool(path: str | os.PathLike) -> Path:
    """A farm pool folder -> its ``kernel_pool.npz``; anything else unchanged."""
    path = Path(path)
    if path.is_dir() and (path / POOL_FILE).is_file():
        return path / POOL_FILE
    return path


def pool_info(path: str | os.PathLike, bins: int = 10,
              min_confidence: float | None = None) -> str:
    """The text ``kgengine pool info`` prints: size, kernel size, the confidence distribution,
    width/anisotropy histograms.

    Args:
        path: pool file, farm folder or kernel folder. bins: histogram bins.
        min_confidence: also say how many kernels have a confidence ``>=`` this value; the
            width statistics are then of those kernels only (none when no kernel passes).
    Raises:
        KGEngineError: an unreadable pool, or ``min_confidence`` outside [0, 1].
    """
    if min_confidence is not None:
        check_min_confidence(min_confidence)
    src = resolve_pool(path)
    full = load_pool(src)
    lines = [
        f"kernel pool {src}",
        f"  kernels: {len(full)}   kernel size: {full.kernel_size}x{full.kernel_size}"
        f"   scale: x{full.scale}   sources: {len(set(full.sources))}",
        *confidence_lines(full, min_confidence),
    ]
    keep = (np.arange(len(full)) if min_confidence is None
            else np.flatnonzero(full.confidences >= min_confidence))
    if keep.size:
        lines += shape_lines(full.select(keep), bins)
    known = full.confidences[np.isfinite(full.confidences)]
    if known.size:
        lines += ["histogram of confidence (all kernels with one):", *text_histogram(known, bins)]
    return "\n".join(lines)


def confidence_lines(pool: KernelPool, min_confidence: float | None = None) -> list[str]:
    """Lines on the pool's confidences: how many are known, their min/median/max, and how
    many kernels reach ``min_confidence`` (when given)."""
    conf = pool.confidences
    known = conf[np.isfinite(conf)]
    if known.size:
        lines = [f"  confidence: {known.size} of {len(pool)} known; min {known.min():.3f}"
                 f"  median {np.median(known):.3f}  max {known.max():.3f}"]
    else:
        lines = ["  confidence: unknown for every kernel (neither restarts nor a usable "
                 "spectrum gave one, or a pool made before 0.9.7)"]
    if min_confidence is not None:
        n = int(np.count_nonzero(conf >= min_confidence))
        lines.append(f"  confidence >= {min_confidence:g}: {n} of {len(pool)} kernels pass"
                     + ("; the widths below are of those" if n else ""))
    return lines


def shape_lines(pool: KernelPool, bins: int = 10) -> list[str]:
    """Width and anisotropy statistics and histograms of the pool's kernels."""
    shapes = pool_shapes(pool)
    major, minor, aniso = shapes[:, 0], shapes[:, 1], shapes[:, 2]
    return [
        f"  major width (px): min {major.min():.3f}  median {np.median(major):.3f}"
        f"  max {major.max():.3f}",
        f"  minor width (px): min {minor.min():.3f}  median {np.median(minor):.3f}"
        f"  max {minor.max():.3f}",
        f"  anisotropy (major/minor, capped at {ANISOTROPY_CAP:g}): median {np.median(aniso):.3f}",
        "histogram of major widths (px):",
        *text_histogram(major, bins),
        "histogram of minor widths (px):",
        *text_histogram(minor, bins),
        "histogram of anisotropy:",
        *text_histogram(aniso, bins),
    ]


def pick_rows(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` row indices spread evenly over ``0..n-1`` (all when ``n <= limit``)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def plot_pool(path: str | os.PathLike, out: str | os.PathLike, *, columns: int = 12,
              limit: int = 240, hist: str | os.PathLike | None = None,
              min_confidence: float | None = None) -> list[Path]:
    """Write a PNG mosaic of the pool's kernels (each scaled to its own maximum, captioned
    with its id, widths and confidence when known) and optionally a PNG of the
    width/anisotropy histograms.

    Args:
        path: pool file or farm folder. out: mosaic PNG. columns: kernels per row.
        limit: most kernels drawn (rows spread evenly over the pool when it is larger).
        hist: histogram PNG, or None.
        min_confidence: draw only the kernels with a confidence ``>=`` this value.
    Returns:
        the files written.
    Raises:
        KGEngineError: an unreadable pool, a bad ``min_confidence`` or no kernel passing it.
    """
    from kgengine.plotting import kernel_grid_png

    pool = load_pool(resolve_pool(path), min_confidence=min_confidence)
    shapes = pool_shapes(pool)
    rows = pick_rows(len(pool), limit)
    kernels = [pool.kernels[i] for i in rows]
    titles = [f"{pool.ids[i][:18]}\n{shapes[i, 0]:.2f}/{shapes[i, 1]:.2f} px"
              + (f"\nconf {c:.3f}" if np.isfinite(c := pool.confidences[i]) else "")
              for i in rows]
    grid = [kernels[i : i + columns] for i in range(0, len(kernels), columns)]
    caps = [titles[i : i + columns] for i in range(0, len(titles), columns)]
    written = [kernel_grid_png(out, grid, caps, cell_px=96, shared_row_scale=False)]
    if hist is not None:
        written.append(histogram_png(hist, shapes))
    return written


def histogram_png(path: str | os.PathLike, shapes: np.ndarray, bins: int = 20) -> Path:
    """Bar charts of the major width, minor width and anisotropy, side by side (Pillow)."""
    panels = [("major width (px)", shapes[:, 0]), ("minor width (px)", shapes[:, 1]),
              ("anisotropy", shapes[:, 2])]
    pw, ph, pad, top = 260, 180, 12, 18
    canvas = Image.new("RGB", (pad + len(panels) * (pw + pad), ph + top + 2 * pad + 14), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for j, (label, vals) in enumerate(panels):
        x0, y0 = pad + j * (pw + pad), pad + top
        lo, hi = float(vals.min()), float(vals.max())
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        counts, _ = np.histogram(vals, bins=bins, range=(lo, hi))
        peak = max(int(counts.max()), 1)
        bw = pw / bins
        draw.text((x0, pad), f"{label} (n={len(vals)}, max bin {peak})", fill="black", font=font)
        draw.rectangle([x0, y0, x0 + pw, y0 + ph], outline=(160, 160, 160))
        for b, c in enumerate(counts):
            h = ph * c / peak
            draw.rectangle([x0 + b * bw + 1, y0 + ph - h, x0 + (b + 1) * bw - 1, y0 + ph],
                           fill=(180, 40, 90))
        draw.text((x0, y0 + ph + 2), f"{lo:.2f}", fill="black", font=font)
        draw.text((x0 + pw - 40, y0 + ph + 2), f"{hi:.2f}", fill="black", font=font)

    def write(tmp: str) -> None:
        canvas.save(tmp, format="PNG")

    return atomic_write(path, write)


def filter_pool_file(path: str | os.PathLike, min_confidence: float | None,
                     out: str | os.PathLike, top: float | None = None
                     ) -> tuple[Path, int, int, float]:
    """Write the kernels of a pool with a confidence ``>= min_confidence`` (or, with ``top``,
    the most confident ``top`` fraction, :func:`kgengine.pool.top_threshold`) to ``out`` (a
    ``.npz`` pool file, written atomically), in pool order with their provenance.

    Args:
        path: pool file or farm folder. min_confidence: the threshold in [0, 1].
        out: the new pool file; not the pool read (a farm rebuilds its own pool file).
        top: a fraction in (0, 1] instead of ``min_confidence`` (give exactly one).
    Returns:
        (the file written, kernels kept, kernels in the pool, the threshold applied).
    Raises:
        KGEngineError: both or neither of ``min_confidence`` and ``top``, a bad threshold or
            fraction, ``out`` not ``.npz`` or the pool itself, or no kernel passing the
            threshold (naming the pool and the threshold).
    """
    if (min_confidence is None) == (top is None):
        raise KGEngineError("give one of --min-confidence and --top")
    if min_confidence is not None:
        check_min_confidence(min_confidence)
    src, out = resolve_pool(path), Path(out)
    if out.suffix.lower() != ".npz":
        raise KGEngineError(f"{out}: the filtered pool is written as a .npz file")
    if out.resolve() == src.resolve():
        raise KGEngineError(f"{out}: is the pool being filtered; write to another file")
    full = load_pool(src)
    threshold = top_threshold(full, top, str(src)) if top is not None else min_confidence
    kept = filter_pool(full, threshold, str(src))
    return save_pool(out, kept), len(kept), len(full), threshold
