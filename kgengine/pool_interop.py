"""Kernel pools in other tools' layouts: ``kgengine pool import`` / ``kgengine pool export``.

:func:`import_kernels` reads each source with :func:`kgengine.pool_import.read_source`
(**KernelGAN/RealSR and kgengine result folders**: ``<name>_kernel_x{s}.mat`` or ``.npy`` of
the asked scale only, also in sub-folders as in ``results/<name>/``, id ``<name>``; the
authors' 17×17 x2 / 33×33 x4 kernels sit 0.5 / 1.5 px off the middle, with small negatives
from their spline shift; **KAIR/USRNet sets** (``.mat`` variable ``kernels``; KAIR
convolves, so each is rotated 180° into kgengine's correlation:
:func:`kgengine.pool_import.kair_convention`); **folders of** ``.npy`` (traiNNer) and single
``.npy``/``.mat`` kernels (id = stem); **kgengine pools**, ids, seeds, confidences and
reports kept; a folder's ``.mat`` beside a ``.npy`` of the same name is one kernel, read
once: :attr:`ImportResult.skipped`). Each kernel is checked
(:func:`~kgengine.kernel.check_kernel`; at most :data:`MAX_SIZE` px a side), negatives
clipped, renormalised to sum 1 (unless within :data:`SUM_TOL`: imports are exact and
idempotent), zero-padded to one odd common size (grown if a shift would push mass off it, up
to :data:`MAX_SIZE`) and re-centred to the convention (centre of mass on the middle pixel,
:func:`~kgengine.kernel.center_kernel`) unless within :data:`CENTRE_TOL` px. A bad or
missing file named as a source is a :class:`~kgengine.errors.KGEngineError` naming it; a bad
file inside a source folder is left out and listed in :attr:`ImportResult.failed` with its
one-line error.

:func:`export_pool` writes ``npy`` (folder of ``<id>.npy``, float32 (K,K)), ``mat-folder``
(``<id>_kernel_x{s}.mat``, ``Kernel`` float64) or ``kair-mat`` (one ``.mat``: ``kernels``
cell (1,N) of float64 (K,K), rotated 180° since 0.9.28 because KAIR/USRNet convolve,
``ids`` cell (1,N), ``scale``, ``convention`` = ``"convolution"``), atomically, never over the pool
it exports; ``size`` (odd, at most :data:`MAX_SIZE`) crops or zero-pads every kernel around
its centre pixel (:func:`resize_kernel`). An import of an export gives back the same ids.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kgengine.atomic import (
    ensure_dir,
    process_dir_prefix,
    remove_dead_process_dirs,
    save_mat,
    save_npy,
    why,
)
from kgengine.errors import KGEngineError, OutputError
from kgengine.kernel import center_kernel, center_of_mass, check_kernel, check_scale, pad_to
from kgengine.pool import KernelPool
from kgengine.pool_import import (  # noqa: F401 (API)
    MAX_SIDE,
    RawKernel,
    check_raw,
    kair_kernels,
    read_source,
    result_file,
)

#: A kernel whose centre of mass is this close (pixels, per axis) to the middle is not moved:
#: a thousandth of a pixel, so that kgengine's own kernels (centred to about 1e-5 px by
#: :func:`~kgengine.kernel.center_kernel`'s spline shift) come back from an export unchanged.
CENTRE_TOL = 1e-3
#: A kernel whose sum is this close to 1 is not renormalised (float32 rounding is < 1e-7).
SUM_TOL = 1e-6
#: Mass at each end of a kernel's row/column profile that a shift may push off the canvas
#: (spline ringing; far below 8-bit resolution), rather than growing the canvas.
TAIL_MASS = 1e-5
#: Export formats of :func:`export_pool`.
FORMATS = ("npy", "mat-folder", "kair-mat")
#: Largest ``size`` of :func:`export_pool` and kernel side :func:`import_kernels` takes: the
#: ONNX degrader's (SRMD takes 15, KAIR 25, KernelGAN x4 33; each kernel is held as
#: (size, size) float64: 0.5 MB at 255).
MAX_SIZE = MAX_SIDE
#: Longest file name :func:`export_pool` writes, in bytes (Linux, macOS and Windows: 255).
NAME_MAX = 255


@dataclass
class ImportResult:
    """The imported ``pool`` (kernels (N, K, K) float32) and what the clean-up did: ``shifts``
    (N, 2) float64, the (dy, dx) px each kernel was moved by (0: not moved), ``negatives``
    (N,) float64, the clipped negative mass relative to the positive mass (0: none)."""

    pool: KernelPool
    shifts: np.ndarray
    negatives: np.ndarray
    #: Files of the source folders left out, each with why: ``"twin"`` (a ``.mat`` whose
    #: ``.npy`` of the same name was read) or ``"x<s>"`` (a ``*_kernel_x<s>`` file of
    #: another scale ``s``).
    skipped: dict[Path, str] = field(default_factory=dict)
    #: Files of the source folders that could not be used (unreadable, cut short, a kernel
    #: not finite or summing to 0), each with its one-line error; the others were imported.
    failed: dict[Path, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: size, how many kernels were re-centred and clipped, files skipped."""
        moved, neg, k = np.abs(self.shifts).max(axis=1), self.negatives, self.pool.kernel_size
        most = (f" (largest shift {moved.max():.3g} px)" if moved.any() else "",
                f" (at most {neg.max():.2g} of the mass)" if neg.any() else "")
        why = list(self.skipped.values())
        skip = [f"{why.count(x)} {x} kernel files (--scale {x[1:]} reads them)"
                for x in sorted(set(why) - {"twin"})]
        if "twin" in why:
            skip.insert(0, f"{why.count('twin')} .mat files with a .npy of the same name")
        return (f"{len(self.pool)} kernels {k}x{k} (x{self.pool.scale}); "
                f"{int((moved > 0).sum())} re-centred{most[0]}; "
                f"{int((neg > 0).sum())} with negative values clipped{most[1]}"
                + (f"; skipped {' and '.join(skip)}" if skip else ""))


