"""Running the pairs: an onnxruntime session of the pool degrader, batches of equal-size
images, pairs written atomically and appended to the manifest as they finish.

Images of equal (cropped) size are stacked into batches of up to ``batch``; every other size
runs in its own batches (no padding, no resizing). Reading batch ``i + 1`` overlaps with
degrading batch ``i``; PNGs are written by two threads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import onnxruntime as ort
from PIL import Image

from kgengine.atomic import atomic_write
from kgengine.degradation.manifest import MANIFEST, append_manifest, pair_entry
from kgengine.degradation.plan import PairPlan, crop_to_scale, size_batches, unit_noise
from kgengine.errors import BadImageError, KGEngineError, shown
from kgengine.export import build_pool_model
from kgengine.hooks import JobHooks
from kgengine.imageio import read_image, write_png
from kgengine.providers import (
    ORT_NAMES,
    PROVIDERS,
    SessionChoice,
    cuda_device_count,
    make_session,
)

T = TypeVar("T")
R = TypeVar("R")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The EXIF tag of the orientation (1 = upright).
EXIF_ORIENTATION = 0x0112
#: The orientation in XMP, as Pillow reads it.
XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')


@dataclass
class DegradeReport:
    """What a :func:`kgengine.degradation.degrade_folder` run did."""

    out_dir: Path
    total: int  # HR files found
    written: int  # pairs made by this run
    skipped: int  # pairs already there (resume)
    failed: list[str] = field(default_factory=list)  # one line per bad file
    provider: str = ""  # onnxruntime provider used ("" when nothing was left to do)
    provider_notes: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        """The pairs manifest, ``out_dir/manifest.jsonl``."""
        return self.out_dir / MANIFEST


class HrImage(NamedTuple):
    """One HR image read for degrading: its file, the crop (H', W', 3) float32, the
    original (H, W)."""

    path: Path
    crop: np.ndarray
    size: tuple[int, int]


@dataclass
class PairMaker:
    """The per-batch steps of a job: read and crop, degrade, write a pair."""

    plan: PairPlan
    out_dir: Path
    provider: str
    copy_hr: bool = False

    def read(self, paths: list[Path]) -> tuple[list[HrImage], list[tuple[str, str]]]:
        """Read and crop; returns the images and ``(file name, error line)`` for bad ones."""
        images, errors = [], []
        for p in paths:
            try:
                img = read_image(p)
                crop = crop_to_scale(img, self.plan.scale)
                why = size_problem(img.shape[:2], crop.shape[:2], self.plan.scale,
                                   self.plan.pool.kernel_size)
                if why:
                    raise BadImageError(p, why)
            except BadImageError as exc:
                errors.append((p.name, str(exc)))
                continue
            images.append(HrImage(p, crop, img.shape[:2]))
        return images, errors

    def run(self, session: Any, group: list[HrImage]) -> np.ndarray:
        """Degrade equal-size images: returns LR (n, 3, h, w) float32."""
        hr = np.ascontiguousarray(np.stack([g.crop for g in group]).transpose(0, 3, 1, 2))
        rows = [self.plan.row(g.path.name) for g in group]
        feeds = {"hr": hr, "kernel": self.plan.pool.kernels[rows][:, None]}
        if self.plan.noise > 0:
            h, w = -(-hr.shape[2] // self.plan.scale), -(-hr.shape[3] // self.plan.scale)
            feeds["noise_sigma"] = np.full(len(group), self.plan.noise, dtype=np.float32)
            feeds["noise"] = np.stack(
                [unit_noise(self.plan.noise_seed(g.path.name), (3, h, w)) for g in group]
            )
        return session.run(["lr"], feeds)[0]

    def write(self, item: HrImage, lr: np.ndarray) -> dict:
        """Write one LR (3, h, w) (and the cropped HR) as PNG; return its manifest entry."""
        stem = item.path.stem
        write_png(self.out_dir / "lr" / f"{stem}.png", lr.transpose(1, 2, 0))
        hr = write_hr(self.out_dir, item, self.copy_hr)
        return pair_entry(self.plan, item.path, hr, item.size, item.crop.shape[:2],
                          lr.shape[1:], self.provider)


def size_problem(size: tuple[int, int], crop: tuple[int, int], scale: int, kernel_size: int
                 ) -> str:
    """Why an HR image of ``size`` (h, w), cropped to ``crop`` (multiples of ``scale``), is
    too small for the ONNX degrader, or "" when it is not: both sides of the crop must
    exceed the kernel size (ONNX reflect padding). The message gives the file's own size,
    and the crop's when the crop is smaller, e.g. ``"image is 13x13 (12x12 once cropped to
    multiples of the scale 2): the HR side must exceed the kernel size 13"``."""
    (h, w), (ch, cw) = size, crop
    if min(ch, cw) > kernel_size:
        return ""
    cut = f" ({cw}x{ch} once cropped to multiples of the scale {scale})" if (ch, cw) != (h, w) \
        else ""
    return f"image is {w}x{h}{cut}: the HR side must exceed the kernel size {kernel_size}"


