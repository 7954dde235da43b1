"""The DIV2KRK folder layout: which images a dataset holds and their true kernels.

Layout (the published DIV2KRK, or one made by :func:`kgengine.accuracy.synth.make_div2krk_like`)::

    lr_x{s}/im_N.png          LR image N at scale s (2 or 4)
    gt_k_x{s}/kernel_N.mat    its true kernel, MATLAB variable ``Kernel``
    gt/im_N.png               optional HR image (DIV2KRK names it gt/img_N_gt.png)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kgengine.errors import KGEngineError, brief_list
from kgengine.kernel import check_kernel

#: The scales a DIV2KRK-layout folder holds.
SCALES = (2, 4)
_LR_RE = re.compile(r"^im_(\d+)\.png$")
#: Names an HR image may have under ``gt/``, tried in this order (kgengine's, DIV2KRK's, plain).
_HR_NAMES = ("im_{i}.png", "img_{i}_gt.png", "img_{i}.png")


@dataclass(frozen=True)
class EvalImage:
    """One image of a DIV2KRK-layout dataset.

    Attributes:
        index: the image number ``N`` (1-based in DIV2KRK).
        name: ``"im_N"``; names the run files and the rows.
        lr_path: ``lr_x{s}/im_N.png``.
        kernel_path: ``gt_k_x{s}/kernel_N.mat``.
        hr_path: the HR image under ``gt/``, or None when the dataset has none.
    """

    index: int
    name: str
    lr_path: Path
    kernel_path: Path
    hr_path: Path | None


def check_scale(scale: int) -> int:
    """Return ``scale`` if it is 2 or 4; otherwise raise :class:`KGEngineError`."""
    if scale not in SCALES:
        raise KGEngineError(f"scale must be 2 or 4, got {scale}")
    return scale


def list_dataset(
    dataset_dir: str | os.PathLike, scale: int, ids: Sequence[int] | None = None
) -> list[EvalImage]:
    """The images of a DIV2KRK-layout folder at ``scale``, sorted by index.

    Args:
        dataset_dir: the folder holding ``lr_x{scale}/`` and ``gt_k_x{scale}/``.
        scale: 2 or 4.
        ids: only these image numbers (default: every ``im_N.png``).
    Raises:
        KGEngineError: missing folders, no images, or a requested id that is absent.
    """
    root = Path(dataset_dir)
    check_scale(scale)
    lr_dir, k_dir = root / f"lr_x{scale}", root / f"gt_k_x{scale}"
    for d in (lr_dir, k_dir):
        if not d.is_dir():
            raise KGEngineError(f"{root}: no {d.name}/ folder (expected the DIV2KRK layout)")
    found: dict[int, Path] = {}
    for p in lr_dir.iterdir():
        m = _LR_RE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        raise KGEngineError(f"{lr_dir}: no im_N.png images")
    if ids is not None:
        missing = sorted(set(ids) - set(found))
        if missing:
            raise KGEngineError(f"{lr_dir}: no image for ids [{brief_list(missing)}] "
                                f"({len(found)} images there)")
        found = {i: found[i] for i in ids}
    return [
        EvalImage(i, f"im_{i}", found[i], k_dir / f"kernel_{i}.mat", _hr_path(root, i))
        for i in sorted(found)
    ]


def _hr_path(root: Path, index: int) -> Path | None:
    for pattern in _HR_NAMES:
        cand = root / "gt" / pattern.format(i=index)
        if cand.is_file():
            return cand
    return None


def load_gt_kernel(path: str | os.PathLike) -> np.ndarray:
    """Load the true kernel from a ``.mat`` file (variable ``Kernel``), normalised to sum 1.

    Returns:
        (h, w) float64 kernel ``K / ΣK``.
    Raises:
        KGEngineError: ``"<path>: <problem>"`` for a missing/unreadable file or bad kernel.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise KGEngineError(f"{path}: no such kernel file")
    try:
        data = loadmat(path)
    except Exception as exc:  # noqa: BLE001 - any failure is a bad file
        raise KGEngineError(f"{path}: cannot read .mat file ({type(exc).__name__})") from None
    if "Kernel" not in data:
        raise KGEngineError(f"{path}: no 'Kernel' variable in the .mat file")
    return check_kernel(data["Kernel"], f"{path}: 'Kernel'")
