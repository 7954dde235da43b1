"""Running the pairs through the pipeline (``kgengine degrade`` with pipeline options).

Each HR image is read and cropped (top-left, sides multiples of s) by one thread while the
previous one is degraded on the CPU by :meth:`Pipeline.degrade_image` (the same code as the
training-time :class:`~kgengine.degradation.module.Degrader`), and two threads write the PNGs
atomically. The manifest is appended every ``batch`` pairs. Each entry is the legacy entry
(:func:`~kgengine.degradation.manifest.pair_entry`) plus ``pipeline`` (the config),
``real_noise_fingerprint`` and ``draws`` (every per-image random choice), which
:func:`~kgengine.degradation.pipeline.rebuild_pair` turns back into the same 8-bit LR.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from kgengine.atomic import atomic_write
from kgengine.degradation.manifest import MANIFEST, append_manifest, pair_entry
from kgengine.degradation.pipeline import Pipeline
from kgengine.degradation.plan import PairPlan, crop_to_scale
from kgengine.degradation.runner import DegradeReport, HrImage, prefetched, write_hr
from kgengine.errors import BadImageError, KGEngineError, shown
from kgengine.hooks import JobHooks
from kgengine.imageio import read_image
from kgengine.ops.backend import backend_name


def write_png8(path: Path, img8: np.ndarray) -> Path:
    """Atomically write an (h, w, 3) uint8 image as PNG."""
    pil = Image.fromarray(img8)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def read_hr(path: Path, scale: int) -> HrImage | BadImageError:
    """The HR image cropped to multiples of ``scale``, or the error that names the file."""
    try:
        img = read_image(path)
        crop = crop_to_scale(img, scale)
        if min(crop.shape[:2]) < scale:
            raise BadImageError(path, f"image is {img.shape[1]}x{img.shape[0]}: smaller than "
                                      f"the scale {scale}")
    except BadImageError as exc:
        return exc
    return HrImage(path, crop, img.shape[:2])


class PipelinePairs:
    """Make and write the pairs of one job (module docstring)."""

    def __init__(self, plan: PairPlan, pipe: Pipeline, out_dir: Path, copy_hr: bool) -> None:
        self.plan, self.pipe, self.out_dir, self.copy_hr = plan, pipe, out_dir, copy_hr
        self.provider = f"cpu:{backend_name('downscale', 'cpu')}"
        self.extra = pipe.settings()

    def write(self, item: HrImage, lr8: np.ndarray, draws: dict) -> dict:
        """Write one pair's LR (and its HR, see :func:`~kgengine.degradation.runner.write_hr`);
        return its manifest entry."""
        write_png8(self.out_dir / "lr" / f"{item.path.stem}.png", lr8)
        hr = write_hr(self.out_dir, item, self.copy_hr)
        entry = pair_entry(self.plan, item.path, hr, item.size, item.crop.shape[:2],
                           lr8.shape[:2], self.provider)
        return {**entry, **self.extra, "draws": draws}


def run_pipeline_pairs(
    plan: PairPlan, pipe: Pipeline, todo: list[Path], out_dir: Path, report: DegradeReport,
    hooks: JobHooks, *, batch: int, copy_hr: bool = False,
) -> list[dict]:
    """Make the pairs of ``todo`` (non-empty) into ``out_dir``; returns their new entries.

    Tells ``hooks``: the pipeline line through ``log``, each file through ``item_finished``
    (``done``, or ``failed`` for an unreadable HR file or a pair that could not be written;
    names and reasons printable, see :func:`~kgengine.errors.shown`).
    """
    maker = PipelinePairs(plan, pipe, out_dir, copy_hr)
    report.provider = maker.provider
    hooks.log(pipe.describe("cpu"))
    written: list[dict] = []
    pending: list[tuple[str, Future]] = []

    def failed(name: str, msg: str) -> None:
        report.failed.append(shown(msg))
        hooks.item_finished(shown(name), "failed", shown(msg))

    def flush() -> None:
        new = []
        for name, future in pending:
            try:
                new.append(future.result())
            except (OSError, KGEngineError) as exc:  # a write failed: that pair only
                failed(name, str(exc))
        pending.clear()
        append_manifest(out_dir / MANIFEST, new)
        written.extend(new)
        report.written += len(new)
        for entry in new:
            hooks.item_finished(shown(entry["name"]), "done", "")

    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(2) as writer:
        for item in prefetched(reader, lambda p: read_hr(p, plan.scale), todo):
            if isinstance(item, BadImageError):
                failed(Path(item.path).name, str(item))
                continue
            lr8, draws = pipe.degrade_image(item.crop, plan.seed, item.path.name)
            future = writer.submit(maker.write, item, lr8, draws.to_dict())
            pending.append((item.path.name, future))
            if len(pending) >= batch:
                flush()
        flush()
    return written
