"""The farm's driver: inputs -> manifest rows -> batched trainings -> per-image files -> pool.

:func:`run_farm` does, in order (holding ``POOL_DIR/farm.lock``):

1. **Settings.** The job settings (seed, x4, dtype, mode and the full training config) are
   stored in the manifest by the first run; a later run takes the stored value of every
   option it does not give and refuses one that differs (results would mix).
2. **Clean-up and recovery.** Leftover ``.*.tmp`` files of atomic writes cut by a kill are
   removed; ``done`` rows whose report file has gone are queued again; rows left
   ``running`` by a killed job go back to ``pending``.
3. **Inputs.** INPUTs are expanded (:mod:`kgengine.farm.inputs`); each new file is hashed
   (SHA-256 of its content, the seed identity: :mod:`kgengine.farm.seeds`) and added as a
   ``pending`` row, or ``failed`` if it cannot be read. A file with the same content as an
   image already listed is skipped as a duplicate (same seed, hence the same kernel).
4. **Training.** Pending rows, grouped by image size, are trained ``batch`` at a time in one
   batched model (:func:`kgengine.api.estimate_kernels`), locally or as Ray tasks
   (:mod:`kgengine.farm.ray_runner`). Before a batch, its images are read: a bad one is marked
   ``failed`` with its reason and the batch goes on without it. After it, each image's files
   are written atomically (:func:`kgengine.outputs.write_outputs`, report last) into
   ``POOL_DIR/kernels/`` and only then is the row marked ``done``. A diverged image is
   queued again with the next derived seed and marked ``failed`` if it diverges again.
5. **Pool.** ``POOL_DIR/kernel_pool.npz`` (and ``kernel_pool_x4.npz`` with x4) is rebuilt
   atomically from all ``done`` rows, in manifest order (:func:`rebuild_pool`).

Batch size: when not given, 8 on CPU (throughput grows up to about B = 8 on small CPUs and
flattens after, see ``bench/bench_farm.py``; memory is not the limit there), and on CUDA the
largest B whose measured footprint fits 80 % of the free GPU memory (:func:`auto_batch`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kgengine.api import EstimateResult, estimate_kernels, resolve_device
from kgengine.config import KernelGANConfig
from kgengine.errors import BadImageError, KGEngineError, TrainingDivergedError
from kgengine.farm.inputs import expand_inputs, unique_names
from kgengine.farm.manifest import Manifest, NewImage, Row, lock_pool_dir
from kgengine.farm.seeds import content_hash, derive_seed
from kgengine.imageio import read_image
from kgengine.outputs import write_outputs
from kgengine.pool import make_pool, save_pool

#: Per-image output folder inside POOL_DIR.
KERNELS_DIR = "kernels"
#: Pool files inside POOL_DIR.
POOL_X2, POOL_X4 = "kernel_pool.npz", "kernel_pool_x4.npz"
#: Batch size on CPU when not given (see the module docstring).
CPU_BATCH = 8
#: Upper bound of the automatic batch size on GPU.
MAX_AUTO_BATCH = 512
#: Trainings an image gets before it is marked failed for diverging (1 retry).
MAX_TRAININGS = 2
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class FarmSettings:
    """What a pool's kernels depend on; stored in the manifest, fixed for the pool's life."""

    seed: int = 0
    x4: bool = False
    dtype: str = "float32"
    mode: str = "composed"
    config: KernelGANConfig = field(default_factory=KernelGANConfig)

    def to_dict(self) -> dict[str, Any]:
        d = {"seed": self.seed, "x4": self.x4, "dtype": self.dtype, "mode": self.mode,
             "config": self.config.to_dict()}
        return json.loads(json.dumps(d))  # tuples -> lists, as stored

    @staticmethod
    def from_dict(d: dict[str, Any]) -> FarmSettings:
        return FarmSettings(int(d["seed"]), bool(d["x4"]), str(d["dtype"]), str(d["mode"]),
                            KernelGANConfig().replace(**d["config"]))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass
class FarmHooks:
    """Callbacks for progress and messages (all optional; the CLI draws rich bars with them)."""

    log: Callable[[str], None] = lambda msg: None
    total: Callable[[int], None] = lambda n: None  # images to train in this run
    # (name, state, detail): state done|failed|retry, detail = the reason ("" when done)
    image_finished: Callable[[str, str, str], None] = lambda name, state, detail: None
    batch_started: Callable[[list[str], int], None] = lambda names, iters: None
    batch_progress: Callable[[int], None] = lambda iters_done: None


@dataclass
class FarmSummary:
    """What one :func:`run_farm` call did."""

    pool_dir: Path
    added: int = 0  # new rows
    duplicates: int = 0  # inputs skipped: same content as a listed image
    skipped: int = 0  # already done before this run
    done: int = 0  # finished by this run
    failed: int = 0  # failed in this run (bad file or diverged twice)
    retried: int = 0  # divergences retried with another seed
    recovered: int = 0  # rows left running by a killed job, redone
    left_pending: int = 0  # not finished (Ray tasks lost; rerun to retry)
    total: dict[str, int] = field(default_factory=dict)  # rows per state at the end
    batch: int = 0
    device: str = ""
    elapsed_s: float = 0.0
    pool_files: list[Path] = field(default_factory=list)

    @property
    def images_per_hour(self) -> float:
        return 3600.0 * self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def text(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"{self.done} done, {self.failed} failed, {self.skipped} skipped (done before)"
            + (f", {self.left_pending} left pending (rerun to retry)" if self.left_pending else "")
            + f" in {self.elapsed_s:.1f} s: {self.images_per_hour:.1f} images/hour"
            + f" (batch {self.batch}, {self.device})",
            f"pool {self.pool_dir}: " + ", ".join(f"{n} {s}" for s, n in self.total.items()),
        ]
        if self.added or self.duplicates or self.recovered or self.retried:
            lines.append(f"{self.added} new images, {self.duplicates} duplicates skipped, "
                         f"{self.recovered} interrupted images redone, "
                         f"{self.retried} diverged trainings retried")
        lines += [f"pool file: {p}" for p in self.pool_files]
        return "\n".join(lines)


# ---------------------------------------------------------------------- settings
def resolve_settings(stored: dict[str, Any] | None, *, seed: int | None = None,
                     x4: bool | None = None, iters: int | None = None,
                     config: KernelGANConfig | None = None, dtype: str | None = None,
                     mode: str | None = None) -> FarmSettings:
    """The job settings: stored ones (or defaults) with the given options applied.

    Raises:
        KGEngineError: a given option differs from the stored one (naming them).
    """
    base = FarmSettings.from_dict(stored) if stored is not None else FarmSettings()
    cfg = config if config is not None else base.config
    if iters is not None:
        cfg = cfg.replace(iters=iters)
    if dtype is not None and dtype not in DTYPES:
        raise KGEngineError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    want = FarmSettings(
        base.seed if seed is None else int(seed), base.x4 if x4 is None else bool(x4),
        base.dtype if dtype is None else dtype, base.mode if mode is None else mode, cfg)
    if stored is not None:
        old, new = base.to_dict(), want.to_dict()
        diff = [k for k in ("seed", "x4", "dtype", "mode") if old[k] != new[k]]
        diff += [f"config.{k}" for k in old["config"] if old["config"][k] != new["config"].get(k)]
        if diff:
            shown = ", ".join(f"{k} (pool: {_get(old, k)}, given: {_get(new, k)})" for k in diff)
            raise KGEngineError(
                f"this pool folder was started with other settings: {shown}; "
                "rerun with the pool's settings (or leave those options out) or use a new folder"
            )
    return want


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


# ---------------------------------------------------------------------- inputs
def _probe(path: Path) -> tuple[str | None, int | None, int | None, str | None]:
    """(sha256, width, height, failure reason) of a file, without decoding it."""
    try:
        sha = content_hash(path)
    except FileNotFoundError:
        return None, None, None, f"{path}: no such file"
    except OSError as exc:
        return None, None, None, f"{path}: cannot read file ({exc.strerror or exc})"
    w = h = None
    try:
        if path.suffix.lower() == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            h, w = int(shape[0]), int(shape[1])
        else:
            from PIL import Image

            with Image.open(path) as im:
                w, h = im.size
    except Exception:  # noqa: BLE001 - a bad file fails later, when it is read, with a reason
        pass
    return sha, w, h, None


def add_inputs(man: Manifest, paths: Sequence[Path], settings: FarmSettings,
               log: Callable[[str], None] = lambda m: None) -> tuple[int, int]:
    """Add the paths not yet in the manifest; returns (added, duplicates skipped)."""
    known_paths, names, by_hash = man.known()
    new = [p for p in paths if str(p) not in known_paths]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as ex:
        probes = list(ex.map(_probe, new))
    keep: list[tuple[Path, tuple]] = []
    duplicates = 0
    for p, pr in zip(new, probes, strict=True):
        sha = pr[0]
        if sha is not None and sha in by_hash:
            log(f"skip {p}: same content as {by_hash[sha]}")
            duplicates += 1
            continue
        if sha is not None:
            by_hash[sha] = str(p)
        keep.append((p, pr))
    out_names = unique_names([p for p, _ in keep], [pr[0] for _, pr in keep], names)
    rows = [
        NewImage(name, str(p), sha, w, h,
                 None if sha is None else derive_seed(settings.seed, sha, 0),
                 "failed" if reason else "pending", reason)
        for name, (p, (sha, w, h, reason)) in zip(out_names, keep, strict=True)
    ]
    for r in rows:
        if r.state == "failed":
            log(f"failed: {r.reason}")
    return man.add(rows), duplicates


def remove_partial_files(pool_dir: Path) -> int:
    """Delete leftover ``.<name>.<random>.tmp`` files of atomic writes cut by a kill."""
    n = 0
    for folder in (pool_dir, pool_dir / KERNELS_DIR):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def requeue_missing_outputs(man: Manifest, pool_dir: Path) -> int:
    """``done`` rows whose report file is gone (deleted by hand) -> ``pending``."""
    lost = [r.id for r in man.rows("done")
            if not (pool_dir / r.output_paths.get("report", "?")).is_file()]
    if lost:
        man.requeue(lost, "output files missing; redone")
    return len(lost)


# ---------------------------------------------------------------------- batch size
def auto_batch(device: torch.device, settings: FarmSettings, max_pixels: int = 0) -> int:
    """The batch size when none is given: :data:`CPU_BATCH` on CPU; on CUDA the largest B with

    ``base + B · (per_image + max_pixels · bytes_per_pixel) <= 0.8 · free memory``,

    ``per_image`` and ``base`` measured by training B = 1 and B = 3 small images for 3
    iterations (``torch.cuda.max_memory_allocated``), ``bytes_per_pixel`` = the image
    (3 channels of ``dtype``) plus its two float64 crop CDFs, since a batch holds its images
    zero-padded to the largest one (``max_pixels`` = the largest H·W expected).
    """
    if device.type != "cuda":
        return CPU_BATCH
    per_image, base = measure_gpu_footprint(device, settings)
    bytes_pp = 3 * torch.tensor([], dtype=settings.torch_dtype).element_size() + 2 * 8
    free, _ = torch.cuda.mem_get_info(device)
    b = int((0.8 * free - base) // (per_image + max_pixels * bytes_pp))
    return max(1, min(MAX_AUTO_BATCH, b))


def measure_gpu_footprint(device: torch.device, settings: FarmSettings) -> tuple[float, float]:
    """(bytes per image, fixed bytes) of training on ``device``, from B = 1 and B = 3 runs."""
    from kgengine.trainer import BatchTrainer, prepare_image

    cfg = settings.config.replace(iters=3)
    side = cfg.crop_size + 2 * cfg.shave + 8
    img = np.random.default_rng(0).random((side, side, 3)).astype(np.float32)
    peaks = []
    for b in (1, 3):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        prep = [prepare_image(img, cfg)] * b
        trainer = BatchTrainer(prep, list(range(b)), cfg, device, settings.torch_dtype,
                               settings.mode)
        trainer.run(cfg.iters)
        peaks.append(torch.cuda.max_memory_allocated(device) - start)
        del trainer
    per_image = max((peaks[1] - peaks[0]) / 2, 1.0)
    return per_image, max(peaks[0] - per_image, 0.0)


# ---------------------------------------------------------------------- recording
def record(man: Manifest, row: Row, outcome: EstimateResult | Exception,
           settings: FarmSettings, pool_dir: Path) -> tuple[str, str]:
    """Write a finished image's files then mark its row.

    Returns (state, reason): state is done, failed or retry; reason is "" when done.
    """
    if isinstance(outcome, EstimateResult):
        outcome.name = row.name
        outcome.report["image"] = row.path
        outcome.report["farm"] = {"sha256": row.sha256, "job_seed": settings.seed,
                                  "attempt": row.diverged, "pool": str(pool_dir)}
        written = write_outputs(outcome, pool_dir / KERNELS_DIR)
        rel = {k: str(Path(p).relative_to(pool_dir)) for k, p in written.items()}
        man.mark_done(row.id, outcome.report["seed"], outcome.report["train_s"], rel)
        return "done", ""
    if isinstance(outcome, TrainingDivergedError):
        if row.diverged + 1 < MAX_TRAININGS:
            reason = f"{outcome}; retrying with another seed"
            man.requeue([row.id], reason, diverged=True)
            return "retry", reason
        reason = f"{outcome} (attempt {row.diverged + 1} of {MAX_TRAININGS})"
        man.mark_failed(row.id, reason)
        return "failed", reason
    man.mark_failed(row.id, str(outcome))
    return "failed", str(outcome)


def attempt_seed(settings: FarmSettings, row: Row) -> int:
    """The seed of the row's next training: attempt = the number of divergences so far."""
    assert row.sha256 is not None
    return derive_seed(settings.seed, row.sha256, row.diverged)