def import_kernels(sources: Sequence[str | os.PathLike], scale: int = 2) -> ImportResult:
    """Read kernels from every source (see the module doc) into one conforming pool.

    Args:
        sources: files and folders, read in this order (folders: sorted file names).
        scale: the pool's scale; picks ``*_kernel_x{scale}.mat`` from result folders. A
            kgengine pool or KAIR file recording another scale is refused.
    Returns:
        :class:`ImportResult`: (N, K, K) float32 kernels, K odd, each summing to 1 with its
        centre of mass at (K//2, K//2); the bad files found in source folders in ``failed``.
        Raises :class:`KGEngineError` naming a bad source, or when no kernel is left.
    """
    scale = check_scale(scale, "import")
    if isinstance(sources, str | bytes | os.PathLike):
        raise TypeError("sources: expected a list of files and folders, got one path")
    skipped: dict[Path, str] = {}
    failed: dict[Path, str] = {}
    raws = [raw for src in sources for raw in read_source(Path(src), scale, skipped, failed)]
    if not raws and failed:
        first = next(iter(failed.values()))
        raise KGEngineError(f"no kernel to import: all {len(failed)} kernel files of the "
                            f"sources failed (the first: {first})")
    result = conform_kernels(raws, scale)
    result.skipped, result.failed = skipped, failed
    return result


def prepare_kernel(k: object, where: str) -> tuple[np.ndarray, float]:
    """Check ``k``, clip its negatives, renormalise to sum 1 (unless within :data:`SUM_TOL`).

    Returns ((h, w) float64, the clipped negative mass relative to the positive mass);
    raises :class:`KGEngineError` ``"<where>: <problem>"`` (not 2-D, not finite, sum <= 0 or
    not finite, a side over :data:`MAX_SIZE`).
    """
    check_raw(k, where)  # validation; the values are taken as they are below
    raw = np.asarray(k, dtype=np.float64)
    kernel = np.clip(raw, 0.0, None)
    with np.errstate(over="ignore", invalid="ignore"):  # said in one line below
        total = kernel.sum()
        negative = float(np.clip(-raw, 0.0, None).sum() / total)
    if not (np.isfinite(total) and np.isfinite(negative)):
        raise KGEngineError(f"{where}: kernel sum is not finite (of its positive or of its "
                            "negative values)")
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
    sizes = [canvas_size(k) for k, _ in prepared]
    size = max(sizes)
    if size > MAX_SIZE:  # a kernel of up to MAX_SIZE px whose centre of mass is far off
        raise KGEngineError(f"{raws[sizes.index(size)].source}: re-centred, the kernel needs a "
                            f"{size}x{size} canvas, larger than {MAX_SIZE} (the most `degrade` "
                            "takes)")
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
    """``size`` if odd (the kernel centre is a pixel) and in [1, :data:`MAX_SIZE`], else
    :class:`KGEngineError`."""
    if (isinstance(size, bool) or not isinstance(size, numbers.Integral)
            or not 1 <= size <= MAX_SIZE or size % 2 == 0):
        raise KGEngineError(f"--size must be odd and in [1, {MAX_SIZE}] (the kernel centre is "
                            f"a pixel), got {size}")
    return int(size)


