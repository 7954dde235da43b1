"""A seeded synthetic benchmark in the DIV2KRK layout (docs/ALGORITHM.md section 8).

For image ``N`` (1-based, like DIV2KRK) the random generator is
``numpy.random.default_rng([seed, N])``, so every image is reproducible on its own: the same
HR folder, ``n`` and seed give the same set. Image ``N``'s kernel draw does not depend on
``n``, but its HR photo does (:func:`select_evenly` spreads the ``n`` photos over the
folder), so a set made with another ``n`` is another set. From it:

- ``var1, var2 ~ U(0.6, 5)`` (axis *variances*, px²), ``theta ~ U(0, π)``, and per-entry
  multiplicative noise ``U(1 − 0.25, 1 + 0.25)`` of shape 11×11;
- ``k2 = anisotropic_gaussian(11, var1, var2, theta, noise)`` (renormalised to sum 1,
  centred at index 5: the kgengine convention);
- ``k4 = analytic_x4(k2)`` (31×31): applying ``k2`` then ↓2 twice equals ``k4`` then ↓4.

The HR image is cropped at the top-left corner to ``H − H mod 4`` × ``W − W mod 4`` (so the
x2 and x4 LR images have exact sizes ``H/2`` and ``H/4``), rounded to 8 bits (so ``gt/``
holds exactly the image that was degraded) and then

- ``lr_x2 = degrade(hr, k2, 2)``, ``lr_x4 = degrade(hr, k4, 4)`` (kgengine's ``degrade``,
  whole-sample reflect borders, no additive noise), stored as 8-bit PNG (quantised, as in
  DIV2KRK).

Layout written under ``out_dir`` (every file atomically)::

    gt/im_N.png             cropped HR image
    lr_x2/im_N.png          x2 LR image
    lr_x4/im_N.png          x4 LR image
    gt_k_x2/kernel_N.mat    11x11 float64, key "Kernel"
    gt_k_x4/kernel_N.mat    31x31 float64, key "Kernel"
    synth.json              seed, recipe and per-image parameters (source file, var1, ...)
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kgengine.atomic import exclusive_lock, remove_stale_tmp, save_json, save_mat
from kgengine.config import KernelGANConfig
from kgengine.degrade import degrade
from kgengine.errors import KGEngineError
from kgengine.hooks import JobHooks
from kgengine.imageio import read_image, write_png
from kgengine.kernel import analytic_x4, anisotropic_gaussian

#: The DIV2KRK recipe (docs/ALGORITHM.md section 8).
KERNEL_SIZE = 11
VAR_RANGE = (0.6, 5.0)
NOISE_LEVEL = 0.25
#: HR height and width are cropped to a multiple of this (so x2 and x4 sizes are exact).
CROP_MULTIPLE = 4
#: Smallest LR side ``kgengine eval`` estimates (KernelGAN's input crop, 64 px).
EVAL_MIN_SIDE = KernelGANConfig().crop_size
#: The lock file of a set's folder: one ``synth`` writes it at a time (0.9.29).
SYNTH_LOCK = ".synth.lock"
#: Names of an image's files in the layout's folders.
_LAYOUT_NAME = re.compile(r"^(?:im|kernel)_(\d+)\.(?:png|mat)$")


@dataclass(frozen=True)
class KernelParams:
    """The random draw of one image: axis variances (px²), angle (rad) and noise level."""

    var1: float
    var2: float
    theta: float
    noise_level: float


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` (1-based) of set ``seed``: ``default_rng([seed, N])``."""
    return np.random.default_rng([int(seed), int(index)])


