"""Pool and export QA fixes: kgengine's own kernel folders import one kernel per image (not
the ``.npy`` and ``.mat`` twice, nor the x4 kernels with the x2 ones), option values are
bounded (``--tile``, ``--scale``, ``--kernel-size``, ``--size``, ``--bins``), a pool's
confidences must lie in [0, 1] (NaN: unknown), and an output name must have the extension
of what is written (``.onnx``, ``.png``). Every refusal is one ``error:`` line, exit code 1,
nothing written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat
from typer.testing import CliRunner

from kgengine.api import EstimateResult
from kgengine.cli import app
from kgengine.errors import KGEngineError
from kgengine.export import build_fixed_model, build_pool_model
from kgengine.kernel import analytic_x4, anisotropic_gaussian, center_kernel
from kgengine.outputs import write_outputs
from kgengine.pool import KernelPool, load_pool, make_pool, save_pool
from kgengine.pool_interop import MAX_SIZE, export_pool, import_kernels

NAMES = ["b00", "b01", "b02", "b03"]


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _fails_with(res, *parts: str) -> None:
    """Exit code 1 and one output line, ``error: ...``, holding every part."""
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for part in parts:
        assert part in lines[0], res.output


def _kernel(i: int) -> np.ndarray:
    """A 13x13 kernel as kgengine saves it: float64, sum 1, centred (an import keeps it)."""
    k = anisotropic_gaussian(13, 1.0 + 0.5 * i, 0.8, 0.4 * i)
    for _ in range(6):
        k = center_kernel(k)
    return k


def _estimate_folder(folder: Path, x4: bool = True) -> Path:
    """What ``kgengine estimate`` (and a farm's ``kernels/``) writes for 4 images: per image
    ``_kernel_x2.npy`` / ``.mat`` (+ x4), ``_kernel.png``, ``_generator.npz``, report."""
    for i, name in enumerate(NAMES):
        k = _kernel(i)
        write_outputs(EstimateResult(name, k, analytic_x4(k) if x4 else None, {"seed": i},
                                     [np.zeros((1, 1, 1, 1), np.float32)] * 6, k), folder)
    return folder


def _pool_kernels(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return data["kernels"]


# ------------------------------------------------------------------ import: one per image
def test_estimate_folder_imports_one_x2_kernel_per_image(tmp_path) -> None:
    folder = _estimate_folder(tmp_path / "est")
    out = tmp_path / "imp.npz"
    res = _cli("pool", "import", folder, "-o", out)
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines() == [
        f"wrote {out}: 4 kernels 13x13 (x2); 0 re-centred; 0 with negative values clipped; "
        "skipped 4 .mat files with a .npy of the same name and 8 x4 kernel files "
        "(--scale 4 reads them)"]
    pool = load_pool(out)
    assert pool.ids == NAMES and pool.scale == 2
    assert pool.sources == [str(folder / f"{n}_kernel_x2.npy") for n in NAMES]
    for k, name in zip(_pool_kernels(out), NAMES, strict=True):  # the very bytes, as float32
        src = np.load(folder / f"{name}_kernel_x2.npy").astype(np.float32)
        assert k.tobytes() == src.tobytes()


def test_estimate_folder_at_x4_takes_the_x4_kernels_only(tmp_path) -> None:
    folder = _estimate_folder(tmp_path / "est")
    result = import_kernels([folder], scale=4)
    assert result.pool.ids == NAMES and result.pool.kernel_size >= 37
    assert result.pool.sources == [str(folder / f"{n}_kernel_x4.npy") for n in NAMES]
    assert sorted(set(result.skipped.values())) == ["twin", "x2"]
    assert {p.name for p, why in result.skipped.items() if why == "twin"} == {
        f"{n}_kernel_x4.mat" for n in NAMES}
    assert len(result.skipped) == 4 + 8


def test_farm_kernels_folder_gives_the_farm_pool(tmp_path) -> None:
    """A farm's ``kernels/`` (no x4) imports as the same kernels, ids and order as the pool
    file built from them, byte for byte; nothing is skipped but the ``.mat`` twins."""
    kernels = _estimate_folder(tmp_path / "pool" / "kernels", x4=False)
    farm_pool = save_pool(tmp_path / "pool" / "kernel_pool.npz", make_pool(
        [_kernel(i) for i in range(4)], NAMES, NAMES, 2))
    out = tmp_path / "imp.npz"
    res = _cli("pool", "import", kernels, "-o", out)
    assert res.exit_code == 0, res.output
    assert "4 kernels 13x13" in res.output and "skipped 4 .mat files" in res.output
    assert "x4" not in res.output
    assert _pool_kernels(out).tobytes() == _pool_kernels(farm_pool).tobytes()
    assert load_pool(out).ids == load_pool(farm_pool).ids


def test_a_kernel_as_npy_and_mat_of_one_stem_is_read_once_from_the_npy(tmp_path) -> None:
    folder = tmp_path / "k"
    folder.mkdir()
    for i, name in enumerate(["a", "b"]):
        np.save(folder / f"{name}.npy", _kernel(i))
        savemat(folder / f"{name}.mat", {"Kernel": _kernel(i)})
    savemat(folder / "c.mat", {"Kernel": _kernel(2)})  # a .mat alone is read
    result = import_kernels([folder])
    assert result.pool.ids == ["a", "b", "c"]
    assert result.pool.sources == [str(folder / "a.npy"), str(folder / "b.npy"),
                                   str(folder / "c.mat")]
    assert result.skipped == {folder / "a.mat": "twin", folder / "b.mat": "twin"}
    for i, k in enumerate(result.pool.kernels):
        assert k.tobytes() == _kernel(i).astype(np.float32).tobytes()


def test_result_named_npy_has_the_result_id_and_its_scale_is_checked(tmp_path) -> None:
    np.save(tmp_path / "img_kernel_x2.npy", _kernel(0))
    np.save(tmp_path / "img_kernel_x4.npy", _kernel(1))
    assert import_kernels([tmp_path / "img_kernel_x2.npy"]).pool.ids == ["img"]
    out = tmp_path / "p.npz"
    _fails_with(_cli("pool", "import", tmp_path / "img_kernel_x4.npy", "-o", out),
                "img_kernel_x4.npy", "an x4 kernel", "use --scale 4")
    assert not out.exists()


def test_a_folder_of_other_scale_kernels_only_says_which_scale(tmp_path) -> None:
    folder = tmp_path / "x4only"
    folder.mkdir()
    np.save(folder / "a_kernel_x4.npy", _kernel(0))
    out = tmp_path / "p.npz"
    _fails_with(_cli("pool", "import", folder, "-o", out), str(folder), "use --scale 4")
    assert not out.exists()


# ------------------------------------------------------------------------ option bounds
@pytest.fixture()
def kernel_file(tmp_path) -> Path:
    np.save(tmp_path / "k.npy", _kernel(0))
    return tmp_path / "k.npy"


@pytest.mark.parametrize("tile", ["500", "128", "9", "0"])
def test_export_tile_outside_1_to_8_is_one_line(tmp_path, kernel_file, tile) -> None:
    out = tmp_path / "t.onnx"
    for kind in (["fixed", "--kernel", kernel_file], ["pool"]):
        _fails_with(_cli("export", *kind, "-o", out, "--tile", tile),
                    f"--tile must be an integer in [1, 8], got {tile}")
    assert not out.exists()


def test_export_tile_8_keeps_the_model_small(tmp_path, kernel_file) -> None:
    out = tmp_path / "t8.onnx"
    assert _cli("export", "fixed", "--kernel", kernel_file, "-o", out, "--tile", "8",
                "--scale", "4").exit_code == 0
    assert out.stat().st_size < 500_000  # 13x13 at x4: 0.26 MB (t = 64 wrote 316 MB)
    big = build_pool_model(37, 4, tile=8).ByteSize()  # a kgengine x4 pool's kernel size
    assert big < 3_000_000


def test_export_scale_and_kernel_size_bounds(tmp_path) -> None:
    out = tmp_path / "p.onnx"
    _fails_with(_cli("export", "pool", "-o", out, "--kernel-size", "99999"),
                "--kernel-size must be an odd integer in [1, 255], got 99999")
    _fails_with(_cli("export", "pool", "-o", out, "--kernel-size", "12"),
                "--kernel-size", "odd", "got 12")
    _fails_with(_cli("export", "pool", "-o", out, "--scale", "100000"),
                "--scale must be an integer in [1, 8], got 100000")
    assert not out.exists()
    with pytest.raises(KGEngineError, match=r"tile must be an integer in \[1, 8\], got 64"):
        build_fixed_model(_kernel(0), 2, tile=64)
    with pytest.raises(KGEngineError, match=r"kernel side must be an integer in \[1, 255\]"):
        build_fixed_model(np.ones((301, 301)) / 301**2, 2)


def test_pool_export_size_is_bounded_and_nothing_is_written(tmp_path) -> None:
    pool = save_pool(tmp_path / "pool.npz", make_pool([_kernel(0)], ["a"], ["a"], 2))
    out = tmp_path / "out"
    _fails_with(_cli("pool", "export", pool, "-o", out, "--format", "npy", "--size", "99999"),
                f"--size must be odd and in [1, {MAX_SIZE}]", "got 99999")
    assert not out.exists()
    with pytest.raises(KGEngineError, match="--size"):
        export_pool(load_pool(pool), out, "npy", 257)
    assert not out.exists()
    res = _cli("pool", "export", pool, "-o", out, "--format", "npy", "--size", str(MAX_SIZE))
    assert res.exit_code == 0, res.output
    assert np.load(out / "a.npy").shape == (MAX_SIZE, MAX_SIZE)


def test_pool_info_bins_are_bounded(tmp_path) -> None:
    pool = save_pool(tmp_path / "pool.npz", make_pool([_kernel(0)], ["a"], ["a"], 2))
    _fails_with(_cli("pool", "info", pool, "--bins", "10000000"),
                "--bins must be in [1, 100], got 10000000")
    assert _cli("pool", "info", pool, "--bins", "100").exit_code == 0


# ------------------------------------------------------------------------- confidences
def _pool_with_confidences(path: Path, conf: list[float]) -> Path:
    """A pool file written as ``save_pool`` does, its ``confidences`` array replaced."""
    good = save_pool(path, make_pool([_kernel(i) for i in range(len(conf))],
                                     NAMES[:len(conf)], NAMES[:len(conf)], 2))
    with np.load(good, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["confidences"] = np.array(conf, dtype=np.float64)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


@pytest.mark.parametrize("bad", [1.5, -0.2, np.inf, -np.inf])
def test_confidence_outside_0_1_is_refused_naming_the_file(tmp_path, bad) -> None:
    pool = _pool_with_confidences(tmp_path / "bad.npz", [0.5, bad, np.nan])
    out = tmp_path / "f.npz"
    _fails_with(_cli("pool", "info", pool), str(pool), "confidences must be in [0, 1]",
                "'b01'")
    _fails_with(_cli("pool", "filter", pool, "-o", out, "--min-confidence", "0.1"),
                str(pool), "confidences must be in [0, 1]")
    _fails_with(_cli("pool", "filter", pool, "-o", out, "--top", "0.5"), str(pool))
    assert not out.exists()
    with pytest.raises(KGEngineError, match="confidences must be in"):
        KernelPool(np.ones((1, 3, 3)) / 9, ["a"], ["a"], [1], 2, confidences=[bad])


def test_unknown_confidences_stay_legal(tmp_path) -> None:
    """NaN (and a pool written before confidences existed) means unknown; 1 + 1e-12 is the
    rounding of a mean of cosines, kept."""
    pool = _pool_with_confidences(tmp_path / "nan.npz", [np.nan, 1 + 1e-12, 0.0])
    res = _cli("pool", "info", pool)
    assert res.exit_code == 0 and "2 of 3 known" in res.output, res.output
    out = tmp_path / "f.npz"
    assert _cli("pool", "filter", pool, "-o", out, "--min-confidence", "0.5").exit_code == 0
    assert load_pool(out).ids == ["b01"]
    with np.load(pool, allow_pickle=False) as data:  # an old pool: no confidences array
        arrays = {k: data[k] for k in data.files if k != "confidences"}
    with open(tmp_path / "old.npz", "wb") as fh:
        np.savez(fh, **arrays)
    assert np.isnan(load_pool(tmp_path / "old.npz").confidences).all()


# ---------------------------------------------------------------------- output extensions
def test_plot_refuses_a_name_that_is_not_png(tmp_path) -> None:
    pool = save_pool(tmp_path / "pool.npz", make_pool([_kernel(0)], ["a"], ["a"], 2))
    _fails_with(_cli("pool", "plot", pool, "-o", tmp_path / "m4.jpg"),
                "m4.jpg", "give a file name ending in .png")
    _fails_with(_cli("pool", "plot", pool, "-o", tmp_path / "m.png", "--hist",
                     tmp_path / "h.jpeg"), "h.jpeg", ".png")
    _fails_with(_cli("pool", "plot", pool, "-o", tmp_path / "new" / "m.gif"), "m.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.npz"]  # no "new" folder
    _fails_with(_cli("pool", "plot", pool, "-o", tmp_path), "is a folder")  # as before
    assert _cli("pool", "plot", pool, "-o", tmp_path / "M.PNG").exit_code == 0


def test_export_refuses_a_name_that_is_not_onnx(tmp_path, kernel_file) -> None:
    for args in (["fixed", "--kernel", kernel_file], ["pool"],
                 ["generator", tmp_path / "no_generator.npz"]):
        _fails_with(_cli("export", *args, "-o", tmp_path / "f.txt"),
                    "f.txt", "give a file name ending in .onnx")
    _fails_with(_cli("export", "pool", "-o", tmp_path / "model"), "model", ".onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npy"]