def check_provider(provider: str, *, runs: bool = True) -> None:
    """Raise now, before any file is written, for a provider that cannot run here: an
    unknown name, or, when it ``runs`` (not with a pipeline, which runs on the CPU),
    ``tensorrt``/``cuda`` missing from the onnxruntime build or without a CUDA device (the
    first checks of :func:`kgengine.providers.make_session`, with the same lines).

    Raises:
        KGEngineError: ``unknown provider ...`` or ``provider '<name>' cannot run here: ...``.
    """
    if provider not in PROVIDERS:
        raise KGEngineError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if not runs or provider in ("auto", "cpu"):
        return
    why = f"{ORT_NAMES[provider]} is not in this onnxruntime build"
    if ORT_NAMES[provider] in ort.get_available_providers():
        count, why = cuda_device_count()
        if count:
            return
    raise KGEngineError(f"provider {provider!r} cannot run here: {provider}: {why}")


def open_session(plan: PairPlan, out_dir: Path, provider: str, threads: int | None
                 ) -> SessionChoice:
    """An onnxruntime session of the pool degrader of ``plan`` on ``provider``
    (:func:`kgengine.providers.make_session`; TensorRT engines cached in
    ``out_dir/.trt_cache``).

    Raises:
        KGEngineError: the provider cannot run here.
    """
    model = build_pool_model(plan.pool.kernel_size, plan.scale, noise=plan.noise > 0)
    return make_session(model.SerializeToString(), provider, threads,
                        trt_cache=out_dir / ".trt_cache")


def write_hr(out_dir: Path, item: HrImage, copy: bool) -> str:
    """The pair's HR for the manifest: ``hr/<stem>.png`` (written, 8-bit RGB PNG) when the
    image was cropped or ``copy`` is set (an uncropped 8-bit RGB ``.png`` stored upright,
    :func:`png_upright`, is copied byte for byte), else the HR file's absolute path (nothing
    written). The PNG written is the image as read, EXIF orientation applied."""
    cropped = item.crop.shape[:2] != item.size
    if not (cropped or copy):
        return str(item.path.resolve())
    hr = f"hr/{item.path.stem}.png"
    data = item.path.read_bytes() if not cropped and item.path.suffix.lower() == ".png" else b""
    if data[:8] == PNG_SIGNATURE and data[24:26] == b"\x08\x02" and png_upright(data):
        atomic_write(out_dir / hr, lambda tmp: Path(tmp).write_bytes(data))
    else:
        write_png(out_dir / hr, item.crop)
    return hr