def draw_kernel(
    rng: np.random.Generator,
    size: int = KERNEL_SIZE,
    var_range: tuple[float, float] = VAR_RANGE,
    noise_level: float = NOISE_LEVEL,
) -> tuple[np.ndarray, KernelParams]:
    """Draw one DIV2KRK kernel: ``var1, var2 ~ U(var_range)``, ``θ ~ U(0, π)``, noise ``U(1±ε)``.

    The draws are made in this order: var1, var2, theta, then the (size, size) noise.

    Returns:
        ((size, size) float64 kernel summing to 1, the :class:`KernelParams`).
    """
    var1 = float(rng.uniform(*var_range))
    var2 = float(rng.uniform(*var_range))
    theta = float(rng.uniform(0.0, np.pi))
    noise = rng.uniform(1.0 - noise_level, 1.0 + noise_level, size=(size, size))
    k = anisotropic_gaussian(size, var1, var2, theta, noise=noise)
    return k, KernelParams(var1, var2, theta, noise_level)


def crop_to_multiple(img: np.ndarray, multiple: int = CROP_MULTIPLE) -> np.ndarray:
    """Top-left crop of an (H, W, ...) image to ``H - H % m`` × ``W - W % m``."""
    h, w = img.shape[:2]
    return img[: h - h % multiple, : w - w % multiple]


def select_evenly(paths: Sequence[Path], n: int | None) -> list[Path]:
    """``n`` of the sorted ``paths``, spread evenly: indices ``round(linspace(0, len-1, n))``."""
    paths = sorted(Path(p) for p in paths)
    if n is None or n >= len(paths):
        return paths
    if n <= 0:
        return []
    idx = np.round(np.linspace(0, len(paths) - 1, n)).astype(int)
    return [paths[i] for i in idx]


def make_div2krk_like(
    hr_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    seed: int = 0,
    n: int | None = None,
    *,
    kernel_size: int = KERNEL_SIZE,
    var_range: tuple[float, float] = VAR_RANGE,
    noise_level: float = NOISE_LEVEL,
    hooks: JobHooks | None = None,
) -> list[dict]:
    """Write a DIV2KRK-layout synthetic set (see the module docstring) and return its manifest.

    Args:
        hr_paths: HR images; ``n`` of them (sorted, evenly spread, :func:`select_evenly`)
            become ``im_1 .. im_n`` in sorted order.
        out_dir: output folder (created).
        seed: set seed; image ``N`` uses ``default_rng([seed, N])``.
        n: number of images (all when ``None``).
        hooks: progress: ``total(n)`` once, then ``item_finished("im_N", "done", "")``
            after each image, or ``item_finished("im_N", "failed", <one-line reason>)``
            for an HR image that is unreadable or smaller than 64 px a side, or whose
            files cannot be written: it is skipped (no ``im_N`` files) and the others go on;
            ``log`` notes an image whose LR image is too small for ``kgengine eval`` (under
            :data:`EVAL_MIN_SIDE` px a side) and the removal of an earlier, larger set's
            files of images past ``im_n`` (so that no old image is mixed into this set).
    Returns:
        One dict per image written: ``index``, ``name``, ``source``, ``hr_shape``, the
        kernel parameters. The same list is saved to ``out_dir/synth.json``.
    Raises:
        OutputError: ``synth.json`` cannot be written.
    """
    out = Path(out_dir)
    with exclusive_lock(out, SYNTH_LOCK, "another kgengine synth is writing this folder"):
        return _make_set(out, select_evenly([Path(p) for p in hr_paths], n), seed, kernel_size,
                         var_range, noise_level, hooks or JobHooks())


