"""Kernel pools: file round-trips, folder reading (.npy/.mat), padding, validation errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.io import savemat

from kgengine.errors import KGEngineError
from kgengine.kernel import anisotropic_gaussian, gaussian_kernel, pad_to
from kgengine.kernel import common_size as _common_size
from kgengine.ops.downscale import degrade_torch
from kgengine.pool import POOL_FILE, KernelPool, load_pool, make_pool, save_pool


def common_size(shapes: list[tuple[int, int]]) -> int:
    return _common_size(*[np.empty(s) for s in shapes])


def _raw_kernels() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [
        3.0 * gaussian_kernel(11, 1.2),  # not normalised: the pool renormalises
        anisotropic_gaussian(13, 1.0, 4.0, 0.7),
        rng.random((8, 8)),  # even size: centre index 4
        rng.random((7, 11)),  # non-square
    ]


@pytest.mark.parametrize("shape", [(9, 9), (8, 8), (7, 11), (13, 13)])
def test_pad_to_keeps_degrade(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    k = rng.random(shape)
    x = torch.from_numpy(rng.random((1, 3, 31, 28)))
    size = common_size([shape, (13, 13)])
    padded = pad_to(k, size)
    assert padded.shape == (size, size) and size % 2 == 1
    for s in (2, 3):
        ref = degrade_torch(x, torch.from_numpy(k), s)
        out = degrade_torch(x, torch.from_numpy(padded), s)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_common_size() -> None:
    assert common_size([(13, 13)]) == 13
    assert common_size([(8, 8)]) == 9  # centre index 4 needs 4 on each side
    assert common_size([(7, 11), (3, 3)]) == 11
    assert common_size([(11, 11), (25, 25)]) == 25


def test_make_pool_pads_and_normalises() -> None:
    raw = _raw_kernels()
    pool = make_pool(raw, ["a", "b", "c", "d"], ["a.png", "b.png", "c.png", "d.png"], 2)
    assert pool.kernels.shape == (4, 13, 13) and pool.kernels.dtype == np.float32
    np.testing.assert_allclose(pool.kernels.sum(axis=(1, 2)), 1.0, atol=1e-6)
    # the 11x11 kernel sits in the middle: rows/cols 1..11
    np.testing.assert_allclose(pool.kernels[0, 1:12, 1:12], raw[0] / raw[0].sum(), atol=1e-7)
    # the 8x8 kernel: centre index 4 goes to 6, so rows/cols 2..9
    np.testing.assert_allclose(pool.kernels[2, 2:10, 2:10], raw[2] / raw[2].sum(), atol=1e-7)
    assert pool.seeds == [-1, -1, -1, -1] and pool.kernel_size == 13 and len(pool) == 4


def test_save_load_npz_round_trip(tmp_path) -> None:
    raw = _raw_kernels()
    reports = [{"iters": 3000, "loss": 0.1 * i, "ok": True} for i in range(4)]
    pool = make_pool(raw, ["a", "b", "c", "d"], ["x/a.png", "x/b.png", "c", "d"], 4,
                     seeds=[1, 2, 3, 4], reports=reports)
    path = save_pool(tmp_path, pool)
    assert path == tmp_path / POOL_FILE
    assert [p.name for p in tmp_path.iterdir()] == [POOL_FILE]  # no temporary file left
    with np.load(path, allow_pickle=False) as data:  # no pickled objects inside
        assert set(data.files) == {"kernels", "ids", "sources", "seeds", "scale", "index",
                                   "confidences"}
        assert data["ids"].tolist() == ["a", "b", "c", "d"]
        assert int(data["scale"]) == 4
    back = load_pool(path)
    np.testing.assert_array_equal(back.kernels, pool.kernels)
    assert back.ids == pool.ids and back.sources == pool.sources
    assert back.seeds == [1, 2, 3, 4] and back.scale == 4 and back.reports == reports
    assert back.fingerprint() == pool.fingerprint()
    # a folder holding a pool file (a farm's pool folder) means that file
    (tmp_path / "kernels").mkdir()
    np.save(tmp_path / "kernels" / "a.npy", raw[0])
    np.testing.assert_array_equal(load_pool(tmp_path).kernels, pool.kernels)
    # an explicit file name is used as given
    other = save_pool(tmp_path / "mine.npz", pool)
    assert other.name == "mine.npz" and load_pool(other).ids == pool.ids


def test_npz_without_reports_and_scale_mismatch(tmp_path) -> None:
    pool = make_pool([gaussian_kernel(13, 1.0)], ["only"], ["s.png"], 2)
    path = save_pool(tmp_path, pool)
    back = load_pool(path, scale=2)
    assert back.reports is None
    with pytest.raises(KGEngineError, match="pool holds x2 kernels, not x4"):
        load_pool(path, scale=4)


def test_load_folder_npy_and_mat(tmp_path) -> None:
    k1 = gaussian_kernel(11, 1.3)
    k2 = 5.0 * anisotropic_gaussian(13, 1.0, 3.0, 0.2)
    k3 = np.random.default_rng(1).random((9, 9))
    np.save(tmp_path / "a_kernel.npy", k1)
    savemat(tmp_path / "b_kernel.mat", {"Kernel": k2})  # ZSSR / KernelGAN / DIV2KRK layout
    savemat(tmp_path / "c_kernel.mat", {"k": k3, "note": "text"})  # the single 2-D variable
    (tmp_path / "README.txt").write_text("not a kernel")
    pool = load_pool(tmp_path, scale=4)
    assert pool.ids == ["a_kernel", "b_kernel", "c_kernel"] and pool.scale == 4
    assert pool.sources[1] == str((tmp_path / "b_kernel.mat").resolve())
    assert pool.kernels.shape == (3, 13, 13)
    for row, k in enumerate((k1, k2, k3)):
        np.testing.assert_allclose(pool.kernels[row], pad_to(k / k.sum(), 13), atol=1e-7)
    # a single kernel file is a pool of one
    one = load_pool(tmp_path / "b_kernel.mat")
    assert one.ids == ["b_kernel"] and one.scale == 2
    np.testing.assert_allclose(one.kernels[0], k2 / k2.sum(), atol=1e-7)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nan.npy", np.full((5, 5), np.nan), "NaN or inf"),
        ("cube.npy", np.ones((3, 5, 5)), "must be a 2-D array"),
        ("zero.npy", np.zeros((5, 5)), "sum is 0, must be > 0"),
        ("neg.npy", -np.ones((5, 5)), "must be > 0"),
        ("two.mat", {"a": np.ones((3, 3)), "b": np.ones((5, 5))}, "no 'Kernel' variable"),
        ("junk.npy", b"not an npy file", "cannot read .npy kernel"),
        ("junk.mat", b"not a mat file", "cannot read .mat file"),
    ],
)
def test_bad_kernel_file_is_named(tmp_path, name, content, message) -> None:
    np.save(tmp_path / "good.npy", gaussian_kernel(9, 1.0))
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        savemat(path, content)
    else:
        np.save(path, content)
    with pytest.raises(KGEngineError, match=message) as info:
        load_pool(tmp_path)
    assert str(path) in str(info.value)


def test_bad_pools(tmp_path) -> None:
    with pytest.raises(KGEngineError, match="no .npy or .mat kernel files"):
        load_pool(tmp_path)
    with pytest.raises(KGEngineError, match="no such kernel pool"):
        load_pool(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(KGEngineError, match="missing arrays"):
        load_pool(tmp_path / "other.npz")
    np.save(tmp_path / "k.npy", gaussian_kernel(5, 1.0))
    savemat(tmp_path / "k.mat", {"Kernel": gaussian_kernel(5, 1.0)})
    # a .mat beside its .npy (as estimate writes them) is left out (0.9.27)
    assert [s.rsplit("/", 1)[-1] for s in load_pool(tmp_path).sources] == ["k.npy"]
    with open(tmp_path / "k.NPY", "wb") as fh:  # two .npy files of one stem
        np.save(fh, gaussian_kernel(5, 1.2))
    with pytest.raises(KGEngineError, match="several kernel files named 'k'"):
        load_pool(tmp_path)
    with pytest.raises(KGEngineError, match="K odd"):
        KernelPool(np.ones((2, 4, 4), np.float32), ["a", "b"], ["", ""], [0, 0], 2)
    with pytest.raises(KGEngineError, match="not unique"):
        KernelPool(np.ones((2, 5, 5), np.float32), ["a", "a"], ["", ""], [0, 0], 2)


# ---------------------------------------------------------------------- confidences
IDS = ["a", "b", "c", "d", "e"]
CONF = [0.95, 0.5, None, 0.8, 0.8]  # None: unknown (a kernel estimated without restarts)


def _conf_pool(tmp_path, confidences=CONF):
    """Five pool rows (Gaussians of widths 1.0 .. 1.4, one per id) with ``confidences``."""
    kernels = [gaussian_kernel(13, 1.0 + 0.1 * i) for i in range(5)]
    reports = [{"n": i} for i in range(5)]
    pool = make_pool(kernels, IDS, [f"{i}.png" for i in IDS], 2, seeds=[10, 11, 12, 13, 14],
                     reports=reports, confidences=confidences)
    return save_pool(tmp_path / "pool.npz", pool), pool


def test_confidences_round_trip(tmp_path) -> None:
    path, pool = _conf_pool(tmp_path)
    want = np.array([0.95, 0.5, np.nan, 0.8, 0.8])
    np.testing.assert_array_equal(pool.confidences, want)  # NaN == NaN here
    with np.load(path, allow_pickle=False) as data:
        assert data["confidences"].dtype == np.float64
        np.testing.assert_array_equal(data["confidences"], want)
        index = json.loads(str(data["index"]))
    assert [row["confidence"] for row in index] == [0.95, 0.5, None, 0.8, 0.8]
    back = load_pool(path)
    assert back.confidences.dtype == np.float64
    np.testing.assert_array_equal(back.confidences, want)
    # a pool without confidences knows none of them
    assert np.isnan(make_pool([gaussian_kernel(9, 1.0)], ["x"], ["x"], 2).confidences).all()
    with pytest.raises(KGEngineError, match="5 kernels but 4 confidences"):
        make_pool([gaussian_kernel(9, 1.0)] * 5, IDS, IDS, 2, confidences=[0.1] * 4)


def test_old_pool_without_confidences_reads_nan(tmp_path) -> None:
    path, pool = _conf_pool(tmp_path)
    with np.load(path, allow_pickle=False) as data:  # as written before confidences existed
        old = {k: data[k] for k in data.files if k != "confidences"}
    np.savez(tmp_path / "old.npz", **old)
    back = load_pool(tmp_path / "old.npz")
    assert back.ids == IDS and back.confidences.shape == (5,)
    assert np.isnan(back.confidences).all()
    with pytest.raises(KGEngineError, match=r"old\.npz: no kernel has confidence >= 0\.5 .*"
                                            r"0 with a known confidence; none is known"):
        load_pool(tmp_path / "old.npz", min_confidence=0.5)


def test_min_confidence_keeps_exactly_the_passing_rows(tmp_path) -> None:
    path, pool = _conf_pool(tmp_path)
    kept = load_pool(path, min_confidence=0.8)  # >= is inclusive; unknown (c) is dropped
    assert kept.ids == ["a", "d", "e"]
    assert kept.sources == ["a.png", "d.png", "e.png"] and kept.seeds == [10, 13, 14]
    assert kept.reports == [{"n": 0}, {"n": 3}, {"n": 4}]
    np.testing.assert_array_equal(kept.confidences, [0.95, 0.8, 0.8])
    np.testing.assert_array_equal(kept.kernels, pool.kernels[[0, 3, 4]])
    assert load_pool(path, min_confidence=0.0).ids == ["a", "b", "d", "e"]
    assert load_pool(path, min_confidence=0.95).ids == ["a"]
    assert load_pool(path).ids == IDS  # no filter: every row, unknown ones included
    with pytest.raises(KGEngineError) as info:
        load_pool(path, min_confidence=0.96)
    msg = str(info.value)
    assert str(path) in msg and ">= 0.96" in msg and "the highest is 0.95" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_min_confidence_outside_0_1_is_refused(tmp_path, bad) -> None:
    path, _ = _conf_pool(tmp_path)
    with pytest.raises(KGEngineError, match=r"min confidence must be in \[0, 1\]"):
        load_pool(path, min_confidence=bad)


def test_kernel_folder_has_no_known_confidence(tmp_path) -> None:
    np.save(tmp_path / "k.npy", gaussian_kernel(9, 1.0))
    assert np.isnan(load_pool(tmp_path).confidences).all()
    with pytest.raises(KGEngineError, match="none is known"):
        load_pool(tmp_path, min_confidence=0.1)


def test_pool_filter_command(tmp_path) -> None:
    from typer.testing import CliRunner

    from kgengine.cli import app

    path, pool = _conf_pool(tmp_path)
    out = tmp_path / "sub" / "confident.npz"
    runner = CliRunner()
    res = runner.invoke(app, ["pool", "filter", str(path), "--min-confidence", "0.8",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "3 of 5 kernels have confidence >= 0.8" in res.output
    kept = load_pool(out)
    assert kept.ids == ["a", "d", "e"] and kept.scale == 2
    np.testing.assert_array_equal(kept.kernels, pool.kernels[[0, 3, 4]])
    assert [p.name for p in out.parent.iterdir()] == ["confident.npz"]  # no temporary file
    for args, message in [
        (["--min-confidence", "0.99", "-o", str(out)], "no kernel has confidence >= 0.99"),
        (["--min-confidence", "2", "-o", str(out)], "min confidence must be in [0, 1], got 2"),
        (["--min-confidence", "0.5", "-o", str(path)], "write to another file"),
        (["--min-confidence", "0.5", "-o", str(tmp_path / "x.txt")], "as a .npz file"),
    ]:
        res = runner.invoke(app, ["pool", "filter", str(path), *args])
        assert res.exit_code == 1, res.output
        assert res.output.startswith("error: ") and message in res.output, res.output
    assert load_pool(out).ids == ["a", "d", "e"]  # the refused runs left it alone


def test_top_fraction_keeps_the_most_confident_known_kernels(tmp_path) -> None:
    from kgengine.pool import filter_pool, top_threshold

    conf = [0.3, np.nan, 0.9, 0.1, 0.5, 0.7, np.nan, 0.5]  # 6 known: 0.9 0.7 0.5 0.5 0.3 0.1
    kernels = [gaussian_kernel(13, 1.0 + 0.1 * i) for i in range(8)]
    ids = [f"k{i}" for i in range(8)]
    pool = make_pool(kernels, ids, ids, 2, confidences=conf)
    # ceil(f * 6)-th highest known confidence
    for fraction, want in [(1.0, 0.1), (0.5, 0.5), (0.34, 0.5), (0.33, 0.7), (0.2, 0.7),
                           (0.1, 0.9), (1e-9, 0.9), (1e-12, 0.9)]:
        assert top_threshold(pool, fraction) == want, fraction
    kept = filter_pool(pool, top_threshold(pool, 0.5))  # 3 asked, the tie at 0.5 kept too
    assert kept.ids == ["k2", "k4", "k5", "k7"]
    np.testing.assert_array_equal(kept.kernels, pool.kernels[[2, 4, 5, 7]])
    assert filter_pool(pool, top_threshold(pool, 1.0)).ids == ["k0", "k2", "k3", "k4", "k5",
                                                               "k7"]  # unknown dropped
    for bad in (0.0, -0.5, 1.01, float("nan")):
        with pytest.raises(KGEngineError, match=r"top fraction must be in \(0, 1\]"):
            top_threshold(pool, bad)
    unknown = make_pool(kernels[:2], ids[:2], ids[:2], 2)
    with pytest.raises(KGEngineError, match="there.npz: no kernel has a known confidence"):
        top_threshold(unknown, 0.5, "there.npz")


def test_pool_filter_top_command(tmp_path) -> None:
    from typer.testing import CliRunner

    from kgengine.cli import app

    path, pool = _conf_pool(tmp_path)  # known: a 0.95, b 0.5, d 0.8, e 0.8
    out = tmp_path / "top.npz"
    runner = CliRunner()
    res = runner.invoke(app, ["pool", "filter", str(path), "--top", "0.25", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 of 5 kernels have confidence >= 0.95" in res.output
    assert load_pool(out).ids == ["a"]
    res = runner.invoke(app, ["pool", "filter", str(path), "--top", "0.75", "-o", str(out)])
    assert res.exit_code == 0 and load_pool(out).ids == ["a", "d", "e"], res.output
    np.testing.assert_array_equal(load_pool(out).kernels, pool.kernels[[0, 3, 4]])
    for args in ([], ["--top", "0.5", "--min-confidence", "0.5"]):
        res = runner.invoke(app, ["pool", "filter", str(path), "-o", str(out), *args])
        assert res.exit_code == 1 and "give one of --min-confidence and --top" in res.output


def test_pool_info_shows_the_confidences(tmp_path) -> None:
    from typer.testing import CliRunner

    from kgengine.cli import app
    from kgengine.farm.poolview import pool_info, shape_lines

    path, pool = _conf_pool(tmp_path)
    text = pool_info(path)
    assert "confidence: 4 of 5 known; min 0.500  median 0.800  max 0.950" in text
    assert "histogram of confidence" in text
    res = CliRunner().invoke(app, ["pool", "info", str(path), "--min-confidence", "0.8"])
    assert res.exit_code == 0, res.output
    assert "confidence >= 0.8: 3 of 5 kernels pass" in res.output
    # the widths are of the passing kernels a, d, e (sigmas 1.0, 1.3, 1.4), not of all five
    lines = res.output.splitlines()
    passing, everything = shape_lines(pool.select([0, 3, 4])), shape_lines(pool)
    assert passing[0] != everything[0]  # the major-width line: medians 1.3 vs 1.2
    assert passing[0] in lines and everything[0] not in lines
    res = CliRunner().invoke(app, ["pool", "info", str(path), "--min-confidence", "0.99"])
    assert res.exit_code == 0 and "0 of 5 kernels pass" in res.output
    assert "major width" not in res.output
    res = CliRunner().invoke(app, ["pool", "info", str(path), "--min-confidence", "-1"])
    assert res.exit_code == 1 and "error: min confidence must be in [0, 1]" in res.output
    _conf_pool(tmp_path, confidences=None)
    assert "unknown for every kernel" in pool_info(path)


def test_pool_plot_draws_only_confident_kernels(tmp_path, monkeypatch) -> None:
    import kgengine.plotting
    from kgengine.farm.poolview import plot_pool

    path, _ = _conf_pool(tmp_path)
    drawn: list[str] = []

    def fake_grid(out, rows, titles, **kw):
        drawn.extend(t for row in titles for t in row)
        return out

    monkeypatch.setattr(kgengine.plotting, "kernel_grid_png", fake_grid)
    plot_pool(path, tmp_path / "m.png", min_confidence=0.8)
    assert [t.split("\n")[0] for t in drawn] == ["a", "d", "e"]
    assert drawn[0].endswith("conf 0.950")


def test_a_farm_folder_read_at_x4_gives_its_x4_pool(tmp_path) -> None:
    """0.9.28 review: ``degrade -k FARM --scale 4`` refused a ``farm --x4`` folder, naming
    its x2 pool; it now reads ``kernel_pool_x4.npz``."""
    from kgengine.kernel import analytic_x4
    from kgengine.pool import POOL_FILE, POOL_FILE_X4

    k2 = anisotropic_gaussian(13, 2.0, 1.0, 0.4)
    save_pool(tmp_path / POOL_FILE, make_pool([k2], ["a"], ["a.png"], 2))
    save_pool(tmp_path / POOL_FILE_X4, make_pool([analytic_x4(k2)], ["a"], ["a.png"], 4))
    assert load_pool(tmp_path, scale=4).scale == 4
    assert load_pool(tmp_path, scale=4).kernel_size == 37
    assert load_pool(tmp_path).scale == 2 and load_pool(tmp_path, scale=2).kernel_size == 13
