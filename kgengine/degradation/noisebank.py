"""Real-noise patches (RealSR's recipe): collect flat patches of real photos, load them back.

Ji et al., "Real-World Super-Resolution via Kernel Estimation and Noise Injection" (CVPR-W
2020): in flat regions of a real photo, what varies is mostly the camera's noise. So:

1. cut each photo into ``P × P`` patches (stride ``stride``, default ``P``);
2. keep a patch when its luma ``Y = 255·(0.299 R + 0.587 G + 0.114 B)`` has variance
   ``var(Y) < max_var`` (RealSR: 20, in 0-255 units) and mean in ``[min_mean, max_mean]``;
3. remove each kept patch's mean per channel, ``n_c = patch_c − mean(patch_c)``, so adding
   it changes the noise and not the colour.

Files written by :func:`collect_noise` into the output folder (atomically):

- :data:`NOISE_FILE` ``noise_patches.npy``: ``(N, P, P, 3)`` float32, [0, 1] units,
  zero mean per patch and channel (``np.load(..., allow_pickle=False)``);
- :data:`INDEX_FILE` ``noise_index.json``: the settings (``patch_size``, ``stride``,
  ``max_var``, ``min_mean``, ``max_mean``), ``count`` and one record per patch
  (``source`` file, ``y``, ``x`` of its top-left corner, ``var`` and ``mean`` of its luma).

These files are never read as photos (:func:`list_photos`), so the output folder may be
the photo folder and a rerun there reads the same photos.

The pipeline's ``real`` stage (:func:`kgengine.degradation.stages.real_noise`) adds a random
patch, tiled from a random offset to the LR size.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kgengine._version import __version__
from kgengine.atomic import exclusive_lock, remove_stale_tmp, save_json, save_npy
from kgengine.errors import BadImageError, KGEngineError, brief_list
from kgengine.hooks import JobHooks
from kgengine.imageio import NOISE_BANK_FILES, folder_image, read_image

NOISE_FILE, INDEX_FILE = NOISE_BANK_FILES  # (``noise_patches.npy``, ``noise_index.json``)
#: The lock of a bank's folder: one ``noise collect`` writes it at a time (0.9.29).
NOISE_LOCK = ".noise.lock"
#: The files :func:`collect_noise` writes, never read as photos.
OWN_FILES = (NOISE_FILE, INDEX_FILE)
#: Luma weights (ITU-R BT.601, as Pillow's ``convert("L")``).
LUMA = np.array([0.299, 0.587, 0.114])
#: Window elements (float64) whose statistics :func:`window_stats` takes at once (32 MB).
WINDOW_BUDGET = 2**22


@dataclass(frozen=True)
class NoiseBank:
    """Loaded real-noise patches.

    Attributes:
        patches: (N, P, P, 3) float32, zero mean per patch and channel, [0, 1] units.
        path: the ``.npy`` file they were read from.
        index: the JSON index ({} when the file has none next to it).
    """

    patches: np.ndarray
    path: str
    index: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    @property
    def size(self) -> int:
        """The patch side P."""
        return int(self.patches.shape[1])

    def fingerprint(self) -> str:
        """SHA-256 (hex, 16 digits) of the patch array: a rerun with other patches is refused."""
        return hashlib.sha256(np.ascontiguousarray(self.patches).tobytes()).hexdigest()[:16]


def flat_patches(
    img: np.ndarray, patch: int, stride: int, max_var: float, min_mean: float = 0.0,
    max_mean: float = 255.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The flat, mean-removed patches of one image (module docstring, steps 1-3).

    Args:
        img: (H, W, 3) float RGB in [0, 1].
        patch: P. stride: step between patch corners. max_var, min_mean, max_mean: the
            thresholds on the luma variance and mean, 0-255 units.
    Returns:
        ``(n, P, P, 3)`` float32 patches and one record per patch (``y``, ``x``, ``var``,
        ``mean``).
    """
    h, w = img.shape[:2]
    if h < patch or w < patch:
        return np.zeros((0, patch, patch, 3), np.float32), []
    luma = 255.0 * (img.astype(np.float64) @ LUMA)  # (H, W)
    var, mean = window_stats(luma, patch, stride)
    keep = np.argwhere((var < max_var) & (mean >= min_mean) & (mean <= max_mean))
    out = np.empty((len(keep), patch, patch, 3), np.float32)
    records = []
    for n, (iy, ix) in enumerate(keep):
        y, x = int(iy) * stride, int(ix) * stride
        p = img[y : y + patch, x : x + patch].astype(np.float64)
        out[n] = p - p.mean(axis=(0, 1))
        records.append({"y": y, "x": x, "var": float(var[iy, ix]), "mean": float(mean[iy, ix])})
    return out, records