def _make_set(out: Path, chosen: list[Path], seed: int, kernel_size: int,
              var_range: tuple[float, float], noise_level: float, hooks: JobHooks
              ) -> list[dict]:
    """:func:`make_div2krk_like` holding the folder's lock. ``synth.json`` goes first (it
    describes the set: a run cut short leaves none rather than a stale one) with the
    temporary files of a killed run; each image's old files go before its new ones are
    written, and a write cut short by anything removes that image's files (0.9.29: an
    interrupted rerun left an LR image of one seed next to the true kernel of another)."""
    (out / "synth.json").unlink(missing_ok=True)
    for folder in {out, *(p.parent for p in _files(out, 1).values())}:
        remove_stale_tmp(folder)
    removed = _remove_stale(out, len(chosen))
    if removed:
        hooks.log(f"{out}: removed {removed} files of images past im_{len(chosen)} "
                  "(an earlier, larger set)")
    hooks.total(len(chosen))
    manifest: list[dict] = []
    for index, src in enumerate(chosen, start=1):
        name = f"im_{index}"
        try:
            _discard(out, index)
            params, shape = _make_one(src, out, index, seed, kernel_size, var_range,
                                      noise_level)
        except KGEngineError as exc:  # a bad HR file, or a file that cannot be written
            _discard(out, index)  # no partial im_N
            hooks.item_finished(name, "failed", str(exc))
            continue
        except BaseException:  # Ctrl-C, SIGTERM: no partial im_N either
            _discard(out, index)
            raise
        small = [f"x{s}" for s in (2, 4) if min(shape) // s < EVAL_MIN_SIDE]
        if small:
            hooks.log(f"note: {name} ({src.name}): its LR image at {', '.join(small)} is "
                      f"under {EVAL_MIN_SIDE} px a side; kgengine eval skips it there")
        manifest.append({"index": index, "name": name, "source": src.name,
                         "hr_shape": list(shape), **asdict(params)})
        hooks.item_finished(name, "done", "")
    save_json(
        out / "synth.json",
        {
            "seed": seed,
            "recipe": {
                "kernel_size": kernel_size,
                "var_range": list(var_range),
                "noise_level": noise_level,
                "x4": "analytic_x4(k2)",
                "crop_multiple": CROP_MULTIPLE,
                "rng": "numpy default_rng([seed, N])",
            },
            "images": manifest,
        },
    )
    return manifest


def _make_one(src: Path, out: Path, index: int, seed: int, kernel_size: int,
              var_range: tuple[float, float], noise_level: float,
              ) -> tuple[KernelParams, tuple[int, int]]:
    """Write image ``index`` (``im_N``) of the set from ``src``: its parameters, HR shape."""
    hr = crop_to_multiple(read_image(src, min_size=64).astype(np.float64))
    hr = np.round(hr * 255.0) / 255.0  # what gt/im_N.png will hold, exactly
    k2, params = draw_kernel(image_rng(seed, index), kernel_size, var_range, noise_level)
    k4 = analytic_x4(k2)
    files = _files(out, index)
    write_png(files["gt"], hr)
    write_png(files["lr_x2"], degrade(hr, k2, 2))
    write_png(files["lr_x4"], degrade(hr, k4, 4))
    save_mat(files["gt_k_x2"], {"Kernel": k2})
    save_mat(files["gt_k_x4"], {"Kernel": k4})
    return params, (int(hr.shape[0]), int(hr.shape[1]))


def _files(out: Path, index: int) -> dict[str, Path]:
    """The files of image ``index`` in the set's layout (module docstring)."""
    return {"gt": out / "gt" / f"im_{index}.png", "lr_x2": out / "lr_x2" / f"im_{index}.png",
            "lr_x4": out / "lr_x4" / f"im_{index}.png",
            "gt_k_x2": out / "gt_k_x2" / f"kernel_{index}.mat",
            "gt_k_x4": out / "gt_k_x4" / f"kernel_{index}.mat"}


def _discard(out: Path, index: int) -> None:
    """Remove image ``index``'s files, those that are there."""
    for path in _files(out, index).values():
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _remove_stale(out: Path, count: int) -> int:
    """Remove the files of images past ``count`` from the layout's folders (left there by an
    earlier set with more images: they would be mixed into this one); returns how many."""
    removed = 0
    for folder in {p.parent for p in _files(out, 1).values()}:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            m = _LAYOUT_NAME.match(path.name)
            if m and int(m.group(1)) > count and path.is_file():
                path.unlink()
                removed += 1
    return removed