def resize_kernel(k: np.ndarray, size: int, where: str = "kernel") -> tuple[np.ndarray, float]:
    """Crop or zero-pad the centred (K, K) kernel ``k`` to (size, size) around index K//2.

    A crop keeps ``k[c−h : c+h+1, c−h : c+h+1]`` (``c = K//2``, ``h = size//2``) and is
    renormalised to sum 1; padding (:func:`pad_to`) keeps the values. Returns ((size, size)
    float64, the fraction of the mass the crop dropped); raises :class:`KGEngineError` for
    an even or non-positive ``size`` or a crop that leaves no mass.
    """
    check_size(size)
    check_kernel(k, where)  # 2-D, finite, sum > 0; the values are taken as given below
    k = np.asarray(k, dtype=np.float64)
    if k.shape[0] != k.shape[1]:
        raise KGEngineError(f"{where}: expected a square (K,K) kernel, got shape {k.shape}")
    if size >= k.shape[0]:
        return pad_to(k, size), 0.0
    c, h = k.shape[0] // 2, size // 2
    crop = k[c - h : c + h + 1, c - h : c + h + 1]
    kept = crop.sum() / k.sum()
    if not kept > 0:
        raise KGEngineError(f"{where}: nothing of the kernel is left in a {size}x{size} crop")
    return crop / crop.sum(), float(1.0 - kept)


def _file_names(pool: KernelPool, fmt: str) -> list[str]:
    """One file name per kernel (:func:`export_pool`), each checked before anything is
    written: an id that is no file name, or too long for one (:data:`NAME_MAX`), and for
    ``npy`` an id that ``pool import`` would read back as another (``img_kernel_x4.npy``: a
    result file, id ``img``, x4) are refused."""
    names = [f"{i}.npy" if fmt == "npy" else f"{i}_kernel_x{pool.scale}.mat" for i in pool.ids]
    for i, name in zip(pool.ids, names, strict=True):
        if i in ("", ".", "..") or any(ch in i for ch in "/\\\0"):
            raise KGEngineError(f"kernel id {i!r} cannot be a file name")
        try:
            size = len(os.fsencode(name))
        except UnicodeError:
            raise KGEngineError(f"kernel id {i!r} cannot be a file name (not encodable)") from None
        if size > NAME_MAX:
            raise KGEngineError(f"kernel id {i[:40]!r}... is too long for a file name ({size} "
                                f"bytes as {name[-12:]!r}, at most {NAME_MAX})")
        if fmt == "npy" and (read := result_file(name)):
            raise KGEngineError(
                f"kernel id {i!r}: {name!r} would be imported back as the x{read[1]} result "
                f"file of {read[0]!r}; export as mat-folder or kair-mat, which keep every id")
    return names


def _check_overwrite(pool: KernelPool, out: Path, targets: list[Path],
                     source: str | os.PathLike | None) -> None:
    """Refuse an export onto the pool it exports (:func:`export_pool`): ``out`` is ``source``
    (the pool's file or folder), or a file to write is ``source`` or a file the pool's
    kernels were read from (its ``sources``), compared as resolved paths."""
    src, what = None if source is None else Path(source).resolve(), (
        "file" if targets == [out] else "folder")
    if src is not None and out.resolve() == src:
        raise KGEngineError(f"{out}: is the pool being exported; write to another {what}")
    ours = {src} | {Path(s).resolve() for s in pool.sources if "\0" not in s}
    hit = next((t for t in targets if t.resolve() in ours), None)
    if hit is not None:
        raise KGEngineError(f"{out}: the export would overwrite {hit.name!r}, a kernel file of "
                            f"the pool being exported; write to another {what}")