def png_upright(data: bytes) -> bool:
    """Whether a PNG's bytes can be copied as the HR :func:`~kgengine.imageio.read_image`
    reads: no orientation other than 1 (read_image applies Pillow's, so a copy would keep
    the stored pixels and the tag while the LR is made from the rotated image).

    The chunks are walked without decoding. Pillow takes the orientation from an ``eXIf``
    chunk (1 when absent or unreadable), else from EXIF in a ``Raw profile type exif`` text
    chunk or ``tiff:Orientation`` in XMP: an ``eXIf`` orientation other than 1, any EXIF
    text chunk, and XMP that is compressed or gives an orientation other than 1 count as
    not upright (that image is written decoded).
    """
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        keyword = body.split(b"\0", 1)[0] if kind in (b"tEXt", b"zTXt", b"iTXt") else b""
        if kind == b"eXIf" and _exif_orientation(body) != 1:
            return False
        if keyword == b"Raw profile type exif":
            return False
        if keyword == b"XML:com.adobe.xmp":
            packed = kind == b"zTXt" or (kind == b"iTXt" and body[len(keyword) + 1:][:1] != b"\0")
            match = XMP_ORIENTATION.search(body)
            if packed or (match and match[2] != b"1"):
                return False
        if kind == b"IEND":
            break
        pos += 12 + length  # length, type, data, CRC
    return True


def _exif_orientation(exif: bytes) -> int:
    """The orientation tag of EXIF data (TIFF bytes; 1 when absent or unreadable)."""
    tags = Image.Exif()
    try:
        tags.load(exif)
        return int(tags.get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - broken EXIF: read_image reads the pixels as stored
        return 1


def same_size(images: list[HrImage]) -> list[list[HrImage]]:
    """``images`` grouped by crop shape (a probed batch may still mix sizes)."""
    groups: dict[tuple[int, ...], list[HrImage]] = {}
    for item in images:
        groups.setdefault(item.crop.shape, []).append(item)
    return list(groups.values())


def prefetched(reader: ThreadPoolExecutor, read: Callable[[T], R], items: list[T]
                ) -> Iterator[R]:
    """``read(item)`` for each item, reading the next one while this one is used."""
    pending = reader.submit(read, items[0])
    for i in range(len(items)):
        result = pending.result()
        if i + 1 < len(items):
            pending = reader.submit(read, items[i + 1])  # overlap I/O and compute
        yield result


def run_pairs(
    plan: PairPlan, todo: list[Path], out_dir: Path, report: DegradeReport, hooks: JobHooks,
    *, batch: int, choice: SessionChoice, copy_hr: bool = False,
) -> list[dict]:
    """Make the pairs of ``todo`` (non-empty) into ``out_dir`` with the session ``choice``
    (:func:`open_session`); returns their new entries.

    Counts into ``report`` (provider, written, failed) and tells ``hooks``: the provider
    line through ``log``, each file through ``item_finished`` (``done`` or ``failed``).
    """
    report.provider, report.provider_notes = choice.provider, choice.notes
    hooks.log(choice.describe())
    maker = PairMaker(plan, out_dir, choice.provider, copy_hr)
    batches = size_batches(todo, plan.scale, batch)
    written: list[dict] = []
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(2) as writer:
        for images, errors in prefetched(reader, maker.read, batches):
            for name, msg in errors:
                report.failed.append(shown(msg))
                hooks.item_finished(shown(name), "failed", shown(msg))
            for group in same_size(images):
                lr = maker.run(choice.session, group)
                new = []
                for item, future in [(item, writer.submit(maker.write, item, y))
                                     for item, y in zip(group, lr, strict=True)]:
                    try:  # a write that fails fails its pair only (0.9.29: the whole job)
                        new.append(future.result())
                    except (OSError, KGEngineError) as exc:
                        report.failed.append(shown(str(exc)))
                        hooks.item_finished(shown(item.path.name), "failed", shown(str(exc)))
                append_manifest(out_dir / MANIFEST, new)
                written += new
                report.written += len(new)
                for entry in new:
                    hooks.item_finished(shown(entry["name"]), "done", "")
    return written
