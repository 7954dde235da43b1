"""Kernel files: one kernel from a ``.npy`` or ``.mat`` file, and which files of a folder
make a pool.

A folder may be a KernelGAN/RealSR or kgengine result folder, where each image has
``<name>_kernel_x2`` and ``<name>_kernel_x4`` files (13×13 and 37×37 for kgengine): those of
one scale only are read (:func:`folder_kernel_files`; before 0.9.27 both were, padded into
one pool and used at either scale).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from kgengine.errors import KGEngineError
from kgengine.kernel import check_kernel

#: Kernel file types read from a pool folder.
KERNEL_SUFFIXES = (".npy", ".mat")
#: A result file's name: ``<id>_kernel_x<s>.mat|.npy`` (DOTALL: an id may hold a newline).
RESULT_NAME = re.compile(r"^(?P<id>.+)_kernel_x(?P<scale>\d+)\.(mat|npy)$",
                         re.IGNORECASE | re.DOTALL)


def folder_kernel_files(path: Path, scale: int | None) -> tuple[list[Path], list[str], int]:
    """The kernel files of a pool folder, their ids (file stems) and the pool's scale.

    Result files (:data:`RESULT_NAME`) of another scale than ``scale`` are left out. With
    ``scale`` None the scale is 2 where the folder has no result files or x2 ones, else the
    one scale its result files have (several without x2: an error naming them). A ``.mat``
    beside a ``.npy`` of the same stem (what ``kgengine estimate`` writes) is left out, as
    ``kgengine pool import`` does (0.9.27; before, such a folder was refused).

    Raises:
        KGEngineError: no kernel files, or two files of one stem otherwise.
    """
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in KERNEL_SUFFIXES)
    npy = {p.with_suffix("") for p in files if p.suffix.lower() == ".npy"}
    files = [p for p in files if not (p.suffix.lower() == ".mat" and p.with_suffix("") in npy)]
    scales = sorted({int(m["scale"]) for p in files if (m := RESULT_NAME.match(p.name))})
    if scale is None:
        if len(scales) > 1 and 2 not in scales:
            raise KGEngineError(f"{path}: result files of several scales "
                                f"({', '.join(f'x{s}' for s in scales)}); give the scale")
        scale = 2 if not scales or 2 in scales else scales[0]
    other = [p for p in files if (m := RESULT_NAME.match(p.name)) and int(m["scale"]) != scale]
    files = [p for p in files if p not in other]
    if not files:
        hint = f" (it has x{scales[0]} result files)" if other else ""
        raise KGEngineError(f"{path}: no .npy or .mat kernel files for x{scale} in this "
                            f"folder{hint}")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise KGEngineError(f"{path}: several kernel files named {dup[0]!r} (.npy and .mat?)")
    return files, stems, scale


def read_kernel_file(path: str | os.PathLike) -> np.ndarray:
    """Read one kernel from ``.npy`` or ``.mat`` (:func:`mat_kernel`) and validate it (see
    :func:`check_kernel`). Returns (h, w) float64 summing to 1."""
    path = Path(path)
    if not path.is_file():
        raise KGEngineError(f"{path}: {'a folder' if path.is_dir() else 'no such file'}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file
            raise KGEngineError(f"{path}: cannot read .npy kernel ({type(exc).__name__})") from None
    elif suffix == ".mat":
        arr = mat_kernel(load_mat(path), path)
    else:
        raise KGEngineError(f"{path}: not a kernel file (expected .npy or .mat)")
    return check_kernel(arr, str(path))


def load_mat(path: Path) -> dict:
    """The variables of a ``.mat`` file (SciPy), or :class:`KGEngineError` naming it."""
    from scipy.io import loadmat

    try:
        return loadmat(path)
    except NotImplementedError:
        raise KGEngineError(f"{path}: MATLAB v7.3 files are not supported (save with -v7)"
                            ) from None
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise KGEngineError(f"{path}: cannot read .mat file ({type(exc).__name__})") from None


def mat_kernel(data: dict, path: Path) -> np.ndarray:
    """The one kernel of a loaded ``.mat`` file, unchecked: its ``Kernel`` variable
    (ZSSR/KernelGAN/DIV2KRK), else its only 2-D numeric variable larger than 1x1 (MATLAB
    stores a scalar, such as a KAIR file's ``scale``, as 1x1: that is no kernel).

    A KAIR/USRNet set (``kernels``, as ``pool export --format kair-mat`` writes) is refused
    naming its size: ``kgengine pool import`` makes a pool of it, ids and scale kept."""
    if "kernels" in data:
        arr = np.asarray(data["kernels"])
        n = arr.size if arr.dtype == object else 1 if arr.ndim < 3 else arr.shape[
            2 if arr.shape[0] == arr.shape[1] else 0]
        raise KGEngineError(f"{path}: holds a set of {n} kernel{'s' * (n != 1)} (KAIR "
                            "'kernels'), not one; `kgengine pool import` makes a pool of it")
    if "Kernel" in data:
        return data["Kernel"]
    arrays = [v for k, v in data.items() if not k.startswith("__") and isinstance(v, np.ndarray)
              and v.ndim == 2 and v.size > 1 and np.issubdtype(v.dtype, np.number)]
    if len(arrays) != 1:
        raise KGEngineError(f"{path}: no 'Kernel' variable and {len(arrays)} 2-D variables "
                            "larger than 1x1 (need exactly one)")
    return arrays[0]
