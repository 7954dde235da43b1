"""Per-image output files of an estimate, all written atomically.

``<name>_kernel_x2.npy`` / ``.mat`` (key ``Kernel``, as ZSSR and KernelGAN load it: a
correlation kernel; KAIR/USRNet convolve, so ``pool export --format kair-mat`` rotates it),
``<name>_kernel_x4.npy`` / ``.mat`` with x4, ``<name>_kernel.png`` (picture of the
kernel(s)), ``<name>_generator.npz`` (the six trained G weights ``w0..w5``, for
``kgengine export generator``) and ``<name>_report.json``. The report is written last: its
presence marks the image as done, and a rerun keeps the outputs only if the report's
settings are those asked again (:func:`stored_differences`). A new write of an image first
removes its old report, then its old files that it will not replace (the x4 kernel of an
earlier ``--x4`` run): a write cut short leaves no report, so the image is redone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kgengine.api import EstimateResult
from kgengine.atomic import (
    atomic_write,
    ensure_dir,
    json_default,
    save_json,
    save_mat,
    save_npy,
    why,
)
from kgengine.errors import BadKernelError, OutputError
from kgengine.kernel import check_kernel


def output_paths(outdir: str | Path, name: str) -> dict[str, Path]:
    """Where the outputs of image ``name`` go."""
    out = Path(outdir)
    return {
        "x2_npy": out / f"{name}_kernel_x2.npy",
        "x2_mat": out / f"{name}_kernel_x2.mat",
        "x4_npy": out / f"{name}_kernel_x4.npy",
        "x4_mat": out / f"{name}_kernel_x4.mat",
        "png": out / f"{name}_kernel.png",
        "generator": out / f"{name}_generator.npz",
        "report": out / f"{name}_report.json",
    }


def kernel_picture(kernels: list[np.ndarray], labels: list[str] | None = None,
                   cell: int = 192, caption_px: int = 30) -> np.ndarray:
    """Side-by-side heat maps of kernels, each scaled to ``cell`` px (white = its own peak),
    with a caption strip under each: (cell + caption_px, n*cell, 3) uint8. ``labels``: one
    caption line per kernel (default ``"k{i}"``); the size and peak value are added."""
    from kgengine.plotting import kernel_to_rgb

    labels = labels or [f"k{i}" for i in range(len(kernels))]
    pic = Image.new("RGB", (cell * len(kernels), cell + caption_px), (255, 255, 255))
    draw = ImageDraw.Draw(pic)
    font = ImageFont.load_default()
    for i, (k, label) in enumerate(zip(kernels, labels, strict=True)):
        rgb = kernel_to_rgb(k, max(1, cell // k.shape[0]))
        pic.paste(Image.fromarray(rgb).resize((cell, cell), Image.NEAREST), (i * cell, 0))
        text = f"{label} {k.shape[0]}x{k.shape[1]}\npeak {float(k.max()):.4f}"
        draw.multiline_text((i * cell + 4, cell + 2), text, fill=(0, 0, 0), font=font, spacing=2)
    return np.asarray(pic)


def write_outputs(result: EstimateResult, outdir: str | Path) -> dict[str, Path]:
    """Write every output file of ``result`` into ``outdir``; returns the paths written.

    An earlier result of the same name is void from the start: its report goes first (the
    mark of a done image, so a write cut short at any point leaves none), then its files that
    this result does not replace; the report is written last."""
    paths = output_paths(outdir, result.name)
    written = {}
    kernels = [("x2", result.kernel_x2)]
    if result.kernel_x4 is not None:
        kernels.append(("x4", result.kernel_x4))
    ensure_dir(outdir)
    replaced = {f"{tag}_{ext}" for tag, _ in kernels for ext in ("npy", "mat")}
    for key in ["report", *sorted(paths.keys() - replaced - {"report", "png", "generator"})]:
        _discard(paths[key])
    for tag, k in kernels:
        written[f"{tag}_npy"] = save_npy(paths[f"{tag}_npy"], k.astype(np.float64))
        written[f"{tag}_mat"] = save_mat(paths[f"{tag}_mat"], {"Kernel": k.astype(np.float64)})
    pic = Image.fromarray(kernel_picture([k for _, k in kernels],
                                         [f"{tag} kernel" for tag, _ in kernels]))
    written["png"] = atomic_write(paths["png"], lambda tmp: pic.save(tmp, format="PNG"))

    def write_g(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{f"w{i}": w for i, w in enumerate(result.generator_weights)})

    written["generator"] = atomic_write(paths["generator"], write_g)
    report = dict(result.report, files={k: p.name for k, p in written.items()})
    written["report"] = save_json(paths["report"], report)
    return written


def _discard(path: Path) -> None:
    """Remove the file ``path`` if it is there (one unlink: it is there or it is gone)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(path, f"cannot remove ({why(exc)})", exc.errno) from exc


def requested_settings(*, seed: int, iters: int, config: dict[str, Any], x4: bool,
                       restarts: int, mode: str, stop: Any = "full") -> dict[str, Any]:
    """What an image's outputs depend on, as :func:`stored_differences` compares them.

    ``stop``: "full" or the stop rule as a dict (the report's ``stop``)."""
    return {"seed": int(seed), "iters": int(iters), "x4": bool(x4), "restarts": int(restarts),
            "mode": mode, "config": json.loads(json.dumps(config, default=json_default)),
            "stop": stop}


def stored_settings(report: dict[str, Any]) -> dict[str, Any]:
    """The :func:`requested_settings` an output report was made with (None where unknown)."""
    restarts = report.get("restarts")
    return {"seed": report.get("seed"), "iters": report.get("iters"),
            "x4": report.get("kernel_x4") is not None,
            "restarts": restarts.get("k") if isinstance(restarts, dict) else 1,
            "mode": report.get("mode"), "config": report.get("config"),
            "stop": report.get("stop", "full")}