def _check_folder(out: Path, names: list[str], fmt: str) -> None:
    """Create ``out``; refuse it when it holds other files of the format's type."""
    suffix, taken = (".npy" if fmt == "npy" else ".mat"), set(names)
    others = sorted(p.name for p in ensure_dir(out).iterdir()
                    if p.suffix.lower() == suffix and p.name not in taken)
    if others:
        raise KGEngineError(f"{out}: already holds {len(others)} other {suffix} files "
                            f"(e.g. {others[0]}); export into an empty folder")


def _write_files(out: Path, names: list[str], rows: list[np.ndarray], fmt: str) -> list[Path]:
    """Write every kernel into a new hidden folder in ``out``, then move each onto its name:
    a write that fails (full disk, ...) leaves none of the export's files in ``out`` (a kill
    leaves at most the hidden ``.export-*`` folder, which no kgengine reader takes, and the
    next export into ``out`` from this machine removes:
    :func:`kgengine.atomic.remove_dead_process_dirs`)."""
    prefix = process_dir_prefix(".export")
    remove_dead_process_dirs(out, prefix)
    try:
        part = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out))
    except OSError as exc:
        raise OutputError(out, f"cannot write ({why(exc)})", exc.errno) from exc
    moved: list[Path] = []
    try:
        written = [save_npy(part / f"{n}.npy", k.astype(np.float32)) if fmt == "npy"
                   else save_mat(part / f"{n}.mat", {"Kernel": k}) for n, k in enumerate(rows)]
        for tmp, name in zip(written, names, strict=True):
            try:
                os.replace(tmp, out / name)
            except OSError as exc:
                raise OutputError(out / name, f"cannot write ({why(exc)})", exc.errno) from exc
            moved.append(out / name)
    except BaseException:
        for path in moved:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        shutil.rmtree(part, ignore_errors=True)
    return moved


def export_pool(pool: KernelPool, out: str | os.PathLike, fmt: str, size: int | None = None,
                *, source: str | os.PathLike | None = None) -> ExportResult:
    """Write ``pool`` (kernels (N, K, K)) as ``fmt`` (:data:`FORMATS`, see the module doc).

    ``out``: the folder (``npy``, ``mat-folder``; created; refused if it holds other files
    of that type) or the ``.mat`` file (``kair-mat``). ``size``: crop or zero-pad every
    kernel to (size, size), odd (:func:`resize_kernel`); None keeps (K, K), refused over
    :data:`MAX_SIZE`. ``source``: the pool's file or folder, if any: an export onto it or
    over one of the pool's kernel files is refused. ``pool import`` reads every export
    back with the same ids: every name is checked before any file is written, and an id
    whose ``npy`` file name is a result file's (``<name>_kernel_x<s>.npy``) is refused
    (``mat-folder`` and ``kair-mat`` keep any id). The files of a folder are written
    together: a failed export leaves none. Raises :class:`KGEngineError` (bad format, size,
    id or folder) or ``OutputError`` (a failed write).
    """
    if fmt not in FORMATS:
        raise KGEngineError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if size is None and pool.kernel_size > MAX_SIZE:
        k = pool.kernel_size
        raise KGEngineError(f"{source or 'kernel pool'}: its kernels are {k}x{k}, larger than "
                            f"the {MAX_SIZE} px this export takes; give --size (odd, at most "
                            f"{MAX_SIZE}) to crop them")
    size = check_size(pool.kernel_size if size is None else size)
    out = Path(out)
    names = [] if fmt == "kair-mat" else _file_names(pool, fmt)
    _check_overwrite(pool, out, [out / n for n in names] if names else [out], source)
    resized = [resize_kernel(k, size, i) for k, i in zip(pool.kernels, pool.ids, strict=True)]
    lost = max(x for _, x in resized)
    if fmt == "kair-mat":
        cells, ids = np.empty((1, len(pool)), dtype=object), np.empty((1, len(pool)), object)
        for n, (k, _) in enumerate(resized):  # KAIR convolves: the kernel rotated 180°
            cells[0, n], ids[0, n] = np.ascontiguousarray(k[::-1, ::-1]), pool.ids[n]
        save_mat(out, {"kernels": cells, "ids": ids, "scale": np.int64(pool.scale),
                       "convention": "convolution"})
        return ExportResult([out], size, lost)
    _check_folder(out, names, fmt)
    return ExportResult(_write_files(out, names, [k for k, _ in resized], fmt), size, lost)