def window_stats(luma: np.ndarray, patch: int, stride: int,
                 budget: int = WINDOW_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Variance and mean of every ``P × P`` window of ``luma`` whose corner is on the stride
    grid: ``(ny, nx)`` float64 each, ``ny = (H − P) // stride + 1`` (``nx`` likewise).

    Taken a band of window rows at a time, at most ``budget`` window elements each (NumPy's
    ``var`` makes a copy of the windows it reads), so memory stays bounded at any stride.
    """
    win = np.lib.stride_tricks.sliding_window_view(luma, (patch, patch))[::stride, ::stride]
    ny, nx = win.shape[:2]
    var, mean = np.empty((ny, nx)), np.empty((ny, nx))
    rows = max(1, budget // (nx * patch * patch))
    for r in range(0, ny, rows):
        band = win[r : r + rows]
        var[r : r + rows], mean[r : r + rows] = band.var(axis=(-2, -1)), band.mean(
            axis=(-2, -1))
    return var, mean


def list_photos(inputs: list[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                log: Callable[[str], None] = lambda m: None) -> list[Path]:
    """Image files: each input file, and the image files directly in each input folder.

    The files of a noise bank (:data:`OWN_FILES` in ``out_dir``, or next to a
    :data:`INDEX_FILE`) are left out, named or not, with one ``log`` line saying so: a
    rerun with ``-o`` the photo folder does not read its own patches as a photo.
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if folder_image(p))
        elif item.is_file():
            files.append(item)
        else:
            raise KGEngineError(f"{item}: no such file or folder")
    seen: set[Path] = set()  # a photo named twice (a folder and its file) is read once
    files = [p for p in files if not (_real(p) in seen or seen.add(_real(p)))]
    own = [p for p in files if _own_output(p, out_dir)]
    if own:
        log(f"skip {brief_list(own, 3)}: kgengine never reads its own outputs as input")
        files = [p for p in files if not _own_output(p, out_dir)]
    if not files:
        raise KGEngineError(f"no images in {', '.join(map(str, inputs))}")
    return files


