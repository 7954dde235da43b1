"""Planning the pairs: which HR files, and which kernel, noise and crop each one gets.

Everything drawn per image depends only on ``(seed, HR file name)`` through SHA-256
(:func:`kernel_row`, :func:`noise_seed`), so adding or removing files never changes the
kernel or the noise of the others, and the batch size or provider does not either.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kgengine import imageio
from kgengine._version import __version__
from kgengine.config import MAX_SEED
from kgengine.errors import KGEngineError
from kgengine.pool import KernelPool, filter_pool, load_pool, top_threshold

IMAGE_SUFFIXES = imageio.IMAGE_SUFFIXES  # one listing rule: imageio.folder_image
#: Scales of the pairs :func:`degrade_folder` makes: those of the kernels KernelGAN
#: estimates (``kgengine pool import --scale 2|4``).
DEGRADE_SCALES = (2, 4)


def check_scale(scale: int | None, option: str = "scale") -> None:
    """Raise unless ``scale`` (None: not given) is one of :data:`DEGRADE_SCALES`."""
    if scale is not None and scale not in DEGRADE_SCALES:
        raise KGEngineError(f"{option} must be 2 or 4, got {scale}")


def hash_int(*parts: object) -> int:
    """63-bit int from ``sha256(":".join(parts))``, little-endian first 8 bytes.

    The text is UTF-8 with ``surrogateescape``: a file name that is not valid UTF-8 (its
    undecodable bytes held as lone surrogates by ``os.listdir``) hashes as its raw bytes.
    """
    text = ":".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def kernel_row(seed: int, name: str, n_kernels: int) -> int:
    """Pool row for HR file ``name``: ``sha256("kgengine-kernel:{seed}:{name}") mod N``."""
    return hash_int("kgengine-kernel", seed, name) % n_kernels


def noise_seed(seed: int, name: str) -> int:
    """Noise seed (63-bit) for HR file ``name``: from ``sha256("kgengine-noise:{seed}:{name}")``."""
    return hash_int("kgengine-noise", seed, name)


def unit_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Unit Gaussian noise, float32, of ``shape`` (C, h, w), reproducible from ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def crop_to_scale(img: np.ndarray, scale: int) -> np.ndarray:
    """``img[:H - H % s, :W - W % s]``: the top-left part whose sides are multiples of s.

    Args:
        img: (H, W[, C]) image. Returns a view (H - H % s, W - W % s[, C]).
    """
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def list_hr_files(hr_dir: str | os.PathLike) -> list[Path]:
    """Image files directly in ``hr_dir``, sorted by name; refuses duplicate stems.

    Raises:
        KGEngineError: no such folder, no images, or two files with one stem (``a.png``,
            ``a.jpg``: both would write ``lr/a.png``).
    """
    hr_dir = Path(hr_dir)
    if not hr_dir.is_dir():
        raise KGEngineError(f"{hr_dir}: no such folder")
    files = sorted(p for p in hr_dir.iterdir() if imageio.folder_image(p))
    if not files:
        raise KGEngineError(f"{hr_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise KGEngineError(f"{p}: same stem as {seen[p.stem].name} (both -> lr/{p.stem}.png)")
        seen[p.stem] = p
    return files


def probe_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file header without decoding, or None (the real read reports why)."""
    try:
        w, h = imageio.image_size(path)  # EXIF orientation applied, as the read will be
    except KGEngineError:  # the real read reports the problem
        return None
    return h, w


def size_batches(files: list[Path], scale: int, batch: int) -> list[list[Path]]:
    """Group files by cropped size (probed), then chunk each group into ``batch``-sized lists.

    Files whose size cannot be probed each form their own group.
    """
    groups: dict[object, list[Path]] = {}
    for p in files:
        hw = probe_size(p)
        key: object = (hw[0] - hw[0] % scale, hw[1] - hw[1] % scale) if hw else p
        groups.setdefault(key, []).append(p)
    return [g[i : i + batch] for g in groups.values() for i in range(0, len(g), batch)]


