"""Per-image output files of an estimate, all written atomically.

``<name>_kernel_x2.npy`` / ``.mat`` (key ``Kernel``, as ZSSR, SRMD and USRNet load it),
``<name>_kernel_x4.npy`` / ``.mat`` with x4, ``<name>_kernel.png`` (picture of the
kernel(s)), ``<name>_generator.npz`` (the six trained G weights ``w0..w5``, for
``kgengine export generator``) and ``<name>_report.json``. The report is written last: its
presence marks the image as done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kgengine.api import EstimateResult
from kgengine.atomic import atomic_write, save_json, save_mat, save_npy


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


def kernel_picture(kernels: list[np.ndarray], cell: int = 192) -> np.ndarray:
    """Side-by-side heat maps of kernels, each scaled to ``cell`` px: (cell, n*cell, 3) uint8."""
    from kgengine.plotting import kernel_to_rgb

    tiles = []
    for k in kernels:
        rgb = kernel_to_rgb(k, max(1, cell // k.shape[0]))
        tiles.append(np.asarray(Image.fromarray(rgb).resize((cell, cell), Image.NEAREST)))
    return np.concatenate(tiles, axis=1)


def write_outputs(result: EstimateResult, outdir: str | Path) -> dict[str, Path]:
    """Write every output file of ``result`` into ``outdir``; returns the paths written."""
    paths = output_paths(outdir, result.name)
    written = {}
    kernels = [("x2", result.kernel_x2)]
    if result.kernel_x4 is not None:
        kernels.append(("x4", result.kernel_x4))
    for tag, k in kernels:
        written[f"{tag}_npy"] = save_npy(paths[f"{tag}_npy"], k.astype(np.float64))
        written[f"{tag}_mat"] = save_mat(paths[f"{tag}_mat"], {"Kernel": k.astype(np.float64)})
    pic = Image.fromarray(kernel_picture([k for _, k in kernels]))
    written["png"] = atomic_write(paths["png"], lambda tmp: pic.save(tmp, format="PNG"))

    def write_g(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{f"w{i}": w for i, w in enumerate(result.generator_weights)})

    written["generator"] = atomic_write(paths["generator"], write_g)
    report = dict(result.report, files={k: p.name for k, p in written.items()})
    written["report"] = save_json(paths["report"], report)
    return written


def is_done(outdir: str | Path, name: str, x4: bool) -> bool:
    """True if ``name``'s outputs (report last) already exist, so a rerun can skip it."""
    p = output_paths(outdir, name)
    return p["report"].exists() and (not x4 or p["x4_npy"].exists())
