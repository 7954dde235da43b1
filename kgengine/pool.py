"""Kernel pools: many SR kernels in one array, with where each came from.

A :class:`KernelPool` holds ``N`` kernels zero-padded to one common odd size ``K`` and
centred (the kernel's centre index ``(h//2, w//2)`` lands on ``(K//2, K//2)``, which leaves
``degrade`` unchanged: see :func:`kgengine.kernel.pad_to`). Pools are read from

- the single file ``kernel_pool.npz`` written by :func:`save_pool` (the farm writes these):
  arrays ``kernels (N,K,K) float32``, ``ids (N,) str``, ``sources (N,) str``,
  ``seeds (N,) int64``, ``scale () int64``, ``confidences (N,) float64`` (each kernel's
  :attr:`~kgengine.api.EstimateResult.confidence` in [0, 1], NaN where unknown; a pool
  written before this array existed reads as all NaN) and ``index`` (a JSON string: one
  record per row with its id, source image, seed, confidence (null when unknown) and
  estimation report); no pickled objects, so ``np.load(path, allow_pickle=False)`` reads it
  (compressed since 0.9.27, which ``np.load`` reads as before; older pools still load);
- a farm's pool folder: its ``kernel_pool.npz``, or at scale 4 its
  :data:`POOL_FILE_X4` where it has one (``farm --x4``);
- a folder of ``.npy`` / ``.mat`` kernels (:func:`kgengine.kernel_files.folder_kernel_files`:
  result files ``<name>_kernel_x<s>`` of one scale only; ``.mat``:
  :func:`kgengine.kernel_files.mat_kernel`; a KAIR set is refused, ``kgengine pool
  import`` reads it), or a single such file.

Every kernel is checked (2-D, finite, sum > 0) and renormalised to sum 1; a bad file, or a
confidence outside [0, 1] (NaN is "unknown"), raises :class:`~kgengine.errors.KGEngineError`
naming the file. ``load_pool(..., min_confidence=c)`` keeps only the kernels with a known
confidence ``>= c`` (:func:`filter_pool`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np

from kgengine.atomic import atomic_write, json_default
from kgengine.errors import KGEngineError, shown
from kgengine.kernel import check_kernel, check_scale, common_size, pad_to
from kgengine.kernel_files import RESULT_NAME, folder_kernel_files, read_kernel_file

#: File name :func:`save_pool` uses when given a folder.
POOL_FILE = "kernel_pool.npz"
#: A farm's x4 pool beside it (``farm --x4``), which a farm folder read at scale 4 gives.
POOL_FILE_X4 = "kernel_pool_x4.npz"
#: Rounding allowed outside [0, 1] in a confidence (a mean of cosines can be 1 + 2e-16),
#: and in a kernel's sum (float32 rounding of a 37×37 kernel: < 1e-5).
CONF_TOL, SUM_TOL = 1e-9, 1e-3


@dataclass
class KernelPool:
    """``N`` kernels of one common odd size ``K``, with their provenance.

    Attributes:
        kernels: (N, K, K) float32, each summing to 1, centred at ``(K//2, K//2)``.
        ids: N unique names (e.g. the source image's stem, or the kernel file's stem).
        sources: N strings: the image the kernel was estimated from, or the kernel file.
        seeds: N ints: the estimation seed (-1 when unknown).
        scale: the scale factor the kernels are for (2 or 4).
        reports: optional N dicts (estimation reports), stored in the ``index`` JSON.
        confidences: N floats in [0, 1], NaN (or None) where unknown; default all unknown.
            Stored as an (N,) float64 array.
    """

    kernels: np.ndarray
    ids: list[str]
    sources: list[str]
    seeds: list[int]
    scale: int
    reports: list[dict] | None = None
    confidences: np.ndarray | Sequence[float | None] | None = None

    def __post_init__(self) -> None:
        k = np.asarray(self.kernels, dtype=np.float32)
        if k.ndim != 3 or k.shape[1] != k.shape[2] or k.shape[1] % 2 == 0:
            raise KGEngineError(f"kernel pool: expected kernels (N,K,K) with K odd, got {k.shape}")
        n = k.shape[0]
        for name, val in (("ids", self.ids), ("sources", self.sources), ("seeds", self.seeds)):
            if len(val) != n:
                raise KGEngineError(f"kernel pool: {n} kernels but {len(val)} {name}")
        if self.reports is not None and len(self.reports) != n:
            raise KGEngineError(f"kernel pool: {n} kernels but {len(self.reports)} reports")
        conf = np.full(n, np.nan) if self.confidences is None else np.array(
            [np.nan if c is None else float(c) for c in self.confidences], dtype=np.float64)
        if conf.shape != (n,):
            raise KGEngineError(f"kernel pool: {n} kernels but {conf.size} confidences")
        bad = np.flatnonzero(~np.isnan(conf) & ~((conf >= -CONF_TOL) & (conf <= 1 + CONF_TOL)))
        if bad.size:
            raise KGEngineError(f"kernel pool: confidences must be in [0, 1] or NaN (unknown); "
                                f"row {bad[0]} ({self.ids[bad[0]]!r}) has {conf[bad[0]]:g}")
        if len({str(i) for i in self.ids}) != n:  # as stored: 1 and "1" are one id
            raise KGEngineError("kernel pool: kernel ids are not unique")
        self.scale = check_scale(self.scale)
        bad_seed = [v for v in self.seeds if isinstance(v, bool) or not isinstance(v, Integral)]
        if bad_seed:
            raise KGEngineError(f"kernel pool: seeds must be integers, got {bad_seed[0]!r}")
        sums = k.sum(axis=(1, 2), dtype=np.float64)
        bad = np.flatnonzero(~(np.abs(sums - 1.0) <= SUM_TOL))  # NaN/inf fail too
        if bad.size:
            raise KGEngineError(f"kernel pool: row {bad[0]} ({self.ids[bad[0]]!r}) sums to "
                                f"{sums[bad[0]]:g}, not 1 (make_pool checks and renormalises)")
        self.kernels = k
        self.ids = [str(i) for i in self.ids]
        self.sources = [str(s) for s in self.sources]
        self.seeds = [int(s) for s in self.seeds]
        self.confidences = conf

    def __len__(self) -> int:
        return self.kernels.shape[0]

    @property
    def kernel_size(self) -> int:
        """The common odd kernel size ``K``."""
        return int(self.kernels.shape[1])

    def fingerprint(self) -> str:
        """SHA-256 of the kernels, ids and scale: identifies the pool's content."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.kernels).tobytes())
        h.update(json.dumps([self.ids, self.scale]).encode())
        return h.hexdigest()

    def select(self, rows: Sequence[int] | np.ndarray) -> KernelPool:
        """A new pool of the given rows (in that order), with all their provenance."""
        rows = [int(i) for i in rows]
        return KernelPool(
            self.kernels[rows], [self.ids[i] for i in rows], [self.sources[i] for i in rows],
            [self.seeds[i] for i in rows], self.scale,
            None if self.reports is None else [self.reports[i] for i in rows],
            np.asarray(self.confidences)[rows])


def check_min_confidence(min_confidence: float) -> float:
    """``min_confidence`` as a float, or :class:`KGEngineError` unless it lies in [0, 1]."""
    try:
        value = float(min_confidence)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise KGEngineError(f"min confidence must be in [0, 1], got {min_confidence}")
    return value


def filter_pool(pool: KernelPool, min_confidence: float, where: str = "kernel pool"
                ) -> KernelPool:
    """The rows of ``pool`` whose confidence is ``>= min_confidence``, in pool order.

    Rows with unknown confidence (NaN) are dropped.

    Args:
        pool: the pool. min_confidence: the threshold in [0, 1].
        where: what the pool is, for messages (e.g. its file).
    Raises:
        KGEngineError: the threshold is outside [0, 1], or no row passes it (the message
            names ``where``, the threshold and the pool's highest known confidence).
    """
    threshold = check_min_confidence(min_confidence)
    conf = np.asarray(pool.confidences)
    keep = np.flatnonzero(conf >= threshold)  # NaN compares False: unknown is dropped
    if keep.size == 0:
        known = conf[np.isfinite(conf)]
        best = f"the highest is {known.max():.4g}" if known.size else "none is known"
        raise KGEngineError(
            f"{where}: no kernel has confidence >= {threshold:g} ({len(pool)} kernels, "
            f"{known.size} with a known confidence; {best})")
    return pool.select(keep)


def top_threshold(pool: KernelPool, fraction: float, where: str = "kernel pool") -> float:
    """The confidence that keeps the most confident ``fraction`` of a pool's kernels.

    With n kernels of known confidence, ``m = ceil(fraction · n)`` and the threshold is the
    m-th highest known confidence, so :func:`filter_pool` at it keeps those m kernels and any
    tied with the m-th (a few more where confidences tie). A fixed threshold keeps very
    different shares of different photos (0.5 keeps half of the synthetic benchmark's
    kernels, 2 % of sharp real photos'); a fraction ranks within the pool.

    Args:
        pool: the pool. fraction: in (0, 1]. where: what the pool is, for messages.
    Raises:
        KGEngineError: ``fraction`` outside (0, 1], or no kernel with a known confidence
            (the message names ``where``).
    """
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value <= 1.0:  # NaN fails too
        raise KGEngineError(f"top fraction must be in (0, 1], got {fraction}")
    known = np.sort(np.asarray(pool.confidences)[np.isfinite(pool.confidences)])[::-1]
    if known.size == 0:
        raise KGEngineError(f"{where}: no kernel has a known confidence ({len(pool)} kernels)")
    m = max(1, int(np.ceil(value * known.size - 1e-9)))  # the 1e-9: 0.3 · 10 is 3.0000000000000004
    return float(known[m - 1])


def make_pool(
    kernels: list[np.ndarray],
    ids: list[str],
    sources: list[str],
    scale: int,
    seeds: list[int] | None = None,
    reports: list[dict] | None = None,
    confidences: Sequence[float | None] | None = None,
) -> KernelPool:
    """Validate, renormalise and pad kernels of any sizes into a :class:`KernelPool`.

    ``confidences``: one per kernel, None/NaN where unknown (default: all unknown).
    """
    if not kernels:
        raise KGEngineError("kernel pool: no kernels")
    checked = [check_kernel(k, src) for k, src in zip(kernels, sources, strict=True)]
    size = common_size(*checked)
    stack = np.stack([pad_to(k, size) for k in checked]).astype(np.float32)
    seeds = [-1] * len(checked) if seeds is None else seeds
    return KernelPool(stack, list(ids), list(sources), list(seeds), scale, reports, confidences)


def save_pool(path: str | os.PathLike, pool: KernelPool) -> Path:
    """Write ``pool`` atomically as one ``.npz`` file (``path`` or ``path/kernel_pool.npz``).

    Returns the written file's path. Readable with ``np.load(..., allow_pickle=False)``.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        path = path / POOL_FILE
    if not len(pool):
        raise KGEngineError(f"{path}: the pool holds no kernels; nothing to save")
    reports = pool.reports or [None] * len(pool)
    index = [{"row": i, "id": pool.ids[i], "source": pool.sources[i], "seed": pool.seeds[i],
              "confidence": None if np.isnan(c := pool.confidences[i]) else float(c),
              "report": reports[i]} for i in range(len(pool))]
    arrays = {
        "kernels": pool.kernels.astype(np.float32),
        "ids": np.array(pool.ids, dtype=str),
        "sources": np.array(pool.sources, dtype=str),
        "seeds": np.array(pool.seeds, dtype=np.int64),
        "scale": np.array(pool.scale, dtype=np.int64),
        "confidences": np.asarray(pool.confidences, dtype=np.float64),
        "index": np.array(json.dumps(index, default=json_default)),
    }

    def write(tmp: str) -> None:  # compressed: the index is UTF-32 text (0.9.27: 17x smaller)
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def load_pool(path: str | os.PathLike, scale: int | None = None, *,
              min_confidence: float | None = None) -> KernelPool:
    """Read a pool file, a folder of kernel files, or a single kernel file.

    Args:
        path: ``kernel_pool.npz`` (from :func:`save_pool`; a folder holding one, such as a
            farm's pool folder, means that file), a folder of ``.npy``/``.mat``
            kernels (read in sorted file-name order; ids = file stems), or one such file.
        scale: the scale the kernels are used for. A pool file records its own scale and a
            different ``scale`` is an error; for folders and single files it defaults to 2.
        min_confidence: keep only the kernels whose confidence is known and ``>=`` this
            value in [0, 1] (:func:`filter_pool`); None keeps every kernel. Kernel files and
            pools written without confidences have none known.
    Raises:
        KGEngineError: naming the file and the problem (also when no kernel passes
            ``min_confidence``).
    """
    if min_confidence is not None:
        check_min_confidence(min_confidence)
    scale = None if scale is None else check_scale(scale, shown(path))
    pool = _read_pool(Path(path), scale)
    return pool if min_confidence is None else filter_pool(pool, min_confidence, str(path))


def _read_pool(path: Path, scale: int | None) -> KernelPool:
    """:func:`load_pool` without the confidence filter."""
    if path.is_dir() and scale == 4 and (path / POOL_FILE_X4).is_file():  # farm --x4
        path = path / POOL_FILE_X4
    elif path.is_dir() and (path / POOL_FILE).is_file():  # a farm's pool folder
        path = path / POOL_FILE
    if path.is_dir() and (path / "manifest.sqlite").is_file():  # farm.manifest.MANIFEST_FILE
        raise KGEngineError(f"{path}: a farm folder without {POOL_FILE} (no image done yet, or "
                            f"its run stopped before writing it); run kgengine farm -o {path}")
    if path.is_dir():
        files, ids, scale = folder_kernel_files(path, scale)
        kernels = [read_kernel_file(p) for p in files]
        return make_pool(kernels, ids, [str(p.resolve()) for p in files], scale)
    if not path.is_file():
        raise KGEngineError(f"{path}: no such kernel pool (file or folder)")
    if path.suffix.lower() in (".npy", ".mat"):  # a result file's name gives its scale
        named = RESULT_NAME.match(path.name)
        scale = scale or (int(named["scale"]) if named else 2)
        return make_pool([read_kernel_file(path)], [path.stem], [str(path.resolve())], scale)
    if path.suffix.lower() != ".npz":
        raise KGEngineError(f"{path}: not a kernel pool (expected .npz, .npy, .mat or a folder)")
    pool = _load_npz(path)
    if scale is not None and scale != pool.scale:
        raise KGEngineError(f"{path}: pool holds x{pool.scale} kernels, not x{scale}")
    return pool


def _load_npz(path: Path) -> KernelPool:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        why = f"{type(exc).__name__}: {exc}"
        raise KGEngineError(f"{path}: cannot read kernel pool ({why})") from None
    missing = [k for k in ("kernels", "ids", "sources", "seeds", "scale") if k not in arrays]
    if missing:
        raise KGEngineError(f"{path}: not a kernel pool, missing arrays {missing}")
    kernels = arrays["kernels"]
    if kernels.ndim != 3:
        raise KGEngineError(f"{path}: kernels must be (N,K,K), got shape {kernels.shape}")
    if kernels.shape[0] == 0:
        raise KGEngineError(f"{path}: the pool holds no kernels")
    scale = arrays["scale"]
    if scale.size != 1 or not np.issubdtype(scale.dtype, np.integer):
        raise KGEngineError(f"{path}: scale must be one integer, got a {scale.dtype} array "
                            f"of shape {scale.shape}")
    for name in ("ids", "sources", "seeds"):
        if arrays[name].ndim != 1:
            raise KGEngineError(f"{path}: {name} must be a 1-D array, got shape "
                                f"{arrays[name].shape}")
    reports = None
    if "index" in arrays:
        try:
            index = json.loads(str(arrays["index"]))
            rep = [row.get("report") for row in index]
            reports = rep if any(r is not None for r in rep) else None
        except (ValueError, AttributeError, TypeError):
            raise KGEngineError(f"{path}: the pool's index is not valid JSON") from None
    rows = [check_kernel(k, f"{path} row {i}") for i, k in enumerate(kernels)]
    confidences = arrays.get("confidences")  # None in pools written before it existed
    if confidences is not None and not np.issubdtype(confidences.dtype, np.floating):
        raise KGEngineError(f"{path}: confidences must be floats, got {confidences.dtype}")
    try:
        return KernelPool(
            np.stack(rows).astype(np.float32) if rows else kernels,
            arrays["ids"].tolist(),
            arrays["sources"].tolist(),
            arrays["seeds"].tolist(),
            int(scale.reshape(())),
            reports,
            None if confidences is None else confidences.reshape(-1),
        )
    except (KGEngineError, ValueError, TypeError) as exc:
        raise KGEngineError(f"{path}: {exc}") from None
