"""Degrade a folder of HR images with a kernel pool into LR/HR training pairs (onnxruntime).

What :func:`degrade_folder` does, and the choices it makes:

- **Inputs**: the image files directly in ``hr_dir`` (not sub-folders; suffixes
  :data:`IMAGE_SUFFIXES`), read with :func:`kgengine.imageio.read_image` as float32 RGB.
  Two files with the same stem (``a.png``, ``a.jpg``) are refused up front, since both
  would write ``lr/a.png``.
- **Pairs align exactly**: each HR image is cropped (top-left kept) to ``H - H % s`` by
  ``W - W % s`` before degrading, so ``LR size = HR size / s``. When a crop was needed the
  cropped HR is written to ``out_dir/hr/<stem>.png`` (8-bit PNG) and the manifest's ``hr``
  points there; otherwise ``hr`` is the original file (no copy).
- **Kernel and noise per image** depend only on ``(seed, HR file name)`` through SHA-256
  (:func:`kernel_row`, :func:`noise_seed`), so adding or removing files never changes the
  kernel or the noise of the others, and the batch size or provider does not either.
  Noise: ``lr += sigma * N(0,1)``, the unit noise being
  ``np.random.default_rng(noise_seed).standard_normal((3, h, w), dtype=np.float32)``.
- **Batching**: images of equal (cropped) size are stacked into batches of up to
  ``batch``; every other size runs in its own batches (no padding, no resizing).
- **HR size limit**: both cropped sides must exceed the pool's kernel size (ONNX reflect
  padding, see :mod:`kgengine.onnx_export`); smaller images are reported as failures.
- **Outputs**: ``out_dir/lr/<stem>.png`` (8-bit, written atomically), ``out_dir/manifest.jsonl``
  (one JSON object per pair: everything needed to rebuild it, see :func:`rebuild_lr`;
  relative paths are relative to ``out_dir``) and ``out_dir/degrade_settings.json``.
- **Resume**: a file whose manifest entry and output files exist is skipped. The manifest
  is appended after each batch and rewritten (sorted) at the end. A rerun into the same
  ``out_dir`` with another HR folder, seed, noise, scale or pool content is refused.
- **Bad files**: a file that cannot be read (or is too small) is reported through
  ``on_error`` as one line naming it and skipped; the others finish. The report lists the
  failures; the ``degrade`` command then exits with code 1.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kgengine._version import __version__
from kgengine.atomic import atomic_write, save_json
from kgengine.errors import BadImageError, KGEngineError
from kgengine.imageio import read_image, write_png
from kgengine.onnx_export import build_pool_model, check_hr_size
from kgengine.pool import KernelPool, load_pool

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".npy")
MANIFEST = "manifest.jsonl"
SETTINGS = "degrade_settings.json"
#: Settings that must match to resume into an existing output folder.
RESUME_KEYS = ("scale", "noise_sigma", "seed", "pool_fingerprint", "hr_dir")


@dataclass
class DegradeReport:
    """What a :func:`degrade_folder` run did."""

    out_dir: Path
    total: int  # HR files found
    written: int  # pairs made by this run
    skipped: int  # pairs already there (resume)
    failed: list[str] = field(default_factory=list)  # one line per bad file
    provider: str = ""  # onnxruntime provider used ("" when nothing was left to do)
    provider_notes: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST


def _hash_int(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def kernel_row(seed: int, name: str, n_kernels: int) -> int:
    """Pool row for HR file ``name``: ``sha256("kgengine-kernel:{seed}:{name}") mod N``."""
    return _hash_int("kgengine-kernel", seed, name) % n_kernels


def noise_seed(seed: int, name: str) -> int:
    """Noise seed (63-bit) for HR file ``name``: from ``sha256("kgengine-noise:{seed}:{name}")``."""
    return _hash_int("kgengine-noise", seed, name)


def unit_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Unit Gaussian noise, float32, of ``shape`` (C, h, w), reproducible from ``seed``."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def crop_to_scale(img: np.ndarray, scale: int) -> np.ndarray:
    """``img[:H - H % s, :W - W % s]``: the top-left part whose sides are multiples of s."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def list_hr_files(hr_dir: str | os.PathLike) -> list[Path]:
    """Image files directly in ``hr_dir``, sorted by name; refuses duplicate stems."""
    hr_dir = Path(hr_dir)
    if not hr_dir.is_dir():
        raise KGEngineError(f"{hr_dir}: no such folder")
    files = sorted(
        p for p in hr_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise KGEngineError(f"{hr_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise KGEngineError(f"{p}: same stem as {seen[p.stem].name} (both -> lr/{p.stem}.png)")
        seen[p.stem] = p
    return files


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """Entries of a ``manifest.jsonl`` by HR file name; unparsable lines are ignored."""
    entries: dict[str, dict] = {}
    path = Path(path)
    if not path.is_file():
        return entries
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            entries[entry["name"]] = entry
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
    return entries


def _write_manifest(path: Path, entries: dict[str, dict]) -> None:
    lines = "".join(json.dumps(entries[k]) + "\n" for k in sorted(entries))

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(lines)

    atomic_write(path, write)


def _append_manifest(path: Path, entries: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(e) + "\n" for e in entries))
        fh.flush()
        os.fsync(fh.fileno())


def _is_done(out_dir: Path, entry: dict | None) -> bool:
    if entry is None or not (out_dir / entry["lr"]).is_file():
        return False
    return Path(entry["hr"]).is_absolute() or (out_dir / entry["hr"]).is_file()


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / SETTINGS
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise KGEngineError(f"{path}: not valid JSON; use another output folder") from None
        diff = [k for k in RESUME_KEYS if old.get(k) != settings[k]]
        if diff:
            k = diff[0]
            raise KGEngineError(
                f"{out_dir}: holds pairs made with {k}={old.get(k)!r}, not {settings[k]!r}; "
                "use another output folder"
            )
    else:
        save_json(path, settings)


def _probe_size(path: Path) -> tuple[int, int] | None:
    """(H, W) from the file header without decoding, or None."""
    try:
        if path.suffix.lower() == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return int(shape[0]), int(shape[1])
        from PIL import Image

        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except Exception:  # noqa: BLE001 - the real read reports the problem
        return None


def _batches(files: list[Path], scale: int, batch: int) -> list[list[Path]]:
    """Group files by cropped size (probed), then chunk each group into ``batch``-sized lists."""
    groups: dict[object, list[Path]] = {}
    for p in files:
        hw = _probe_size(p)
        key: object = (hw[0] - hw[0] % scale, hw[1] - hw[1] % scale) if hw else p
        groups.setdefault(key, []).append(p)
    return [g[i : i + batch] for g in groups.values() for i in range(0, len(g), batch)]


def degrade_folder(
    hr_dir: str | os.PathLike,
    kernels: str | os.PathLike | KernelPool,
    out_dir: str | os.PathLike,
    *,
    scale: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    batch: int = 8,
    provider: str = "auto",
    threads: int | None = None,
    on_total: Callable[[int], None] | None = None,
    on_advance: Callable[[int], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_provider: Callable[[str, list[str]], None] | None = None,
) -> DegradeReport:
    """Make LR/HR pairs from every HR image in ``hr_dir`` (see the module doc).

    Args:
        hr_dir: folder of HR images.
        kernels: a :class:`KernelPool`, or what :func:`kgengine.pool.load_pool` reads.
        out_dir: output folder (created; resumable).
        scale: downscaling factor; default: the pool's.
        noise: sigma of additive Gaussian noise on the LR, in [0, 1] units (0 = none).
        seed: picks each image's kernel and noise (with its file name).
        batch: up to this many equal-size images per onnxruntime call.
        provider: ``auto|tensorrt|cuda|cpu`` (:func:`kgengine.providers.make_session`).
        threads: CPU threads for onnxruntime (default: all usable cores).
        on_total, on_advance, on_error, on_provider: progress callbacks: number of files;
            files finished (written, skipped or failed); one-line failure message; provider
            chosen and why faster ones were skipped.
    Raises:
        KGEngineError: bad arguments, pool, folder, or provider (not for bad HR files).
    """
    from kgengine.providers import make_session

    hr_dir, out_dir = Path(hr_dir), Path(out_dir)
    pool = kernels if isinstance(kernels, KernelPool) else load_pool(kernels, scale)
    scale = pool.scale if scale is None else int(scale)
    if scale != pool.scale:
        raise KGEngineError(f"the kernel pool is for x{pool.scale}, but scale {scale} was asked")
    if len(pool) == 0:
        raise KGEngineError("the kernel pool is empty")
    if batch < 1:
        raise KGEngineError(f"batch must be >= 1, got {batch}")
    if not (np.isfinite(noise) and noise >= 0):
        raise KGEngineError(f"noise must be a finite sigma >= 0, got {noise}")
    files = list_hr_files(hr_dir)
    pool_path = "<in memory>" if isinstance(kernels, KernelPool) else str(Path(kernels).resolve())
    settings = {
        "scale": scale, "noise_sigma": float(noise), "seed": int(seed),
        "pool_fingerprint": pool.fingerprint(), "kernel_pool": pool_path,
        "kernel_size": pool.kernel_size, "n_kernels": len(pool), "hr_dir": str(hr_dir.resolve()),
        "kgengine_version": __version__,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, settings)
    manifest = out_dir / MANIFEST
    entries = read_manifest(manifest)
    _write_manifest(manifest, entries)  # drop a line cut short by a crash before appending
    todo = [p for p in files if not _is_done(out_dir, entries.get(p.name))]
    report = DegradeReport(out_dir, len(files), 0, len(files) - len(todo))
    if on_total:
        on_total(len(files))
    if on_advance and report.skipped:
        on_advance(report.skipped)
    if not todo:
        return report

    model = build_pool_model(pool.kernel_size, scale, noise=noise > 0)
    choice = make_session(model.SerializeToString(), provider, threads,
                          trt_cache=out_dir / ".trt_cache")
    report.provider, report.provider_notes = choice.provider, choice.notes
    if on_provider:
        on_provider(choice.provider, choice.notes)
    job = _Job(pool, scale, float(noise), int(seed), out_dir, pool_path, choice.provider)

    def fail(msg: str) -> None:
        report.failed.append(msg)
        if on_error:
            on_error(msg)
        if on_advance:
            on_advance(1)

    batches = _batches(todo, scale, batch)
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(2) as writer:
        pending = reader.submit(job.read, batches[0])
        for i in range(len(batches)):
            images, errors = pending.result()
            if i + 1 < len(batches):
                pending = reader.submit(job.read, batches[i + 1])  # overlap I/O and compute
            for msg in errors:
                fail(msg)
            for group in _same_size(images):
                lr = job.run(choice.session, group)
                new = list(writer.map(job.write, group, lr))
                _append_manifest(manifest, new)
                for e in new:
                    entries[e["name"]] = e
                report.written += len(new)
                if on_advance:
                    on_advance(len(new))
    _write_manifest(manifest, entries)
    return report


def _same_size(images: list[tuple[Path, np.ndarray, tuple[int, int]]]) -> list[list]:
    groups: dict[tuple[int, ...], list] = {}
    for item in images:
        groups.setdefault(item[1].shape, []).append(item)
    return list(groups.values())


@dataclass
class _Job:
    """The per-batch steps of :func:`degrade_folder`, with its fixed settings."""

    pool: KernelPool
    scale: int
    noise: float
    seed: int
    out_dir: Path
    pool_path: str
    provider: str

    def read(self, paths: list[Path]) -> tuple[list, list[str]]:
        """Read and crop; returns ``[(path, hr (H',W',3), original (H, W))]`` and errors."""
        images, errors = [], []
        for p in paths:
            try:
                img = read_image(p)
                crop = crop_to_scale(img, self.scale)
                try:
                    check_hr_size(crop.shape[0], crop.shape[1], self.pool.kernel_size)
                except KGEngineError as exc:
                    raise BadImageError(p, str(exc)) from None
            except BadImageError as exc:
                errors.append(str(exc))
                continue
            images.append((p, crop, img.shape[:2]))
        return images, errors

    def run(self, session: Any, group: list) -> np.ndarray:
        """Degrade equal-size images: returns LR (n, 3, h, w) float32."""
        hr = np.ascontiguousarray(np.stack([g[1] for g in group]).transpose(0, 3, 1, 2))
        rows = [kernel_row(self.seed, g[0].name, len(self.pool)) for g in group]
        feeds = {"hr": hr, "kernel": self.pool.kernels[rows][:, None]}
        if self.noise > 0:
            h, w = -(-hr.shape[2] // self.scale), -(-hr.shape[3] // self.scale)
            feeds["noise_sigma"] = np.full(len(group), self.noise, dtype=np.float32)
            feeds["noise"] = np.stack(
                [unit_noise(noise_seed(self.seed, g[0].name), (3, h, w)) for g in group]
            )
        return session.run(["lr"], feeds)[0]

    def write(self, item: tuple, lr: np.ndarray) -> dict:
        """Write one LR (and cropped HR) PNG; return its manifest entry."""
        path, crop, (h0, w0) = item
        stem = path.stem
        write_png(self.out_dir / "lr" / f"{stem}.png", lr.transpose(1, 2, 0))
        source = str(path.resolve())
        hr = source
        if crop.shape[:2] != (h0, w0):
            hr = f"hr/{stem}.png"
            write_png(self.out_dir / hr, crop)
        row = kernel_row(self.seed, path.name, len(self.pool))
        return {
            "name": path.name,
            "hr": hr,
            "hr_source": source,
            "lr": f"lr/{stem}.png",
            "hr_size": [h0, w0],
            "crop": list(crop.shape[:2]),
            "lr_size": list(lr.shape[1:]),
            "scale": self.scale,
            "kernel_id": self.pool.ids[row],
            "kernel_row": row,
            "kernel_source": self.pool.sources[row],
            "kernel_pool": self.pool_path,
            "noise_sigma": self.noise,
            "noise_seed": noise_seed(self.seed, path.name) if self.noise > 0 else None,
            "seed": self.seed,
            "provider": self.provider,
        }


def rebuild_lr(entry: dict, pool: KernelPool) -> np.ndarray:
    """Rebuild a pair's LR from its manifest entry with the PyTorch reference (float64).

    ``LR = degrade_torch(crop(HR), pool.kernels[kernel_row], scale) + sigma * unit_noise``
    where ``crop`` keeps the top-left ``crop`` rows/columns. Returns (h, w, 3) float64,
    before 8-bit rounding (the PNG holds ``round(clip(LR, 0, 1) * 255)``).
    """
    import torch

    from kgengine.degrade import degrade_torch

    img = read_image(entry["hr_source"])
    h, w = entry["crop"]
    hr = torch.from_numpy(np.ascontiguousarray(img[:h, :w].transpose(2, 0, 1))).double()[None]
    k = torch.from_numpy(pool.kernels[entry["kernel_row"]].astype(np.float64))
    lr = degrade_torch(hr, k, entry["scale"])[0].numpy()
    if entry["noise_sigma"] > 0:
        lr = lr + entry["noise_sigma"] * unit_noise(entry["noise_seed"], lr.shape)
    return lr.transpose(1, 2, 0)