@dataclass(frozen=True)
class PairPlan:
    """The fixed settings of a degradation job: pool, scale, noise sigma, seed.

    Attributes:
        pool: the kernels, (N, K, K) float32.
        scale: the downscaling factor (= the pool's).
        noise: sigma of the Gaussian noise added to the LR, in [0, 1] units (0 = none).
        seed: with the file name, picks each image's kernel row and noise seed.
        pool_path: where the pool was read from (``"<in memory>"`` when given as an object).
        min_confidence: only the pool's kernels with a known confidence >= this were kept
            (``pool`` holds just those; row numbers count in it); None: every kernel.
    """

    pool: KernelPool
    scale: int
    noise: float
    seed: int
    pool_path: str
    min_confidence: float | None = None

    def row(self, name: str) -> int:
        """The pool row of HR file ``name`` (:func:`kernel_row`)."""
        return kernel_row(self.seed, name, len(self.pool))

    def noise_seed(self, name: str) -> int | None:
        """The noise seed of HR file ``name`` (:func:`noise_seed`), None without noise."""
        return noise_seed(self.seed, name) if self.noise > 0 else None

    def settings(self, hr_dir: Path) -> dict[str, Any]:
        """The record of ``degrade_settings.json`` for a job over ``hr_dir``."""
        pool = self.pool
        return {
            "scale": self.scale, "noise_sigma": self.noise, "seed": self.seed,
            "pool_fingerprint": pool.fingerprint(), "kernel_pool": self.pool_path,
            "kernel_size": pool.kernel_size, "n_kernels": len(pool),
            "min_confidence": self.min_confidence,
            "hr_dir": str(hr_dir.resolve()), "kgengine_version": __version__,
        }


def make_plan(
    kernels: str | os.PathLike | KernelPool, scale: int | None, noise: float, seed: int,
    batch: int, min_confidence: float | None = None, top: float | None = None,
) -> PairPlan:
    """Load the pool (only its kernels with confidence >= ``min_confidence``, when given)
    and check the job's arguments (see :func:`degrade_folder`). ``top``: instead of
    ``min_confidence``, the threshold that keeps the pool's most confident fraction ``top``
    (:func:`kgengine.pool.top_threshold`; the plan records that threshold).

    Raises:
        KGEngineError: a scale other than 2 or 4 (asked, or the pool's), a bad pool, a scale
            the pool is not for, an empty pool, no kernel passing ``min_confidence``, both
            ``min_confidence`` and ``top``, a bad ``top``, ``batch < 1``, a seed outside
            [0, 2**63 - 1], or a noise sigma that is not finite and >= 0.
    """
    check_scale(scale)
    if not 0 <= seed <= MAX_SEED:
        raise KGEngineError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    if top is not None:
        if min_confidence is not None:
            raise KGEngineError("give at most one of --min-confidence and --top")
        full = kernels if isinstance(kernels, KernelPool) else load_pool(kernels, scale)
        where = "kernel pool" if isinstance(kernels, KernelPool) else str(kernels)
        min_confidence = top_threshold(full, top, where)
    if isinstance(kernels, KernelPool):
        pool = kernels if min_confidence is None else filter_pool(kernels, min_confidence)
    else:
        pool = load_pool(kernels, scale, min_confidence=min_confidence)
    scale = pool.scale if scale is None else int(scale)
    if pool.scale not in DEGRADE_SCALES:
        where = "the kernel pool" if isinstance(kernels, KernelPool) else str(kernels)
        raise KGEngineError(f"{where}: holds x{pool.scale} kernels; degrade makes x2 or x4 "
                            "pairs only")
    if scale != pool.scale:
        raise KGEngineError(f"the kernel pool is for x{pool.scale}, but scale {scale} was asked")
    if len(pool) == 0:
        raise KGEngineError("the kernel pool is empty")
    if batch < 1:
        raise KGEngineError(f"batch must be >= 1, got {batch}")
    if not (np.isfinite(noise) and noise >= 0):
        raise KGEngineError(f"noise must be a finite sigma >= 0, got {noise}")
    pool_path = "<in memory>" if isinstance(kernels, KernelPool) else str(Path(kernels).resolve())
    threshold = None if min_confidence is None else float(min_confidence)
    return PairPlan(pool, scale, float(noise), int(seed), pool_path, threshold)
