"""``kgengine pool import|export`` (:mod:`kgengine.pool_interop`) and ``degrade --min-confidence``.

The authors' KernelGAN kernels are rebuilt here with their own post-processing (transcribed
from KernelGAN's ``util.py``: ``zeroize_negligible_val``, ``kernel_shift``,
``analytic_kernel``), so the import is tested on what their result folders really hold.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.io import loadmat, savemat
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.degradation import MANIFEST, SETTINGS, kernel_row, read_manifest, rebuild_lr
from kgengine.degrade import degrade
from kgengine.errors import KGEngineError
from kgengine.imageio import to_uint8
from kgengine.kernel import (
    anisotropic_gaussian,
    bicubic_taps,
    center_kernel,
    center_of_mass,
    pad_to,
)
from kgengine.pool import KernelPool, load_pool, make_pool, save_pool
from kgengine.pool_interop import import_kernels, kair_kernels

IDS = ["img_01", "café", "x y"]


def _cli(*args: str):
    return CliRunner().invoke(app, ["pool", *args])


def _fails_with(res, *parts: str, alone: bool = True) -> None:
    """The command failed with one ``error:`` line holding every part (``alone``: and
    nothing else; ``degrade`` also draws its progress bar)."""
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1 and (len(lines) == 1 or not alone), res.output
    for part in parts:
        assert part in errors[0], res.output


def _centred(size: int, var1: float, var2: float, theta: float) -> np.ndarray:
    """A centred, asymmetric kernel (a skewed anisotropic Gaussian), sum 1, its centre of
    mass within 1e-7 px of the middle even in float32: in the convention, so an import
    leaves it as it is (it re-centres kernels more than 1e-6 px off)."""
    k = anisotropic_gaussian(size, var1, var2, theta)
    k[size // 2 + 1, size // 2 - 2] += 0.02
    for _ in range(6):  # center_kernel's clipping moves the centre a little: repeat
        k = center_kernel(k)
    c = size // 2
    np.testing.assert_allclose(center_of_mass(k.astype(np.float32)), [c, c], atol=1e-7)
    return k


@pytest.fixture()
def pool_file(tmp_path) -> Path:
    kernels = [_centred(13, 2.0, 0.7, 0.4), _centred(13, 1.2, 1.2, 0.0),
               _centred(13, 1.6, 0.9, 2.1)]
    pool = make_pool(kernels, IDS, ["a.png", "b.png", "c.png"], 2, seeds=[1, 2, 3],
                     confidences=[0.9, 0.3, None])
    return save_pool(tmp_path / "pool.npz", pool)


def _raw_kernels(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return data["kernels"]


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("fmt", ["npy", "mat-folder", "kair-mat"])
def test_export_then_import_gives_the_same_kernels_and_ids(tmp_path, pool_file, fmt, scale):
    pool = load_pool(pool_file)
    if scale == 4:
        pool_file = save_pool(tmp_path / "x4.npz", KernelPool(
            pool.kernels, pool.ids, pool.sources, pool.seeds, 4))
    out = tmp_path / ("set.mat" if fmt == "kair-mat" else "exported")
    res = _cli("export", str(pool_file), "-o", str(out), "--format", fmt)
    assert res.exit_code == 0, res.output
    assert f"wrote 3 kernels 13x13 as {fmt}" in res.output
    back_file = tmp_path / "back.npz"
    res = _cli("import", str(out), "-o", str(back_file), "--scale", str(scale))
    assert res.exit_code == 0, res.output
    assert "3 kernels 13x13" in res.output and "0 re-centred" in res.output
    back = load_pool(back_file)
    # a folder is read in file-name order, a KAIR set in its own order
    order = sorted(range(3), key=lambda i: IDS[i]) if fmt != "kair-mat" else [0, 1, 2]
    assert back.ids == [IDS[i] for i in order] and back.scale == scale
    np.testing.assert_allclose(_raw_kernels(back_file), pool.kernels[order], rtol=0,
                               atol=1e-12)
    files = {"npy": [out / f"{IDS[i]}.npy" for i in order],
             "mat-folder": [out / f"{IDS[i]}_kernel_x{scale}.mat" for i in order],
             "kair-mat": [f"{out}[{n}]" for n in range(3)]}[fmt]
    assert back.sources == [str(f) for f in files]


def test_exported_files_are_what_the_other_tools_read(tmp_path, pool_file) -> None:
    pool = load_pool(pool_file)
    assert _cli("export", str(pool_file), "-o", str(tmp_path / "m"), "--format",
                "mat-folder").exit_code == 0
    k = loadmat(tmp_path / "m" / "img_01_kernel_x2.mat")["Kernel"]  # KernelGAN/RealSR
    assert k.dtype == np.float64 and k.shape == (13, 13)
    np.testing.assert_array_equal(k, pool.kernels[0])
    assert _cli("export", str(pool_file), "-o", str(tmp_path / "s.mat"), "--format",
                "kair-mat").exit_code == 0
    kernels = loadmat(tmp_path / "s.mat")["kernels"]  # KAIR: kernels[0, i], convolved
    assert kernels.shape == (1, 3)
    np.testing.assert_array_equal(kernels[0, 2], pool.kernels[2][::-1, ::-1])
    assert _cli("export", str(pool_file), "-o", str(tmp_path / "n"), "--format",
                "npy").exit_code == 0
    assert np.load(tmp_path / "n" / "x y.npy").dtype == np.float32


def test_import_keeps_a_pools_provenance_and_merges_in_order(tmp_path, pool_file) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "b.npy", _centred(11, 1.5, 0.8, 1.0))
    np.save(folder / "a.npy", _centred(15, 2.0, 2.0, 0.0))
    result = import_kernels([pool_file, folder])
    pool = result.pool
    assert pool.ids == [*IDS, "a", "b"] and pool.kernel_size == 15
    assert pool.sources[:3] == [f"{pool_file}[{i}]" for i in range(3)]
    assert pool.seeds == [1, 2, 3, -1, -1]
    np.testing.assert_array_equal(pool.confidences, [0.9, 0.3, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(pool.kernels[0], pad_to(load_pool(pool_file).kernels[0], 15))
    with pytest.raises(KGEngineError, match=r"kernel id 'img_01' .* already taken by"):
        import_kernels([pool_file, pool_file])


# ----------------------------------------------------------------------- the authors' kernels
def _zeroize_negligible_val(k: np.ndarray, n: int = 40) -> np.ndarray:
    k_n_min = 0.75 * np.sort(k.flatten())[-n - 1]
    filtered_k = np.clip(k - k_n_min, a_min=0, a_max=100)
    return filtered_k / filtered_k.sum()


def _kernel_shift(kernel: np.ndarray, sf: int) -> np.ndarray:
    current = np.array(ndimage.center_of_mass(kernel))
    wanted = np.array(kernel.shape) // 2 + 0.5 * (sf - (np.array(kernel.shape) % 2))
    shift_vec = wanted - current
    kernel = np.pad(kernel, int(np.ceil(np.max(np.abs(shift_vec)))) + 1, "constant")
    return ndimage.shift(kernel, shift_vec)


def _analytic_kernel(k: np.ndarray) -> np.ndarray:
    k_size = k.shape[0]
    big_k = np.zeros((3 * k_size - 2, 3 * k_size - 2))
    for r in range(k_size):
        for c in range(k_size):
            big_k[2 * r:2 * r + k_size, 2 * c:2 * c + k_size] += k[r, c] * k
    crop = k_size // 2
    cropped = big_k[crop:-crop, crop:-crop]
    return cropped / cropped.sum()


def _authors_result_folder(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """``results/img/img_kernel_x2.mat`` (17x17) and ``img_kernel_x4.mat`` (33x33)."""
    k2 = _kernel_shift(_zeroize_negligible_val(anisotropic_gaussian(13, 3.0, 0.8, 0.5)), 2)
    kernels = {2: k2, 4: _analytic_kernel(k2)}
    folder = tmp_path / "results" / "img"
    folder.mkdir(parents=True)
    for s, k in kernels.items():
        savemat(folder / f"img_kernel_x{s}.mat", {"Kernel": k})
    return folder.parent, kernels


def _moments(img: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Total, centre of mass (2,) and central second moments (3,) of a 2-D image."""
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float64)
    total = img.sum()
    my, mx = (img * yy).sum() / total, (img * xx).sum() / total
    cov = [(img * (yy - my) ** 2).sum(), (img * (yy - my) * (xx - mx)).sum(),
           (img * (xx - mx) ** 2).sum()]
    return total, np.array([my, mx]), np.array(cov) / total