# ---------------------------------------------------------------------- local training
def train_local(man: Manifest, settings: FarmSettings, pool_dir: Path, batch: int,
                device: str, hooks: FarmHooks, summary: FarmSummary) -> int:
    """Train every pending row, ``batch`` at a time, in this process.

    A batch that runs out of GPU memory is queued again and the batch size halved (an image
    that does not fit alone is marked failed). Returns the final batch size.
    """
    cfg = settings.config
    while rows := man.pending():
        start = 0
        while start < len(rows):
            chunk = rows[start : start + batch]
            start += len(chunk)
            man.claim([r.id for r in chunk])
            try:
                _train_chunk(man, chunk, settings, pool_dir, device, hooks, summary, cfg)
            except torch.cuda.OutOfMemoryError:
                still = _still_running(man, chunk)
                torch.cuda.empty_cache()
                if batch == 1:
                    for r in still:
                        reason = f"{r.path}: out of GPU memory even in a batch of 1"
                        man.mark_failed(r.id, reason)
                        count_outcome(summary, hooks, r.name, ("failed", reason))
                    continue
                batch = max(1, batch // 2)
                man.requeue([r.id for r in still], f"out of GPU memory; retried in batches "
                                                   f"of {batch}")
                hooks.log(f"out of GPU memory: batch size lowered to {batch}")
            except BaseException as exc:
                # stopped (Ctrl-C) or an unexpected error: give the claimed rows back
                still = _still_running(man, chunk)
                if still:
                    man.requeue([r.id for r in still], f"interrupted: {type(exc).__name__}")
                raise
    return batch


def _still_running(man: Manifest, chunk: list[Row]) -> list[Row]:
    running = {r.id for r in man.rows("running")}
    return [r for r in chunk if r.id in running]


def _train_chunk(man: Manifest, chunk: list[Row], settings: FarmSettings, pool_dir: Path,
                 device: str, hooks: FarmHooks, summary: FarmSummary,
                 cfg: KernelGANConfig) -> None:
    images, ok = [], []
    for row in chunk:
        try:
            images.append(read_image(row.path, min_size=cfg.crop_size))
            ok.append(row)
        except BadImageError as exc:
            count_outcome(summary, hooks, row.name, record(man, row, exc, settings, pool_dir))
    if not ok:
        return
    hooks.batch_started([r.name for r in ok], cfg.iters)
    try:
        outcomes = estimate_kernels(
            images, seeds=[attempt_seed(settings, r) for r in ok], names=[r.name for r in ok],
            x4=settings.x4, device=device, config=cfg, dtype=settings.torch_dtype,
            mode=settings.mode, callback=hooks.batch_progress, on_diverge="return")
    except BadImageError as exc:  # refused by prepare_image: fail it, redo the others
        bad = [r for r in ok if r.name == exc.path]
        if not bad:
            raise
        count_outcome(summary, hooks, bad[0].name, record(man, bad[0], exc, settings, pool_dir))
        man.requeue([r.id for r in ok if r is not bad[0]], "batch redone without a bad image")
        return
    for row, outcome in zip(ok, outcomes, strict=True):
        count_outcome(summary, hooks, row.name, record(man, row, outcome, settings, pool_dir))


def count_outcome(summary: FarmSummary, hooks: FarmHooks, name: str,
                  outcome: tuple[str, str]) -> None:
    """Count a :func:`record` outcome in the summary and tell the hooks."""
    state, detail = outcome
    if state == "done":
        summary.done += 1
    elif state == "failed":
        summary.failed += 1
    else:
        summary.retried += 1
    hooks.image_finished(name, state, detail)


# ---------------------------------------------------------------------- pool
def rebuild_pool(man: Manifest, pool_dir: Path, x4: bool) -> list[Path]:
    """Write ``kernel_pool.npz`` (and ``kernel_pool_x4.npz``) from the ``done`` rows.

    Rows in manifest order; ids = output names, sources = image paths, seeds = the seed of
    the kept training, reports = the per-image JSON reports. Nothing is written when no image
    is done. Returns the files written.
    """
    rows = man.rows("done")
    if not rows:
        return []
    reports = []
    for r in rows:
        with open(pool_dir / r.output_paths["report"], encoding="utf-8") as fh:
            reports.append(json.load(fh))
    written = []
    for tag, scale, fname in (("x2", 2, POOL_X2), ("x4", 4, POOL_X4)):
        if tag == "x4" and not x4:
            continue
        kernels = [np.load(pool_dir / r.output_paths[f"{tag}_npy"]) for r in rows]
        pool = make_pool(kernels, [r.name for r in rows], [r.path for r in rows], scale,
                         [int(r.seed_used) for r in rows], reports)
        written.append(save_pool(pool_dir / fname, pool))
    return written


# ---------------------------------------------------------------------- entry point
def run_farm(
    inputs: Sequence[str | os.PathLike],
    pool_dir: str | os.PathLike,
    *,
    batch: int | None = None,
    seed: int | None = None,
    x4: bool | None = None,
    iters: int | None = None,
    config: KernelGANConfig | None = None,
    dtype: str | None = None,
    mode: str | None = None,
    device: str = "auto",
    recursive: bool = False,
    retry_failed: bool = False,
    ray_address: str | None = None,
    ray_cpus: float = 1.0,
    threads: int | None = None,
    hooks: FarmHooks | None = None,
) -> FarmSummary:
    """Estimate one kernel per input image into the pool folder ``pool_dir`` (resumable).

    Args:
        inputs: image files, folders and ``.txt`` lists (:mod:`kgengine.farm.inputs`); may be
            empty to resume the images already listed in the manifest.
        pool_dir: the pool folder (manifest, ``kernels/``, ``kernel_pool.npz``).
        batch: images per batched training (default: :func:`auto_batch`).
        seed, x4, iters, config, dtype, mode: job settings; None = the pool's stored value
            (defaults 0, False, 3000, paper config, "float32", "composed" for a new pool).
        device: "auto", "cpu", "cuda" or "cuda:N" (for Ray: what each task uses).
        recursive: descend into sub-folders of folder INPUTs.
        retry_failed: put the pool's failed images back in the queue first.
        ray_address: None = train here; "auto" / "host:port" / "ray://..." = submit batches
            to that Ray cluster; "local" = start a local Ray instance.
        ray_cpus: CPUs each Ray task requests (and its torch threads).
        threads: torch CPU threads for local training (default: torch's; restored after).
            On a busy machine fewer threads than cores can be much faster.
        hooks: progress callbacks.
    Raises:
        KGEngineError: bad INPUT, settings differing from the pool's, another farm running
            on ``pool_dir``, or ``cuda`` requested without a GPU.
    """
    hooks = hooks or FarmHooks()
    pool_dir = Path(pool_dir)
    t0 = time.perf_counter()
    summary = FarmSummary(pool_dir)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        _run(inputs, pool_dir, summary, hooks, batch=batch, seed=seed, x4=x4, iters=iters,
             config=config, dtype=dtype, mode=mode, device=device, recursive=recursive,
             retry_failed=retry_failed, ray_address=ray_address, ray_cpus=ray_cpus)
    finally:
        torch.set_num_threads(old_threads)
    summary.elapsed_s = time.perf_counter() - t0
    return summary


def _run(inputs: Sequence[str | os.PathLike], pool_dir: Path, summary: FarmSummary,
         hooks: FarmHooks, *, batch: int | None, seed: int | None, x4: bool | None,
         iters: int | None, config: KernelGANConfig | None, dtype: str | None,
         mode: str | None, device: str, recursive: bool, retry_failed: bool,
         ray_address: str | None, ray_cpus: float) -> None:
    with lock_pool_dir(pool_dir), Manifest(pool_dir) as man:
        settings = resolve_settings(man.settings(), seed=seed, x4=x4, iters=iters,
                                    config=config, dtype=dtype, mode=mode)
        if settings.mode not in ("composed", "layers"):
            raise KGEngineError(f"mode: expected composed or layers, got {settings.mode!r}")
        paths = expand_inputs(inputs, recursive)
        if man.settings() is None:
            man.set_settings(settings.to_dict())
        remove_partial_files(pool_dir)
        requeue_missing_outputs(man, pool_dir)
        summary.recovered = man.recover()
        if retry_failed:
            man.retry_failed()
        failed_before = man.counts()["failed"]
        summary.added, summary.duplicates = add_inputs(man, paths, settings, hooks.log)
        summary.failed = man.counts()["failed"] - failed_before  # unreadable new files
        before = man.counts()
        summary.skipped = before["done"]
        if ray_address is None:
            dev = resolve_device(device)
            pending = man.pending()
            if batch is None:
                biggest = max(((r.width or 0) * (r.height or 0) for r in pending), default=0)
                batch = auto_batch(dev, settings, biggest) if pending else CPU_BATCH
            summary.batch, summary.device = batch, str(dev)
            hooks.total(len(pending))
            summary.batch = train_local(man, settings, pool_dir, batch, str(dev), hooks,
                                        summary)
        else:
            from kgengine.farm.ray_runner import train_ray

            hooks.total(before["pending"])
            train_ray(man, settings, pool_dir, batch, device, ray_address, ray_cpus, hooks,
                      summary)
        summary.total = man.counts()
        summary.left_pending = summary.total["pending"]
        summary.pool_files = rebuild_pool(man, pool_dir, settings.x4)
