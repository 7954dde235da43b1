"""Pool files review (0.9.26): a KAIR set read as one 1x1 kernel, exports over the pool they
export, kernels whose sum overflows, a KAIR ``scale`` that is no whole number, a histogram
written over the mosaic, ids lost on an export/import round trip, files left by a failed
export, and kernels larger than the degrader takes. Every refusal is one ``error:`` line,
exit code 1, nothing written.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat
from test_pool_qa import _cli, _fails_with

from kgengine.errors import KGEngineError, OutputError
from kgengine.export.graph import MAX_KERNEL_SIZE, MAX_SCALE
from kgengine.kernel import anisotropic_gaussian, center_kernel, check_kernel
from kgengine.kernel_files import read_kernel_file
from kgengine.pool import load_pool, make_pool, save_pool
from kgengine.pool_interop import MAX_SIZE, export_pool, import_kernels, prepare_kernel


def _kernel(i: int, size: int = 13) -> np.ndarray:
    """A centred kernel as kgengine saves it (an import keeps it as it is)."""
    k = anisotropic_gaussian(size, 1.0 + 0.4 * i, 0.9, 0.5 * i)
    for _ in range(6):
        k = center_kernel(k)
    return k


def _pool_file(path: Path, ids: list[str], size: int = 13) -> Path:
    pool = make_pool([_kernel(i, size) for i in range(len(ids))], ids,
                     [f"src{i}" for i in range(len(ids))], 2)
    return save_pool(path, pool)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ 1. KAIR set as one kernel
def test_kair_set_is_refused_by_the_single_kernel_readers(tmp_path) -> None:
    pool = _pool_file(tmp_path / "p.npz", ["k0", "k1", "k2"])
    kair = tmp_path / "set.mat"
    assert _cli("pool", "export", pool, "-o", kair, "--format", "kair-mat").exit_code == 0
    for args in (("pool", "info", kair), ("pool", "plot", kair, "-o", tmp_path / "m.png"),
                 ("pool", "export", kair, "-o", tmp_path / "o", "--format", "npy"),
                 ("export", "fixed", "--kernel", kair, "-o", tmp_path / "f.onnx")):
        _fails_with(_cli(*args), "set.mat", "holds a set of 3 kernels", "kgengine pool import")
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "f.onnx").exists()
    for read in (read_kernel_file, load_pool):
        with pytest.raises(KGEngineError, match="holds a set of 3 kernels"):
            read(kair)
    folder = tmp_path / "folder"
    folder.mkdir()
    kair.rename(folder / "set.mat")
    with pytest.raises(KGEngineError, match="holds a set of 3 kernels"):
        load_pool(folder)
    # what the message says works: the import reads the set, ids kept
    assert import_kernels([folder / "set.mat"]).pool.ids == ["k0", "k1", "k2"]


def test_a_scalar_is_not_the_only_2d_variable_of_a_mat(tmp_path) -> None:
    savemat(tmp_path / "ks.mat", {"k": _kernel(0), "sf": 2.0})
    np.testing.assert_allclose(read_kernel_file(tmp_path / "ks.mat"), _kernel(0), atol=1e-12)
    assert import_kernels([tmp_path / "ks.mat"]).pool.kernel_size == 13
    savemat(tmp_path / "scale.mat", {"scale": 2.0})
    with pytest.raises(KGEngineError, match="0 2-D variables larger than 1x1"):
        read_kernel_file(tmp_path / "scale.mat")
    _fails_with(_cli("pool", "info", tmp_path / "scale.mat"), "scale.mat", "0 2-D variables")


# ---------------------------------------------------------------- 2. export over its own pool
def test_export_over_the_pool_it_exports_is_refused(tmp_path) -> None:
    src = tmp_path / "src"
    pool = _pool_file(tmp_path / "p.npz", ["a", "b"])
    assert _cli("pool", "export", pool, "-o", src, "--format", "npy").exit_code == 0
    before = _files(src)
    for fmt in ("npy", "mat-folder"):
        _fails_with(_cli("pool", "export", src, "-o", f"{src}/", "--format", fmt, "--size", 3),
                    "is the pool being exported")
    _fails_with(_cli("pool", "export", src / "a.npy", "-o", src, "--format", "npy"),
                "would overwrite 'a.npy'", "pool being exported")
    assert _files(src) == before
    mat = tmp_path / "k.mat"
    savemat(mat, {"Kernel": _kernel(1)})
    data = mat.read_bytes()
    _fails_with(_cli("pool", "export", mat, "-o", tmp_path / "." / "k.mat", "--format",
                     "kair-mat"), "is the pool being exported", "another file")
    assert mat.read_bytes() == data
    with pytest.raises(KGEngineError, match="is the pool being exported"):
        export_pool(load_pool(src), src, "npy", source=src)
    # another folder is fine
    assert _cli("pool", "export", src, "-o", tmp_path / "other", "--format", "npy").exit_code == 0


# ------------------------------------------------------------------ 3. a sum that overflows
def test_kernel_whose_sum_is_not_finite_is_one_line_without_a_warning(tmp_path) -> None:
    huge = np.full((3, 3), 1e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(KGEngineError, match="x: kernel sum is not finite"):
            check_kernel(huge, "x")
        with pytest.raises(KGEngineError, match="y: kernel sum is not finite"):
            prepare_kernel(np.array([[1e308, -1e308, 1e308]]), "y")  # its positives overflow
        with pytest.raises(KGEngineError, match="z: kernel values are not finite"):
            check_kernel(np.array([[1e308, -1e308, 1e-10]]), "z")
    np.save(tmp_path / "huge.npy", huge)
    out = tmp_path / "p.npz"
    _fails_with(_cli("pool", "import", tmp_path / "huge.npy", "-o", out), "huge.npy",
                "kernel sum is not finite")
    _fails_with(_cli("pool", "info", tmp_path / "huge.npy"), "huge.npy", "not finite")
    assert not out.exists()


# ---------------------------------------------------------------- 4. a KAIR scale of NaN, 2.5
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 2.5, 2 + 1j, 0.0, 9, 1e300])
def test_kair_scale_must_be_a_whole_number(tmp_path, value) -> None:
    bad = tmp_path / "bad.mat"
    savemat(bad, {"kernels": np.stack([_kernel(0), _kernel(1)]), "scale": value})
    out = tmp_path / "p.npz"
    _fails_with(_cli("pool", "import", bad, "-o", out), "bad.mat",
                "'scale' must be a whole number in [1, 8]")
    assert not out.exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    bad.rename(folder / "bad.mat")
    np.save(folder / "ok.npy", _kernel(2))
    res = _cli("pool", "import", folder, "-o", out)
    assert res.exit_code == 1, res.output
    assert f"error: {folder / 'bad.mat'}: 'scale' must be a whole number" in res.output
    assert load_pool(out).ids == ["ok"]


def test_kair_scale_that_is_a_whole_float_is_taken(tmp_path) -> None:
    from kgengine.pool_import import MAX_SCALE as KAIR_MAX_SCALE

    assert KAIR_MAX_SCALE == MAX_SCALE
    path = tmp_path / "four.mat"
    savemat(path, {"kernels": np.stack([_kernel(0, 33)]), "scale": 4.0})
    assert import_kernels([path], 4).pool.scale == 4
    _fails_with(_cli("pool", "import", path, "-o", tmp_path / "p.npz"), "holds x4 kernels",
                "--scale 4")


# -------------------------------------------------------------- 5. histogram over the mosaic
def test_plot_hist_onto_the_mosaic_is_refused(tmp_path, monkeypatch) -> None:
    pool = _pool_file(tmp_path / "p.npz", ["a", "b"])
    monkeypatch.chdir(tmp_path)
    _fails_with(_cli("pool", "plot", pool, "-o", "a.png", "--hist", "./a.png"), "--hist",
                "mosaic")
    _fails_with(_cli("pool", "plot", pool, "-o", tmp_path / "a.png", "--hist", "a.png"),
                "--hist")
    assert not (tmp_path / "a.png").exists()


# --------------------------------------------------------------- 6. ids kept by a round trip
def test_export_then_import_keeps_every_id(tmp_path) -> None:
    ids = ["photo_kernel_x4", "img_kernel_x2", "a\nb_kernel_x2", "a\nb", "plain"]
    pool = _pool_file(tmp_path / "p.npz", ids)
    for fmt, out in (("mat-folder", tmp_path / "mf"), ("kair-mat", tmp_path / "k.mat")):
        assert _cli("pool", "export", pool, "-o", out, "--format", fmt).exit_code == 0
        assert sorted(import_kernels([out]).pool.ids) == sorted(ids), fmt
    # npy: the file name is the id; an id that would come back as another is refused
    out = tmp_path / "npy"
    _fails_with(_cli("pool", "export", pool, "-o", out, "--format", "npy"),
                "'photo_kernel_x4'", "x4 result file", "mat-folder or kair-mat")
    assert not any(out.iterdir())
    safe = ["a\nb", "plain", "x.mat", "k_kernel_x2.npy"]
    safe_pool = _pool_file(tmp_path / "s.npz", safe)
    assert _cli("pool", "export", safe_pool, "-o", out, "--format", "npy").exit_code == 0
    assert sorted(import_kernels([out]).pool.ids) == sorted(safe)


# ------------------------------------------------------- 7. a failed export leaves no files
def test_failed_npy_export_leaves_nothing(tmp_path, monkeypatch) -> None:
    pool = _pool_file(tmp_path / "p.npz", ["a", "b", "z" * 300])
    out = tmp_path / "out"
    _fails_with(_cli("pool", "export", pool, "-o", out, "--format", "npy"), "too long")
    assert list(out.iterdir()) == []
    # a write failing half-way (a full disk) leaves no file, nor its hidden folder
    import kgengine.pool_interop as interop

    real, calls = interop.save_npy, []

    def fail_third(path, array):
        calls.append(path)
        if len(calls) == 3:
            raise OutputError(path, "cannot write (No space left on device)")
        return real(path, array)

    good = load_pool(_pool_file(tmp_path / "g.npz", ["a", "b", "c", "d"]))
    monkeypatch.setattr(interop, "save_npy", fail_third)
    with pytest.raises(OutputError, match="No space left"):
        export_pool(good, out, "npy")
    assert list(out.iterdir()) == []
    monkeypatch.setattr(interop, "save_npy", real)
    export_pool(good, out, "npy")
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "b.npy", "c.npy", "d.npy"]
    # a failed re-export leaves the earlier files as they were
    before = _files(out)
    calls.clear()
    monkeypatch.setattr(interop, "save_npy", fail_third)
    with pytest.raises(OutputError):
        export_pool(load_pool(_pool_file(tmp_path / "g2.npz", ["a", "b", "c", "d"], 9)), out,
                    "npy")
    assert _files(out) == before and sorted(out.iterdir()) == sorted(out / n for n in before)


# -------------------------------------------------------- 8. kernels larger than 255 px a side
def test_kernels_over_the_degraders_limit(tmp_path) -> None:
    assert MAX_SIZE == MAX_KERNEL_SIZE == 255
    big = _pool_file(tmp_path / "big.npz", ["a"], 257)
    _fails_with(_cli("pool", "export", big, "-o", tmp_path / "o", "--format", "npy"),
                "big.npz", "257x257", "larger than the 255", "give --size")
    res = _cli("pool", "export", big, "-o", tmp_path / "o", "--format", "npy", "--size", 255)
    assert res.exit_code == 0, res.output
    np.save(tmp_path / "long.npy", np.ones((1, 5000)))
    out = tmp_path / "p.npz"
    _fails_with(_cli("pool", "import", tmp_path / "long.npy", "-o", out), "long.npy",
                "1x5000", "255 px")
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "long.npy").rename(folder / "long.npy")
    np.save(folder / "ok.npy", _kernel(0))
    res = _cli("pool", "import", folder, "-o", out)
    assert res.exit_code == 1 and f"error: {folder / 'long.npy'}: kernel is 1x5000" in res.output
    assert load_pool(out).ids == ["ok"]
    # 255 px, but its mass sits in a corner: re-centred it would need a larger canvas
    corner = np.zeros((255, 255))
    corner[:3, :3], corner[-1, -1] = 1.0, 1e-2
    np.save(tmp_path / "corner.npy", corner)
    _fails_with(_cli("pool", "import", tmp_path / "corner.npy", "-o", out), "corner.npy",
                "canvas, larger than 255")