def _real(path: Path) -> Path:
    """``path`` resolved, or as it is where it cannot be (a link loop: it fails when read)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


def _own_output(path: Path, out_dir: str | os.PathLike | None) -> bool:
    """Whether ``path`` is a file :func:`collect_noise` writes: one of :data:`OWN_FILES`, in
    ``out_dir`` or next to a noise index."""
    if path.name not in OWN_FILES:
        return False
    here = out_dir is not None and path.parent.resolve() == Path(out_dir).resolve()
    return here or (path.parent / INDEX_FILE).is_file()


def check_collect_args(patch: int, stride: int | None, max_var: float, min_mean: float,
                       max_mean: float) -> None:
    """Raise unless ``2 <= patch <= 1024``, ``stride`` (None: P) ``>= 1``, ``max_var > 0``
    and ``min_mean <= max_mean`` (NaN refused), with one line naming the option."""
    if not 2 <= patch <= 1024:
        raise KGEngineError(f"--patch must be in [2, 1024], got {patch}")
    if stride is not None and stride < 1:
        raise KGEngineError(f"--stride must be at least 1, got {stride}")
    if not max_var > 0:
        raise KGEngineError(f"--max-var must be > 0, got {max_var}")
    if not min_mean <= max_mean:
        raise KGEngineError(f"--min-mean must be at most --max-mean, got {min_mean} and "
                            f"{max_mean}")


@dataclass
class NoiseReport:
    """What :func:`collect_noise` did."""

    out_dir: Path
    images: int  # photos read
    patches: int  # patches kept
    failed: list[str] = field(default_factory=list)  # one line per bad photo


def collect_noise(
    inputs: list[str | os.PathLike], out_dir: str | os.PathLike, *, patch: int = 64,
    stride: int | None = None, max_var: float = 20.0, min_mean: float = 0.0,
    max_mean: float = 255.0, hooks: JobHooks | None = None,
) -> NoiseReport:
    """Collect real-noise patches from photos into ``out_dir`` (module docstring).

    Args:
        inputs: photo files and folders (their image files, not sub-folders).
        patch, stride, max_var, min_mean, max_mean: see :func:`flat_patches`.
        hooks: ``log`` (a noise bank's own files left out, :func:`list_photos`),
            ``total``, then ``item_finished(name, "done"|"failed", detail)`` per photo.
    Raises:
        KGEngineError: bad arguments, no photos, or no flat patch at all.
    """
    hooks = hooks or JobHooks()
    check_collect_args(patch, stride, max_var, min_mean, max_mean)
    stride = patch if stride is None else stride
    files = list_photos(inputs, out_dir, hooks.log)
    hooks.total(len(files))
    report, stacks, records = NoiseReport(Path(out_dir), 0, 0), [], []
    for path in files:
        try:
            found, recs = flat_patches(read_image(path), patch, stride, max_var, min_mean,
                                       max_mean)
        except BadImageError as exc:
            report.failed.append(str(exc))
            hooks.item_finished(path.name, "failed", str(exc))
            continue
        report.images += 1
        stacks.append(found)
        records += [{"source": str(path.resolve()), **r} for r in recs]
        hooks.item_finished(path.name, "done", "")
    if not records:
        raise KGEngineError(f"no flat patch found in {report.images} photos (patch {patch}, "
                            f"var < {max_var}); try a larger --max-var or a smaller --patch")
    report.patches = len(records)
    with exclusive_lock(report.out_dir, NOISE_LOCK,
                        "another kgengine noise collect is writing this folder"):
        _save_bank(report.out_dir, np.concatenate(stacks), {
        "format": "kgengine-noise-patches", "kgengine_version": __version__,
        "units": "[0,1] RGB, per-patch per-channel mean removed", "patch_size": patch,
        "stride": stride, "max_var": max_var, "min_mean": min_mean, "max_mean": max_mean,
        "count": len(records), "patches": records,
    })
    return report


def _save_bank(out: Path, patches: np.ndarray, index: dict) -> None:
    """Write the patches, then their index, into ``out`` (holding its lock). The old index
    goes first and a killed run's temporary files with it: a write that fails or is cut
    short leaves patches without an index, which :func:`load_noise_bank` reads as patches
    of unknown origin, never new patches next to the old run's index (0.9.29)."""
    remove_stale_tmp(out)
    (out / INDEX_FILE).unlink(missing_ok=True)
    save_npy(out / NOISE_FILE, patches)
    save_json(out / INDEX_FILE, index)


def load_noise_bank(path: str | os.PathLike) -> NoiseBank:
    """Read the patches of :func:`collect_noise` (a folder, or the ``.npy`` file).

    Raises:
        KGEngineError: no such file, not a ``.npy`` file, not a (N, P, P, 3) finite float
            array, empty, or an unreadable index.
    """
    path = Path(path)
    npy = path / NOISE_FILE if path.is_dir() else path
    try:
        arr = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a damaged .npz too
        raise KGEngineError(f"{npy}: cannot read noise patches ({exc})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise KGEngineError(f"{npy}: cannot read noise patches (not a .npy file)")
    if (arr.ndim != 4 or arr.shape[1] != arr.shape[2] or arr.shape[3] != 3 or arr.size == 0
            or not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all()):
        raise KGEngineError(f"{npy}: expected finite (N,P,P,3) float patches, got "
                            f"{arr.shape} {arr.dtype}")
    index_path = npy.parent / INDEX_FILE
    try:
        index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() \
            else {}
    except (OSError, ValueError) as exc:
        raise KGEngineError(f"{index_path}: not a valid noise index ({exc})") from None
    if isinstance(index, dict) and (index.get("count", len(arr)) != len(arr)
                                    or index.get("patch_size", arr.shape[1]) != arr.shape[1]):
        raise KGEngineError(f"{index_path}: describes {index.get('count')} patches of "
                            f"{index.get('patch_size')} px, but {npy.name} holds {len(arr)} "
                            f"of {arr.shape[1]} px (files of two runs); run noise collect "
                            "again")
    return NoiseBank(arr.astype(np.float32, copy=False), str(npy.resolve()), index)
