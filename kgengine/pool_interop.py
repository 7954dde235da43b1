"""Kernel pools in other tools' layouts: ``kgengine pool import`` / ``kgengine pool export``.

:func:`import_kernels` reads, in order: **KernelGAN/RealSR result folders** (only the
``<name>_kernel_x{s}.mat`` of the asked scale, variable ``Kernel``, in the folder or in its
sub-folders as in ``results/<name>/``; id ``<name>``; the authors' 17×17 x2 / 33×33 x4
kernels sit 0.5 / 1.5 px off the middle, with small negatives from their spline shift),
**KAIR/USRNet sets** (``.mat`` variable ``kernels``: cell (1,N) or (N,1), numeric (K,K,N) or
(N,K,K), a cube refused as ambiguous; ids ``<stem>_<i>`` or the file's ``ids`` cell; a
``scale`` variable must match), **folders of** ``.npy`` (traiNNer) and single ``.npy``/``.mat``
kernels (id = stem), and **kgengine pools** (ids, seeds, confidences, reports kept). Each
kernel is checked (:func:`~kgengine.kernel.check_kernel`), negatives clipped, renormalised
to sum 1 (unless within :data:`SUM_TOL`: imports are exact and idempotent), zero-padded to
one odd common size (grown if a shift would push mass off it) and re-centred to the
convention (centre of mass on the middle pixel, :func:`~kgengine.kernel.center_kernel`)
unless within :data:`CENTRE_TOL` px. Sources: ``<file>`` or ``<file>[i]`` (0-based index in
a set or pool). A bad or missing file is a :class:`~kgengine.errors.KGEngineError` naming it.

:func:`export_pool` writes ``npy`` (folder of ``<id>.npy``, float32 (K,K)), ``mat-folder``
(``<id>_kernel_x{s}.mat``, ``Kernel`` float64) or ``kair-mat`` (one ``.mat``: ``kernels``
cell (1,N) of float64 (K,K), ``ids`` cell (1,N), ``scale``), atomically; ``size`` crops or
zero-pads every kernel around its centre pixel (:func:`resize_kernel`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kgengine.atomic import ensure_dir, save_mat, save_npy
from kgengine.errors import KGEngineError
from kgengine.kernel import center_kernel, center_of_mass, check_kernel, pad_to
from kgengine.pool import POOL_FILE, KernelPool, load_pool

#: A kernel whose centre of mass is this close (pixels, per axis) to the middle is not moved.
CENTRE_TOL = 1e-6
#: A kernel whose sum is this close to 1 is not renormalised (float32 rounding is < 1e-7).
SUM_TOL = 1e-6
#: Mass at each end of a kernel's row/column profile that a shift may push off the canvas
#: (spline ringing; far below 8-bit resolution), rather than growing the canvas.
TAIL_MASS = 1e-5
#: Export formats of :func:`export_pool`.
FORMATS = ("npy", "mat-folder", "kair-mat")
_RESULT = re.compile(r"^(?P<id>.+)_kernel_x(?P<scale>\d+)\.mat$", re.IGNORECASE)


@dataclass
class RawKernel:
    """One kernel as read, before clean-up: (h, w) array, id, source, provenance."""

    kernel: np.ndarray
    id: str
    source: str
    seed: int = -1
    confidence: float = math.nan
    report: dict | None = None


@dataclass
class ImportResult:
    """The imported ``pool`` (kernels (N, K, K) float32) and what the clean-up did: ``shifts``
    (N, 2) float64, the (dy, dx) px each kernel was moved by (0: not moved), ``negatives``
    (N,) float64, the clipped negative mass relative to the positive mass (0: none)."""

    pool: KernelPool
    shifts: np.ndarray
    negatives: np.ndarray

    def summary(self) -> str:
        """One line: size, how many kernels were re-centred and clipped."""
        moved, neg, k = np.abs(self.shifts).max(axis=1), self.negatives, self.pool.kernel_size
        most = (f" (largest shift {moved.max():.3g} px)" if moved.any() else "",
                f" (at most {neg.max():.2g} of the mass)" if neg.any() else "")
        return (f"{len(self.pool)} kernels {k}x{k} (x{self.pool.scale}); "
                f"{int((moved > 0).sum())} re-centred{most[0]}; "
                f"{int((neg > 0).sum())} with negative values clipped{most[1]}")


def import_kernels(sources: Sequence[str | os.PathLike], scale: int = 2) -> ImportResult:
    """Read kernels from every source (see the module doc) into one conforming pool.

    Args:
        sources: files and folders, read in this order (folders: sorted file names).
        scale: the pool's scale; picks ``*_kernel_x{scale}.mat`` from result folders. A
            kgengine pool or KAIR file recording another scale is refused.
    Returns:
        :class:`ImportResult`: (N, K, K) float32 kernels, K odd, each summing to 1 with its
        centre of mass at (K//2, K//2). Raises :class:`KGEngineError` naming a bad source.
    """
    if int(scale) < 1:
        raise KGEngineError(f"scale must be >= 1, got {scale}")
    raws = [raw for src in sources for raw in read_source(Path(src), int(scale))]
    return conform_kernels(raws, int(scale))


def read_source(path: Path, scale: int) -> list[RawKernel]:
    """The kernels of one file or folder, unchecked (:func:`import_kernels`)."""
    if path.is_dir():
        if (path / POOL_FILE).is_file():
            return _read_pool(path / POOL_FILE, scale)
        return _read_folder(path, scale)
    if not path.is_file():
        raise KGEngineError(f"{path}: no such file or folder")
    return _read_file(path, scale)


def _read_file(path: Path, scale: int) -> list[RawKernel]:
    """The kernels of a ``.npz`` pool, ``.npy`` kernel or ``.mat`` kernel or set."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_pool(path, scale)
    if suffix == ".npy":
        try:
            return [RawKernel(np.load(path, allow_pickle=False), path.stem, str(path))]
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file
            raise KGEngineError(f"{path}: cannot read .npy ({type(exc).__name__})") from None
    if suffix == ".mat":
        return _read_mat(path, scale)
    raise KGEngineError(f"{path}: not a kernel file (expected .npy, .mat or .npz)")


def _read_folder(path: Path, scale: int) -> list[RawKernel]:
    """Kernel files of ``path`` (sorted) and ``*_kernel_x{scale}.mat`` of its sub-folders."""
    entries = sorted(path.iterdir())
    files = [p for p in entries if p.is_file() and p.suffix.lower() in (".npy", ".mat")]
    for sub in (p for p in entries if p.is_dir()):
        files += sorted(p for p in sub.iterdir() if p.is_file() and _RESULT.match(p.name))
    taken = [p for p in files if not (m := _RESULT.match(p.name)) or int(m["scale"]) == scale]
    if not taken:
        other = sorted({int(m["scale"]) for p in files if (m := _RESULT.match(p.name))})
        hint = f" (it has x{other[0]} result files: use --scale {other[0]})" if other else ""
        raise KGEngineError(f"{path}: no kernel files (.npy, .mat, *_kernel_x{scale}.mat or "
                            f"{POOL_FILE}){hint}")
    return [raw for p in taken for raw in _read_file(p, scale)]


def _read_pool(path: Path, scale: int) -> list[RawKernel]:
    """The rows of a kgengine pool file, with their ids, seeds, confidences, reports."""
    pool = load_pool(path, scale)
    reports = pool.reports or [None] * len(pool)
    return [RawKernel(pool.kernels[i], pool.ids[i], f"{path}[{i}]", pool.seeds[i],
                      float(pool.confidences[i]), reports[i]) for i in range(len(pool))]


def _load_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(path)
    except NotImplementedError:
        raise KGEngineError(f"{path}: MATLAB v7.3 files are not supported (save with -v7)"
                            ) from None
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise KGEngineError(f"{path}: cannot read .mat file ({type(exc).__name__})") from None


def _read_mat(path: Path, scale: int) -> list[RawKernel]:
    """A KAIR set (``kernels``), a KernelGAN kernel (``Kernel``) or a lone 2-D variable."""
    match = _RESULT.match(path.name)
    if match and int(match["scale"]) != scale:
        raise KGEngineError(f"{path}: an x{match['scale']} kernel (its name), not x{scale}; "
                            f"use --scale {match['scale']}")
    data, name = _load_mat(path), match["id"] if match else path.stem
    if "kernels" in data:
        kernels = kair_kernels(data["kernels"], str(path))
        ids = _kair_ids(data, len(kernels), path)
        _check_stored_scale(data.get("scale"), path, scale)
        return [RawKernel(k, i, f"{path}[{n}]") for n, (k, i) in enumerate(
            zip(kernels, ids, strict=True))]
    if "Kernel" in data:
        return [RawKernel(data["Kernel"], name, str(path))]
    arrays = [v for k, v in data.items() if not k.startswith("__") and isinstance(
        v, np.ndarray) and v.ndim == 2 and np.issubdtype(v.dtype, np.number)]
    if len(arrays) != 1:
        raise KGEngineError(f"{path}: no 'Kernel' or 'kernels' variable and {len(arrays)} "
                            "2-D variables (need exactly one)")
    return [RawKernel(arrays[0], name, str(path))]


def kair_kernels(value: np.ndarray, where: str) -> list[np.ndarray]:
    """The 2-D kernels of a KAIR/USRNet ``kernels`` variable, in order.

    ``value``: a cell (object) array (1, N) or (N, 1), a numeric (K, K, N) or (N, K, K), or
    one (h, w) kernel. Raises :class:`KGEngineError` naming ``where`` for another shape, a
    cube (K, K, K) (ambiguous) or no kernels.
    """
    arr = np.asarray(value)
    if arr.dtype == object:
        if arr.ndim != 2 or 1 not in arr.shape:
            raise KGEngineError(f"{where}: 'kernels' cell array must be (1,N) or (N,1), "
                                f"got {arr.shape}")
        kernels = list(arr.ravel())
    elif not np.issubdtype(arr.dtype, np.number):
        raise KGEngineError(f"{where}: 'kernels' is not numeric ({arr.dtype})")
    elif arr.ndim == 2:
        kernels = [arr]
    elif arr.ndim == 3 and arr.shape[0] == arr.shape[1] == arr.shape[2]:
        raise KGEngineError(f"{where}: 'kernels' of shape {arr.shape} could be (K,K,N) or "
                            "(N,K,K); save it as a cell array")
    elif arr.ndim == 3 and arr.shape[0] == arr.shape[1]:
        kernels = [arr[:, :, i] for i in range(arr.shape[2])]  # (K, K, N): MATLAB
    elif arr.ndim == 3 and arr.shape[1] == arr.shape[2]:
        kernels = list(arr)  # (N, K, K): NumPy
    else:
        raise KGEngineError(f"{where}: 'kernels' must be a cell array, (K,K,N) or (N,K,K), "
                            f"got shape {arr.shape}")
    if not kernels:
        raise KGEngineError(f"{where}: 'kernels' holds no kernels")
    return kernels


def _check_stored_scale(stored: object, path: Path, scale: int) -> None:
    """Refuse a KAIR file whose ``scale`` variable (if any) is not ``scale``."""
    if stored is None:
        return
    value = np.asarray(stored).ravel()
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise KGEngineError(f"{path}: 'scale' must be one number, got {value.size} values")
    if int(value[0]) != scale:
        raise KGEngineError(f"{path}: holds x{int(value[0])} kernels (its 'scale'), not "
                            f"x{scale}; use --scale {int(value[0])}")


def _kair_ids(data: dict, n: int, path: Path) -> list[str]:
    """The ``ids`` cell of a KAIR file (:func:`export_pool` writes one), else ``<stem>_<i>``."""
    if "ids" not in data:
        return [f"{path.stem}_{i:0{max(3, len(str(n - 1)))}d}" for i in range(n)]
    cells = [np.asarray(c).ravel() for c in np.asarray(data["ids"]).ravel()]
    ids = [str(c[0]) if c.size else "" for c in cells]
    if len(ids) != n or "" in ids:
        raise KGEngineError(f"{path}: 'ids' must be a cell array of {n} strings (one a kernel)")
    return ids


def prepare_kernel(k: object, where: str) -> tuple[np.ndarray, float]:
    """Check ``k``, clip its negatives, renormalise to sum 1 (unless within :data:`SUM_TOL`).

    Returns ((h, w) float64, the clipped negative mass relative to the positive mass);
    raises :class:`KGEngineError` ``"<where>: <problem>"`` (not 2-D, not finite, sum <= 0).
    """
    check_kernel(k, where)  # validation; the values are taken as they are below
    raw = np.asarray(k, dtype=np.float64)
    kernel = np.clip(raw, 0.0, None)
    total = kernel.sum()
    negative = float(np.clip(-raw, 0.0, None).sum() / total)
    if abs(total - 1.0) > SUM_TOL:
        kernel = kernel / total
    return kernel, negative


def canvas_size(k: np.ndarray) -> int:
    """The odd size S of a canvas holding ``k`` (h, w) after :func:`pad_to` and re-centring.

    ``S = 2·half + 1`` with ``half`` the largest of ``h//2``, ``h − 1 − h//2`` (and for w)
    and, when ``k`` must move, ``ceil(|u − m|) + 1`` over the rows/columns ``u`` outside the
    :data:`TAIL_MASS` tails of its profile, ``m`` its centre of mass (+1: the outer ring stays
    empty, as SciPy's ``constant`` shift zeroes an edge pixel sampled even 1e-15 px outside).
    """
    half = max(max(n // 2, n - 1 - n // 2) for n in k.shape)
    com = center_of_mass(k)
    if max(abs(n // 2 - m) for n, m in zip(k.shape, com, strict=True)) <= CENTRE_TOL:
        return 2 * half + 1
    for axis, m in enumerate(com):
        profile = k.sum(axis=1 - axis) / k.sum()
        keep = np.flatnonzero((np.cumsum(profile) > TAIL_MASS)
                              & (np.cumsum(profile[::-1])[::-1] > TAIL_MASS))
        reach = max(abs(keep[0] - m), abs(keep[-1] - m))
        half = max(half, math.ceil(reach - 1e-3) + 1)  # 1e-3 px overhang: negligible
    return 2 * half + 1


def centre_on(k: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float]]:
    """``k`` padded to (size, size) with its centre of mass moved onto (size//2, size//2).

    Returns ((size, size) float64 summing to 1, the (dy, dx) shift): (0, 0) and ``k`` only
    padded when its centre of mass is already within :data:`CENTRE_TOL`.
    """
    canvas = pad_to(k, size)
    c = size // 2
    cy, cx = center_of_mass(canvas)
    shift = (c - cy, c - cx)
    if max(abs(shift[0]), abs(shift[1])) <= CENTRE_TOL:
        return canvas, (0.0, 0.0)
    for _ in range(8):  # clipping after each spline shift moves the centre a little
        canvas = center_kernel(canvas)
        if max(abs(c - v) for v in center_of_mass(canvas)) < 1e-10:
            break
    return canvas, shift


def conform_kernels(raws: Sequence[RawKernel], scale: int) -> ImportResult:
    """Clean, pad to one odd size and re-centre ``raws`` into a pool (:func:`import_kernels`);
    :class:`KGEngineError` for a bad kernel (naming its source) or an id taken twice."""
    if not raws:
        raise KGEngineError("no kernels to import (no sources given)")
    seen: dict[str, str] = {}
    for r in raws:
        if r.id in seen:
            raise KGEngineError(f"{r.source}: kernel id {r.id!r} is already taken by "
                                f"{seen[r.id]}; import these sources separately")
        seen[r.id] = r.source
    prepared = [prepare_kernel(r.kernel, r.source) for r in raws]
    size = max(canvas_size(k) for k, _ in prepared)
    rows, shifts = zip(*(centre_on(k, size) for k, _ in prepared), strict=True)
    reports = [r.report for r in raws]
    pool = KernelPool(np.stack(rows).astype(np.float32), [r.id for r in raws],
                      [r.source for r in raws], [r.seed for r in raws], scale,
                      reports if any(x is not None for x in reports) else None,
                      [r.confidence for r in raws])
    return ImportResult(pool, np.array(shifts, dtype=np.float64),
                        np.array([neg for _, neg in prepared], dtype=np.float64))


# ---------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export_pool` wrote: the files, the kernel size, the mass a crop dropped."""

    paths: list[Path]
    size: int
    lost: float


def check_size(size: int) -> int:
    """``size`` if odd and >= 1 (the kernel centre is a pixel), else :class:`KGEngineError`."""
    if size < 1 or size % 2 == 0:
        raise KGEngineError(f"--size must be odd and >= 1 (the kernel centre is a pixel), "
                            f"got {size}")
    return size


def resize_kernel(k: np.ndarray, size: int, where: str = "kernel") -> tuple[np.ndarray, float]:
    """Crop or zero-pad the centred (K, K) kernel ``k`` to (size, size) around index K//2.

    A crop keeps ``k[c−h : c+h+1, c−h : c+h+1]`` (``c = K//2``, ``h = size//2``) and is
    renormalised to sum 1; padding (:func:`pad_to`) keeps the values. Returns ((size, size)
    float64, the fraction of the mass the crop dropped); raises :class:`KGEngineError` for
    an even or non-positive ``size`` or a crop that leaves no mass.
    """
    check_size(size)
    k = np.asarray(k, dtype=np.float64)
    if size >= k.shape[0]:
        return pad_to(k, size), 0.0
    c, h = k.shape[0] // 2, size // 2
    crop = k[c - h : c + h + 1, c - h : c + h + 1]
    kept = crop.sum() / k.sum()
    if not kept > 0:
        raise KGEngineError(f"{where}: nothing of the kernel is left in a {size}x{size} crop")
    return crop / crop.sum(), float(1.0 - kept)


def _file_names(pool: KernelPool, fmt: str, out: Path) -> list[str]:
    """One file name per kernel in the folder ``out`` (created); refuses ids that are no
    file names and a folder holding other files of the format (:func:`export_pool`)."""
    for i in pool.ids:
        if i in ("", ".", "..") or any(ch in i for ch in "/\\\0"):
            raise KGEngineError(f"kernel id {i!r} cannot be a file name")
    suffix = ".npy" if fmt == "npy" else ".mat"
    names = [f"{i}.npy" if fmt == "npy" else f"{i}_kernel_x{pool.scale}.mat" for i in pool.ids]
    taken = set(names)
    others = sorted(p.name for p in ensure_dir(out).iterdir()
                    if p.suffix.lower() == suffix and p.name not in taken)
    if others:
        raise KGEngineError(f"{out}: already holds {len(others)} other {suffix} files "
                            f"(e.g. {others[0]}); export into an empty folder")
    return names


def export_pool(pool: KernelPool, out: str | os.PathLike, fmt: str,
                size: int | None = None) -> ExportResult:
    """Write ``pool`` (kernels (N, K, K)) as ``fmt`` (:data:`FORMATS`, see the module doc).

    ``out``: the folder (``npy``, ``mat-folder``; created; refused if it holds other files
    of that type) or the ``.mat`` file (``kair-mat``). ``size``: crop or zero-pad every
    kernel to (size, size), odd (:func:`resize_kernel`); None keeps (K, K). Raises
    :class:`KGEngineError` (bad format, size or folder) or ``OutputError`` (a failed write).
    """
    if fmt not in FORMATS:
        raise KGEngineError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    size = pool.kernel_size if size is None else int(size)
    resized = [resize_kernel(k, size, i) for k, i in zip(pool.kernels, pool.ids, strict=True)]
    lost = max(x for _, x in resized)
    out = Path(out)
    if fmt == "kair-mat":
        cells, ids = np.empty((1, len(pool)), dtype=object), np.empty((1, len(pool)), object)
        for n, (k, _) in enumerate(resized):
            cells[0, n], ids[0, n] = k, pool.ids[n]
        save_mat(out, {"kernels": cells, "ids": ids, "scale": np.int64(pool.scale)})
        return ExportResult([out], size, lost)
    names = _file_names(pool, fmt, out)
    paths = [save_npy(out / n, k.astype(np.float32)) if fmt == "npy"
             else save_mat(out / n, {"Kernel": k}) for n, (k, _) in zip(names, resized,
                                                                      strict=True)]
    return ExportResult(paths, size, lost)
