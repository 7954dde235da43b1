"""Reading kernels in other tools' files and folders (:func:`read_source`), unchecked: the
first step of ``kgengine pool import`` (:func:`kgengine.pool_interop.import_kernels`).

A **file**: a kgengine pool ``.npz`` (ids, seeds, confidences, reports kept); a ``.npy``
kernel; a ``.mat`` holding a KAIR/USRNet set (variable ``kernels``: cell (1,N) or (N,1),
numeric (K,K,N) or (N,K,K), a cube refused as ambiguous; ids ``<stem>_<i>`` or the file's
``ids`` cell; a ``scale`` variable must be a whole number and match), a KernelGAN kernel
(``Kernel``) or one 2-D variable larger than 1x1. A kernel file named
``<name>_kernel_x{s}.mat|.npy`` (KernelGAN/RealSR, kgengine ``estimate`` and farm
``kernels/``) has id ``<name>`` and is refused for another scale; other ids are the file's
stem.

A **folder**: its ``kernel_pool.npz`` if it has one, else its ``.npy``/``.mat`` files (sorted)
and the ``<name>_kernel_x{s}`` files of its sub-folders (``results/<name>/``), less those of
another scale and each ``.mat`` with a ``.npy`` of the same name beside it (kgengine writes
every kernel as both: one kernel, read from the ``.npy``); the files left out go into the
caller's ``skipped`` with why. Sources: ``<file>`` or ``<file>[i]`` (0-based index in a set
or pool). A bad or missing file named as a source is a :class:`~kgengine.errors.KGEngineError`
naming it; a bad file found in a folder (unreadable, cut short, a kernel that is not finite,
sums to 0 or is over :data:`MAX_SIDE` px a side) goes into the caller's ``failed`` with its
one-line error, and the folder's other files are read: one broken result among thousands
does not stop an import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kgengine.errors import KGEngineError
from kgengine.imageio import BROKEN_LINK, listed_file
from kgengine.kernel import check_kernel
from kgengine.kernel_files import RESULT_NAME as _RESULT
from kgengine.kernel_files import load_mat, mat_kernel
from kgengine.pool import POOL_FILE, POOL_FILE_X4, load_pool

#: Largest kernel side imported (and exported): the ONNX degrader's, so that ``degrade`` takes
#: every pool made here (:data:`kgengine.export.graph.MAX_KERNEL_SIZE`).
MAX_SIDE = 255
#: Largest scale a KAIR file's ``scale`` may hold: the ONNX degrader's
#: (:data:`kgengine.export.graph.MAX_SCALE`).
MAX_SCALE = 8


@dataclass
class RawKernel:
    """One kernel as read, before clean-up: (h, w) array, id, source, provenance."""

    kernel: np.ndarray
    id: str
    source: str
    seed: int = -1
    confidence: float = math.nan
    report: dict | None = None


def read_source(path: Path, scale: int, skipped: dict[Path, str] | None = None,
                failed: dict[Path, str] | None = None) -> list[RawKernel]:
    """The kernels of one file or folder, unchecked (module doc); the files of a folder that
    were left out go into ``skipped`` ({file: ``"twin"`` or ``"x<s>"``}, see
    :class:`kgengine.pool_interop.ImportResult`), those that could not be used into
    ``failed`` ({file: its one-line error}; None: the first one raises)."""
    if path.is_dir():
        if scale == 4 and (path / POOL_FILE_X4).is_file():  # farm --x4 (0.9.29: refused)
            return _read_pool(path / POOL_FILE_X4, scale)
        if (path / POOL_FILE).is_file():
            return _read_pool(path / POOL_FILE, scale)
        return _read_folder(path, scale, {} if skipped is None else skipped, failed)
    if not path.is_file():
        raise KGEngineError(f"{path}: no such file or folder")
    return _read_file(path, scale)


def _read_file(path: Path, scale: int) -> list[RawKernel]:
    """The kernels of a ``.npz`` pool, ``.npy`` kernel or ``.mat`` kernel or set (a
    ``<name>_kernel_x{s}`` file of another scale refused, id ``<name>``)."""
    suffix, match = path.suffix.lower(), _RESULT.match(path.name)
    if suffix == ".npz":
        return _read_pool(path, scale)
    if suffix not in (".npy", ".mat"):
        raise KGEngineError(f"{path}: not a kernel file (expected .npy, .mat or .npz)")
    if match and int(match["scale"]) != scale:
        raise KGEngineError(f"{path}: an x{match['scale']} kernel (its name), not x{scale}; "
                            f"use --scale {match['scale']}")
    name = match["id"] if match else path.stem
    if suffix == ".mat":
        return _read_mat(path, name, scale)
    try:
        return [RawKernel(np.load(path, allow_pickle=False), name, str(path))]
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise KGEngineError(f"{path}: cannot read .npy ({type(exc).__name__})") from None


def _read_folder(path: Path, scale: int, skipped: dict[Path, str],
                 failed: dict[Path, str] | None) -> list[RawKernel]:
    """Kernel files of ``path`` (sorted) and ``*_kernel_x{s}.mat|.npy`` of its sub-folders,
    less (into ``skipped``) those of another scale and a ``.mat`` with a ``.npy`` twin, and
    less (into ``failed``, unless None) those that cannot be read or hold a bad kernel."""
    entries = sorted(path.iterdir())
    files = [p for p in entries if listed_file(p) and p.suffix.lower() in (".npy", ".mat")]
    for sub in (p for p in entries if p.is_dir()):
        files += sorted(p for p in sub.iterdir() if listed_file(p) and _RESULT.match(p.name))
    npy = {p.with_suffix("") for p in files if p.suffix.lower() == ".npy" and p.is_file()}
    taken = []
    for p in files:
        if (m := _RESULT.match(p.name)) and int(m["scale"]) != scale:
            skipped[p] = f"x{int(m['scale'])}"
        elif p.suffix.lower() == ".mat" and p.with_suffix("") in npy:
            skipped[p] = "twin"
        else:
            taken.append(p)
    if not taken:
        other = sorted({int(m["scale"]) for p in files if (m := _RESULT.match(p.name))})
        hint = f" (it has x{other[0]} result files: use --scale {other[0]})" if other else ""
        raise KGEngineError(f"{path}: no kernel files (.npy, .mat, *_kernel_x{scale}.mat or "
                            f"{POOL_FILE}){hint}")
    out = []
    for p in taken:
        try:
            if not p.is_file():
                raise KGEngineError(f"{p}: {BROKEN_LINK}")
            raws = _read_file(p, scale)
            for raw in raws:
                check_raw(raw.kernel, raw.source)
        except KGEngineError as exc:
            if failed is None:
                raise
            failed[p] = str(exc)
            continue
        out += raws
    return out


def _read_pool(path: Path, scale: int) -> list[RawKernel]:
    """The rows of a kgengine pool file, with their ids, seeds, confidences, reports."""
    pool = load_pool(path, scale)
    reports = pool.reports or [None] * len(pool)
    return [RawKernel(pool.kernels[i], pool.ids[i], f"{path}[{i}]", pool.seeds[i],
                      float(pool.confidences[i]), reports[i]) for i in range(len(pool))]


def result_file(name: str) -> tuple[str, int] | None:
    """``(id, scale)`` of a result file's name ``<id>_kernel_x<s>.mat|.npy`` (a folder
    import reads such a file as the kernel ``<id>`` of scale ``s``), else None."""
    m = _RESULT.match(name)
    return (m["id"], int(m["scale"])) if m else None


def check_raw(kernel: object, where: str) -> None:
    """:func:`~kgengine.kernel.check_kernel` (2-D, finite, a finite sum > 0) and at most
    :data:`MAX_SIDE` px per side, else :class:`KGEngineError` ``"<where>: <problem>"``."""
    check_kernel(kernel, where)
    h, w = np.shape(kernel)
    if max(h, w) > MAX_SIDE:
        raise KGEngineError(f"{where}: kernel is {h}x{w}, larger than {MAX_SIDE} px per side "
                            "(the most `degrade` takes)")


def _read_mat(path: Path, name: str, scale: int) -> list[RawKernel]:
    """A KAIR set (``kernels``), else one kernel (:func:`~kgengine.pool.mat_kernel`: the
    ``Kernel`` variable or a lone 2-D variable larger than 1x1), id ``name``."""
    data = load_mat(path)
    if "kernels" not in data:
        return [RawKernel(mat_kernel(data, path), name, str(path))]
    kernels = kair_kernels(data["kernels"], str(path))
    ids = _kair_ids(data, len(kernels), path)
    _check_stored_scale(data.get("scale"), path, scale)
    if kair_convention(data, path) == "convolution":  # kgengine's kernels are correlations
        kernels = [np.ascontiguousarray(np.asarray(k)[::-1, ::-1]) for k in kernels]
    return [RawKernel(k, i, f"{path}[{n}]") for n, (k, i) in enumerate(
        zip(kernels, ids, strict=True))]


def kair_convention(data: dict, path: Path) -> str:
    """How a KAIR ``.mat`` set's kernels are applied: ``"convolution"`` or ``"correlation"``.

    KAIR, USRNet and SRMD's Python code blur with ``scipy.ndimage.convolve``
    (``utils_sisr.classical_degradation``): ``LR = (HR ∗ k)↓s``, the kernel rotated 180°
    against kgengine's correlation (README, "The kernel convention"). A file's
    ``convention`` variable says which (``pool export --format kair-mat`` writes
    ``"convolution"`` since 0.9.28); without one, a file with an ``ids`` cell was written by
    an earlier kgengine export (unrotated: ``"correlation"``), and any other is KAIR's own
    (``"convolution"``).

    Raises:
        KGEngineError: a ``convention`` that is neither.
    """
    if "convention" not in data:
        return "correlation" if "ids" in data else "convolution"
    value = np.asarray(data["convention"]).ravel()
    if value.size == 1 and value.dtype == object:  # a MATLAB cell {'convolution'}
        value = np.asarray(value[0]).ravel()
    text = str(value[0]).strip() if value.size == 1 else ""
    if text not in ("convolution", "correlation"):
        raise KGEngineError(f"{path}: 'convention' must be 'convolution' or 'correlation', "
                            f"got {text or value!r}")
    return text


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
    """Refuse a KAIR file whose ``scale`` variable (if any) is not one real whole number in
    [1, :data:`MAX_SCALE`] (NaN, inf, 2.5, 2+1j), or is not ``scale``."""
    if stored is None:
        return
    value = np.asarray(stored).ravel()
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise KGEngineError(f"{path}: 'scale' must be one number, got {value.size} values")
    number = value[0].item()  # a Python int, float or complex
    if not (isinstance(number, int | float) and 1 <= number <= MAX_SCALE
            and float(number).is_integer()):  # NaN fails too
        raise KGEngineError(f"{path}: 'scale' must be a whole number in [1, {MAX_SCALE}], "
                            f"got {number!r}")
    stored_scale = int(number)
    if stored_scale != scale:
        raise KGEngineError(f"{path}: holds x{stored_scale} kernels (its 'scale'), not "
                            f"x{scale}; use --scale {stored_scale}")


def _kair_ids(data: dict, n: int, path: Path) -> list[str]:
    """The ``ids`` cell of a KAIR file (:func:`export_pool` writes one), else ``<stem>_<i>``."""
    if "ids" not in data:
        return [f"{path.stem}_{i:0{max(3, len(str(n - 1)))}d}" for i in range(n)]
    cells = [np.asarray(c).ravel() for c in np.asarray(data["ids"]).ravel()]
    ids = [str(c[0]) if c.size else "" for c in cells]
    if len(ids) != n or "" in ids:
        raise KGEngineError(f"{path}: 'ids' must be a cell array of {n} strings (one a kernel)")
    return ids