@pytest.mark.parametrize(("scale", "size", "off"), [(2, 17, 0.5), (4, 33, 1.5)])
def test_authors_kernel_is_recentred_and_degrades_only_shifted(tmp_path, scale, size, off):
    results, kernels = _authors_result_folder(tmp_path)
    original = kernels[scale]
    assert original.shape == (size, size) and original.min() < 0
    np.testing.assert_allclose(center_of_mass(original), [size // 2 + off] * 2, atol=1e-4)
    out = tmp_path / "imported.npz"
    res = _cli("import", str(results), "-o", str(out), "--scale", str(scale))
    assert res.exit_code == 0, res.output
    assert "1 re-centred" in res.output and "1 with negative values clipped" in res.output
    pool = load_pool(out)
    assert pool.ids == ["img"] and pool.scale == scale and len(pool) == 1  # not the other x
    assert pool.sources == [str(results / "img" / f"img_kernel_x{scale}.mat")]
    k = _raw_kernels(out)[0].astype(np.float64)
    assert k.shape == (size, size) and k.min() >= 0
    assert abs(k.sum() - 1) < 1e-6
    np.testing.assert_allclose(center_of_mass(k), [size // 2] * 2, rtol=0, atol=1e-6)
    # degrade: the LR of the imported kernel is the original's moved back by off/scale LR px
    yy, xx = np.mgrid[0:160, 0:160].astype(np.float64)
    hr = np.exp(-((yy - 70.3) ** 2 + (xx - 84.6) ** 2) / (2 * 9.0**2))
    t0, m0, c0 = _moments(degrade(hr, original, scale))
    t1, m1, c1 = _moments(degrade(hr, k, scale))
    np.testing.assert_allclose(m0 - m1, [-off / scale] * 2, atol=2e-3)
    np.testing.assert_allclose(t1, t0, rtol=5e-3)  # the clipped negatives only
    np.testing.assert_allclose(c1, c0, rtol=0, atol=5e-3 * c0.max())  # same blur


def test_negatives_of_a_centred_kernel_are_clipped(tmp_path) -> None:
    k = anisotropic_gaussian(11, 2.0, 2.0, 0.0) - 0.002  # symmetric: already centred
    np.save(tmp_path / "sharp.npy", k)
    result = import_kernels([tmp_path / "sharp.npy"])
    got = result.pool.kernels[0].astype(np.float64)
    assert not result.shifts.any() and result.negatives[0] > 0
    want = np.clip(k, 0, None)
    np.testing.assert_allclose(got, want / want.sum(), rtol=1e-6, atol=1e-9)


def test_a_kernel_near_its_edge_grows_the_canvas_rather_than_losing_mass(tmp_path) -> None:
    k = np.zeros((9, 9))
    k[0, 4], k[6, 4] = 1 / 6, 5 / 6  # two dots: centre of mass at row 5, one below the middle
    np.save(tmp_path / "dots.npy", k)
    result = import_kernels([tmp_path / "dots.npy"])
    np.testing.assert_allclose(result.shifts[0], [-1, 0], atol=1e-12)
    want = np.zeros((13, 13))  # moved up a whole pixel, one empty ring around (+2 rows)
    want[1, 6], want[7, 6] = 1 / 6, 5 / 6
    np.testing.assert_allclose(result.pool.kernels[0], want, rtol=0, atol=1e-7)


def test_result_folder_of_another_scale_says_which(tmp_path) -> None:
    folder = tmp_path / "res"
    folder.mkdir()
    savemat(folder / "a_kernel_x4.mat", {"Kernel": anisotropic_gaussian(13, 2, 2, 0)})
    _fails_with(_cli("import", str(folder), "-o", str(tmp_path / "p.npz")),
                str(folder), "use --scale 4")
    _fails_with(_cli("import", str(folder / "a_kernel_x4.mat"), "-o", str(tmp_path / "p.npz")),
                "a_kernel_x4.mat", "use --scale 4")
    assert not (tmp_path / "p.npz").exists()


# ------------------------------------------------------------------------------ KAIR sets
def _kair_set() -> list[np.ndarray]:
    return [_centred(15, 2.5, 1.0, 0.3), _centred(15, 1.0, 2.0, 1.9),
            _centred(15, 1.5, 1.5, 0.0)]


@pytest.mark.parametrize("layout", ["cell (1,N)", "cell (N,1)", "(K,K,N)", "(N,K,K)"])
def test_kair_kernels_in_every_layout(tmp_path, layout) -> None:
    kernels = _kair_set()
    if layout.startswith("cell"):
        value = np.empty((1, 3) if layout == "cell (1,N)" else (3, 1), dtype=object)
        for i, k in enumerate(kernels):
            value.flat[i] = k
    else:
        value = np.stack(kernels, axis=2 if layout == "(K,K,N)" else 0)
    path = tmp_path / "kernels_12.mat"
    savemat(path, {"kernels": value})
    assert loadmat(path)["kernels"].shape == value.shape  # the layout survived the file
    pool = import_kernels([path], 2).pool
    assert pool.ids == ["kernels_12_000", "kernels_12_001", "kernels_12_002"]
    assert pool.sources == [f"{path}[{i}]" for i in range(3)]
    # KAIR convolves: each kernel is rotated 180° into kgengine's correlation (0.9.28)
    np.testing.assert_array_equal(pool.kernels,
                                  np.stack(kernels)[:, ::-1, ::-1].astype(np.float32))


def test_kair_cells_of_mixed_sizes_are_padded_and_centred(tmp_path) -> None:
    taps = bicubic_taps(2)
    cells = np.empty((1, 3), dtype=object)
    cells[0, 0], cells[0, 1], cells[0, 2] = _centred(11, 1.0, 2.0, 0.5), np.outer(
        taps, taps), _centred(21, 6.0, 3.0, 1.0)
    savemat(tmp_path / "mixed.mat", {"kernels": cells})
    result = import_kernels([tmp_path / "mixed.mat"], 4)
    pool = result.pool
    assert pool.kernel_size == 21 and pool.scale == 4
    np.testing.assert_allclose(result.shifts[1], [0.5, 0.5], atol=1e-12)  # 8x8: between pixels
    assert not result.shifts[[0, 2]].any()
    for k in pool.kernels.astype(np.float64):
        np.testing.assert_allclose(center_of_mass(k), [10, 10], rtol=0, atol=1e-6)
        assert abs(k.sum() - 1) < 1e-6 and k.min() >= 0


def test_kair_ambiguous_or_bad_layouts_are_refused(tmp_path) -> None:
    savemat(tmp_path / "cube.mat", {"kernels": np.ones((5, 5, 5))})
    _fails_with(_cli("import", str(tmp_path / "cube.mat"), "-o", str(tmp_path / "p.npz")),
                "cube.mat", "could be (K,K,N) or (N,K,K)")
    for value, message in [(np.ones((3, 4, 5)), "got shape (3, 4, 5)"),
                           (np.empty((2, 2), dtype=object), "(1,N) or (N,1)")]:
        with pytest.raises(KGEngineError, match=re.escape(message)):
            kair_kernels(value, "f.mat")


# ----------------------------------------------------------------------------- export --size
def test_size_crop_keeps_the_centre_pixel_and_sum_one(tmp_path) -> None:
    wide = [_centred(21, 9.0, 4.0, 0.7), _centred(21, 5.0, 5.0, 0.0)]
    path = save_pool(tmp_path / "wide.npz", make_pool(wide, ["w0", "w1"], ["a", "b"], 2))
    pool = load_pool(path)
    res = _cli("export", str(path), "-o", str(tmp_path / "srmd"), "--format", "npy",
               "--size", "15")
    assert res.exit_code == 0, res.output
    assert "2 kernels 15x15" in res.output and "the crop dropped up to" in res.output
    for i, k in enumerate(pool.kernels.astype(np.float64)):
        got = np.load(tmp_path / "srmd" / f"w{i}.npy").astype(np.float64)
        inner = k[3:18, 3:18]
        assert got.shape == (15, 15) and abs(got.sum() - 1) < 1e-6
        assert inner.sum() < 0.999  # the crop did drop mass
        np.testing.assert_allclose(got[7, 7], k[10, 10] / inner.sum(), rtol=1e-6)
        np.testing.assert_allclose(got, inner / inner.sum(), rtol=1e-6, atol=1e-9)
    # padding keeps the values, around the same centre
    assert _cli("export", str(path), "-o", str(tmp_path / "big"), "--format", "npy",
                "--size", "25").exit_code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "big" / "w0.npy"), pad_to(
        pool.kernels[0], 25).astype(np.float32))


def test_even_size_is_refused(tmp_path, pool_file) -> None:
    _fails_with(_cli("export", str(pool_file), "-o", str(tmp_path / "o"), "--format", "npy",
                     "--size", "14"), "--size must be odd", "got 14")
    assert not (tmp_path / "o").exists()


def test_export_into_a_folder_of_other_kernels_is_refused(tmp_path, pool_file) -> None:
    out = tmp_path / "o"
    out.mkdir()
    np.save(out / "stale.npy", np.ones((3, 3)))
    _fails_with(_cli("export", str(pool_file), "-o", str(out), "--format", "npy"),
                str(out), "stale.npy")


# ---------------------------------------------------------------------------- bad inputs
def test_bad_files_in_a_folder_are_left_out_and_named(tmp_path) -> None:
    """Cut-short, NaN, all-zero and broken-link kernel files among a folder's results: an
    error line each, the others imported (exit code 1); a folder with no usable file: one
    line, no pool."""
    folder = tmp_path / "res"
    (folder / "sub").mkdir(parents=True)
    good = anisotropic_gaussian(13, 2, 2, 0)
    savemat(folder / "a_kernel_x2.mat", {"Kernel": good})
    (folder / "b_kernel_x2.mat").write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    np.save(folder / "sub" / "c_kernel_x2.npy", np.full((5, 5), np.nan))
    np.save(folder / "d.npy", np.zeros((3, 3)))
    (folder / "e_kernel_x2.npy").symlink_to(folder / "gone.npy")
    out = tmp_path / "p.npz"
    res = CliRunner().invoke(app, ["pool", "import", str(folder), "-o", str(out)])
    assert res.exit_code == 1, res.output
    errors = sorted(x for x in res.output.splitlines() if x.startswith("error: "))
    assert len(errors) == 4 and errors[0].startswith(  # the exception's name is SciPy's
        f"error: {folder / 'b_kernel_x2.mat'}: cannot read .mat file ("), res.output
    assert errors[1:] == [
        f"error: {folder / 'd.npy'}: kernel sum is 0, must be > 0",
        f"error: {folder / 'e_kernel_x2.npy'}: a symbolic link to nothing (broken, or a loop)",
        f"error: {folder / 'sub' / 'c_kernel_x2.npy'}: kernel contains NaN or inf values",
    ], res.output
    assert "4 kernel file(s) failed and were left out" in res.output
    pool = load_pool(out)
    assert pool.ids == ["a"]
    np.testing.assert_allclose(pool.kernels[0], good / good.sum(), atol=1e-7)
    result = import_kernels([folder])
    assert sorted(result.failed) == [folder / "b_kernel_x2.mat", folder / "d.npy",
                                     folder / "e_kernel_x2.npy", folder / "sub" / "c_kernel_x2.npy"]
    (folder / "a_kernel_x2.mat").unlink()
    out.unlink()
    _fails_with(_cli("import", str(folder), "-o", str(out)),
                "no kernel to import: all 4 kernel files of the sources failed (the first: ")
    assert not out.exists()


def test_corrupt_or_missing_mat_is_one_line_naming_the_file(tmp_path) -> None:
    (tmp_path / "b_kernel_x2.mat").write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    out = tmp_path / "p.npz"
    _fails_with(_cli("import", str(tmp_path / "b_kernel_x2.mat"), "-o", str(out)),
                str(tmp_path / "b_kernel_x2.mat"))
    missing = tmp_path / "gone_kernel_x2.mat"
    _fails_with(_cli("import", str(missing), "-o", str(out)), str(missing), "no such file")
    savemat(tmp_path / "nan.mat", {"Kernel": np.full((5, 5), np.nan)})
    _fails_with(_cli("import", str(tmp_path / "nan.mat"), "-o", str(out)), "nan.mat",
                "NaN or inf")
    savemat(tmp_path / "two.mat", {"a": np.ones((3, 3)), "b": np.ones((3, 3))})
    _fails_with(_cli("import", str(tmp_path / "two.mat"), "-o", str(out)), "two.mat",
                "2 2-D variables")
    assert not out.exists()


# ----------------------------------------------------------------- degrade --min-confidence
def _confident_pool(tmp_path: Path) -> tuple[Path, Path]:
    """A pool of 5 kernels k0-k4 with confidences 0.9, 0.2, unknown, 0.7, 0.65, and an
    empty HR folder: (pool file, folder)."""
    kernels = [_centred(11, v1, v2, th) for v1, v2, th in
               [(0.8, 2.0, 0.3), (1.5, 1.5, 0.0), (2.5, 0.7, 1.2), (1.0, 2.5, 2.0),
                (2.0, 1.0, 0.9)]]
    ids = ["k0", "k1", "k2", "k3", "k4"]
    pool_path = save_pool(tmp_path / "pool.npz", make_pool(
        kernels, ids, ids, 2, confidences=[0.9, 0.2, None, 0.7, 0.65]))
    hr = tmp_path / "hr"
    hr.mkdir()
    return pool_path, hr


def test_degrade_min_confidence_uses_exactly_the_passing_rows(tmp_path) -> None:
    pool_path, hr = _confident_pool(tmp_path)
    rng = np.random.default_rng(1)
    names = [f"im{i}.png" for i in range(6)]
    for name in names:
        Image.fromarray(to_uint8(rng.random((24, 28, 3)))).save(hr / name)
    out = tmp_path / "pairs"

    def run(*extra: str):
        return CliRunner().invoke(app, ["degrade", str(hr), "-k", str(pool_path), "-o",
                                        str(out), "--provider", "cpu", *extra])

    res = run("--min-confidence", "0.66")
    assert res.exit_code == 0, res.output
    passing = load_pool(pool_path, min_confidence=0.66)
    assert passing.ids == ["k0", "k3"]
    settings = json.loads((out / SETTINGS).read_text())
    assert settings["min_confidence"] == 0.66 and settings["n_kernels"] == 2
    entries = read_manifest(out / MANIFEST)
    assert {e["kernel_id"] for e in entries.values()} == {"k0", "k3"}  # both, and only them
    for name, e in entries.items():
        assert e["kernel_row"] == kernel_row(0, name, 2)
        assert passing.ids[e["kernel_row"]] == e["kernel_id"]
        lr = np.asarray(Image.open(out / e["lr"]), dtype=np.int32)
        assert np.abs(lr - to_uint8(rebuild_lr(e, passing)).astype(np.int32)).max() <= 1
    # 0.68 keeps the same rows (same pool fingerprint): only the threshold tells them apart
    _fails_with(run("--min-confidence", "0.68"), "min_confidence=0.66", "not 0.68",
                alone=False)
    _fails_with(run(), "use another output folder", alone=False)  # no filter: another pool
    res = run("--min-confidence", "0.66")
    assert res.exit_code == 0 and "0 pairs written, 6 already there" in res.output


def test_degrade_top_uses_the_most_confident_fraction(tmp_path) -> None:
    """``degrade --top F`` uses exactly the kernels ``pool filter --top F`` keeps, records
    their threshold, resumes with the same F and refuses a different one."""
    pool_path, hr = _confident_pool(tmp_path)
    rng = np.random.default_rng(2)
    for i in range(4):
        Image.fromarray(to_uint8(rng.random((24, 28, 3)))).save(hr / f"im{i}.png")
    out = tmp_path / "pairs"

    def run(*extra: str):
        return CliRunner().invoke(app, ["degrade", str(hr), "-k", str(pool_path), "-o",
                                        str(out), "--provider", "cpu", *extra])

    res = run("--top", "0.5")  # 4 known confidences: the 2 highest, 0.9 and 0.7
    assert res.exit_code == 0, res.output
    assert "confidence >= 0.7, 2 kernels kept" in res.output
    settings = json.loads((out / SETTINGS).read_text())
    assert settings["min_confidence"] == 0.7 and settings["n_kernels"] == 2
    entries = read_manifest(out / MANIFEST)
    assert {e["kernel_id"] for e in entries.values()} <= {"k0", "k3"} and len(entries) == 4
    assert run("--top", "0.5").exit_code == 0  # a resume
    _fails_with(run("--top", "0.75"), "use another output folder", alone=False)  # 3 kernels
    _fails_with(run("--top", "0.5", "--min-confidence", "0.7"),
                "give at most one of --min-confidence and --top")
    _fails_with(run("--top", "1.5"), r"top fraction must be in (0, 1]", alone=False)


def _round_trip(tmp_path: Path, kernels: list[np.ndarray], fmt: str) -> tuple:
    """Export a pool of ``kernels`` in ``fmt`` and import it back: (pool, CLI output, back)."""
    ids = [f"k{i}" for i in range(len(kernels))]
    pool = make_pool(kernels, ids, [f"{i}.png" for i in ids], 2)
    save_pool(tmp_path / "p.npz", pool)
    out = tmp_path / ("k.mat" if fmt == "kair-mat" else "k")
    assert _cli("export", str(tmp_path / "p.npz"), "-o", str(out), "--format", fmt).exit_code == 0
    res = _cli("import", str(out), "-o", str(tmp_path / "back.npz"))
    assert res.exit_code == 0, res.output
    return pool, res.output, load_pool(tmp_path / "back.npz")


@pytest.mark.parametrize("fmt", ["npy", "mat-folder", "kair-mat"])
def test_export_then_import_gives_the_pool_back(tmp_path, fmt):
    """Kernels centred to within 1e-5 px (what kgengine's own centring leaves; a farm's
    kernel measured 1.04e-5) come back from each export format with their size and float32
    bytes (before 0.9.20 they were re-centred onto a 15×15 canvas); one 0.01 px off is
    still re-centred."""
    near = [ndimage.shift(anisotropic_gaussian(13, v, 2.0, 0.5), (1e-5, -1e-5), order=3)
            for v in (1.0, 1.5)]
    pool, output, back = _round_trip(tmp_path, near, fmt)
    assert "2 kernels 13x13" in output and "0 re-centred" in output
    np.testing.assert_array_equal(back.kernels, pool.kernels)
    off = ndimage.shift(anisotropic_gaussian(13, 1.5, 1.5, 0.0), (0.01, 0.0), order=3)
    _, output, _ = _round_trip(tmp_path / "off", [off], fmt)
    assert "1 re-centred (largest shift 0.01 px)" in output


# ------------------------------------------------- KAIR convolves (0.9.28 review)
def _comet() -> np.ndarray:
    """A 9x9 kernel that is not point-symmetric, centre of mass exactly on (4, 4)."""
    k = np.zeros((9, 9))
    k[4, 3], k[4, 6] = 2.0, 1.0  # columns: (2*3 + 6) / 3 = 4
    k[1, 4], k[5, 4] = 1.0, 3.0  # rows: (1 + 15 + 4*3) / 7 = 4 with the row-4 mass
    k = ndimage.gaussian_filter(k, 0.6)
    k /= k.sum()
    assert np.abs(k - k[::-1, ::-1]).max() > 1e-2
    return k


def _kair_lr(hr: np.ndarray, k: np.ndarray, s: int) -> np.ndarray:
    """KAIR's ``utils_sisr.classical_degradation`` (SciPy convolve, phase 0), with the
    mirror border that kgengine's degrade uses (KAIR wraps; only the border differs)."""
    return ndimage.convolve(hr, k[..., None], mode="mirror")[::s, ::s]


def test_a_kair_kernel_blurs_in_degrade_as_it_does_in_kair(tmp_path) -> None:
    k = _comet()
    cells = np.empty((1, 1), dtype=object)
    cells[0, 0] = k
    savemat(tmp_path / "set.mat", {"kernels": cells})
    pool = import_kernels([tmp_path / "set.mat"], 2).pool
    hr = np.random.default_rng(0).random((40, 36, 3))
    want = _kair_lr(hr, k, 2)
    np.testing.assert_allclose(degrade(hr, pool.kernels[0].astype(np.float64), 2), want,
                               atol=1e-6)
    # unrotated it would be another blur: the test can tell
    assert np.abs(degrade(hr, k, 2) - want).max() > 1e-3


def test_a_kair_mat_export_blurs_in_kair_as_it_does_in_degrade(tmp_path) -> None:
    k = _comet().astype(np.float32)
    pool = KernelPool(k[None], ["c"], ["c.npy"], [0], 2)
    save_pool(tmp_path / "p.npz", pool)
    assert _cli("export", str(tmp_path / "p.npz"), "-o", str(tmp_path / "s.mat"), "--format",
                "kair-mat").exit_code == 0
    data = loadmat(tmp_path / "s.mat")
    assert str(data["convention"][0]) == "convolution"
    hr = np.random.default_rng(1).random((33, 40, 3))
    np.testing.assert_allclose(_kair_lr(hr, data["kernels"][0, 0], 2),
                               degrade(hr, k.astype(np.float64), 2), atol=1e-6)
    # and it imports back to the same kernel
    np.testing.assert_array_equal(import_kernels([tmp_path / "s.mat"], 2).pool.kernels[0], k)


def test_an_export_made_before_0928_is_read_unrotated(tmp_path) -> None:
    """kgengine's kair-mat files before 0.9.28 held the correlation kernels, with an ``ids``
    cell and no ``convention``: they are read as they were written."""
    k = _comet()
    cells, ids = np.empty((1, 1), dtype=object), np.empty((1, 1), dtype=object)
    cells[0, 0], ids[0, 0] = k, "c"
    savemat(tmp_path / "old.mat", {"kernels": cells, "ids": ids, "scale": np.int64(2)})
    np.testing.assert_allclose(import_kernels([tmp_path / "old.mat"], 2).pool.kernels[0], k,
                               atol=1e-7)
    conv = np.empty((1, 1), dtype=object)  # a MATLAB cell {'correlation'}
    conv[0, 0] = "correlation"
    savemat(tmp_path / "cell.mat", {"kernels": cells, "convention": conv})
    np.testing.assert_allclose(import_kernels([tmp_path / "cell.mat"], 2).pool.kernels[0], k,
                               atol=1e-7)
    savemat(tmp_path / "bad.mat", {"kernels": cells, "convention": "flipped"})
    with pytest.raises(KGEngineError, match="bad.mat: 'convention' must be"):
        import_kernels([tmp_path / "bad.mat"], 2)