def _usable_kernel(npy: Path, mat: Path) -> bool:
    """Whether ``npy`` holds a usable kernel (:func:`kgengine.kernel.check_kernel`) and
    ``mat`` the same one (:func:`mat_problem`): a file deleted, truncated or damaged
    outside kgengine is redone, not kept."""
    try:
        kernel = np.load(npy, allow_pickle=False)
        check_kernel(kernel, "")
    except (OSError, ValueError, EOFError, BadKernelError):  # an empty file: EOFError
        return False
    return mat_problem(mat, kernel) is None


def _non_empty(path: Path) -> bool:
    """Whether ``path`` is a file with at least one byte."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def mat_problem(path: Path, kernel: np.ndarray) -> str | None:
    """None if ``path`` is a ``.mat`` whose ``Kernel`` is ``kernel`` (the ``.npy``'s, as
    :func:`write_outputs` writes them), else what is wrong: "is unreadable (<error>)" or "does
    not hold the kernel of its .npy"."""
    from scipy.io import loadmat

    try:
        stored = loadmat(path).get("Kernel")
    except Exception as exc:  # noqa: BLE001 - a damaged file makes the parser raise anything
        return f"is unreadable ({type(exc).__name__})"
    if not isinstance(stored, np.ndarray) or not np.array_equal(stored, kernel):
        return "does not hold the kernel of its .npy"
    return None


def stored_image_hash(outdir: str | Path, name: str) -> str | None:
    """The ``image_sha256`` that ``name``'s report in ``outdir`` records (written since
    0.9.25), or None: no report, an unreadable one, or one without it."""
    try:
        report = json.loads(output_paths(outdir, name)["report"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    made_from = report.get("image_sha256") if isinstance(report, dict) else None
    return made_from if isinstance(made_from, str) else None


def stored_differences(outdir: str | Path, name: str, wanted: dict[str, Any],
                       source: str | None = None) -> list[str] | None:
    """Whether ``name``'s outputs in ``outdir`` can be kept by a rerun asking ``wanted``.

    Args:
        wanted: :func:`requested_settings` of the rerun.
        source: the SHA-256 (hex) of the image asked now. A report that names another
            (``image_sha256``, written since 0.9.25) was made from another file of the same
            name: that is a difference. None, or a report without it: not compared.
    Returns:
        None when there are no usable outputs (no report, an unreadable one, a kernel
        file missing or damaged, :func:`_usable_kernel`, or the picture or generator
        missing or empty): the image is to be done; ``[]``
        when they exist and were made with the same settings; otherwise the differences,
        e.g. ``["seed (stored 0, asked 4)", "config.lr_g (stored 0.0002, asked 0.0001)"]``.
        ``x4`` is a setting like the others (since 0.9.26): ``--x4`` reads the image as an
        x4 LR, which changes the x2 kernel's post-processing, so x4 outputs do not serve a
        run without it.
    """
    p = output_paths(outdir, name)
    try:
        report = json.loads(p["report"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not _usable_kernel(p["x2_npy"], p["x2_mat"]):
        return None
    if not all(_non_empty(p[key]) for key in ("png", "generator")):
        return None  # the picture and G's weights are written for every image (0.9.29)
    have = stored_settings(report)
    if have["x4"] and not _usable_kernel(p["x4_npy"], p["x4_mat"]):
        return None
    diff = [f"{k} (stored {have[k]}, asked {wanted[k]})" for k in wanted
            if k != "config" and have[k] != wanted[k]]
    made_from = report.get("image_sha256")
    if source is not None and isinstance(made_from, str) and made_from != source:
        diff.insert(0, f"image (stored sha256 {made_from[:12]}, asked {source[:12]})")
    old = have["config"] if isinstance(have["config"], dict) else {}
    if "restart_n_filtering" not in old and "n_filtering" in old:  # before 0.9.3
        old = {**old, "restart_n_filtering": old["n_filtering"]}
    if "width_calibration" not in old and old:  # before 0.9.4: the width was kept
        old = {**old, "width_calibration": False}
    if "elongation_choice" not in old and old:  # before 0.9.5: the shrunk kernel was kept
        old = {**old, "elongation_choice": False}
    if "spectral_mix" not in old and old:  # before 0.9.6: no spectral mix
        old = {**old, "spectral_mix": 0.0}
    if "spectral_confidence" not in old and old:  # before 0.9.7: the restarts' agreement
        old = {**old, "spectral_confidence": False}
    if "width_refine" not in old and old:  # before 0.9.8: the calibration's grid point
        old = {**old, "width_refine": False}
    if "width_release" not in old and old:  # before 0.9.10: the calibration's full pull
        old = {**old, "width_release": False}
    if "clean_release" not in old and old:  # before 0.9.11: the clean-up's fixed n
        old = {**old, "clean_release": False}
    new = wanted["config"]
    # restart_iters acts through the top-level iters (the iterations actually run); a report
    # from before 0.8 has no such key, and a one-run output does not depend on it; nor on
    # restart_n_filtering; width_prior, elongation_choice, width_refine and width_release
    # matter only with width_calibration
    ignored = {"restart_iters"} | ({"restart_n_filtering"} if wanted["restarts"] == 1 else
                                   {"iters"})  # restarts: iters too acts through the top level
    if not old.get("width_calibration") and not new.get("width_calibration"):
        ignored |= {"width_prior", "elongation_choice", "width_refine", "width_release"}
    diff += [f"config.{k} (stored {old.get(k)}, asked {new[k]})" for k in new
             if k not in ignored and old.get(k) != new[k]]
    return diff
