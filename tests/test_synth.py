"""The seeded DIV2KRK-layout generator: kernel recipe, reproducibility, layout round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat
from typer.testing import CliRunner

from kgengine.accuracy.synth import (
    crop_to_multiple,
    draw_kernel,
    image_rng,
    make_div2krk_like,
    select_evenly,
)
from kgengine.cli import app
from kgengine.degrade import degrade
from kgengine.hooks import JobHooks
from kgengine.imageio import read_image, write_png
from kgengine.kernel import analytic_x4, anisotropic_gaussian


def moment_covariance(k: np.ndarray) -> np.ndarray:
    """Second central moments of k in (x = column, y = row) coordinates."""
    yy, xx = np.mgrid[0 : k.shape[0], 0 : k.shape[1]].astype(np.float64)
    k = k / k.sum()
    mx, my = (k * xx).sum(), (k * yy).sum()
    dx, dy = xx - mx, yy - my
    return np.array(
        [[(k * dx * dx).sum(), (k * dx * dy).sum()], [(k * dx * dy).sum(), (k * dy * dy).sum()]]
    )


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory, sample_hr) -> Path:
    """Three small HR images whose sizes are not multiples of 4."""
    d = tmp_path_factory.mktemp("hr")
    write_png(d / "a.png", sample_hr[:98, :123])
    write_png(d / "b.png", sample_hr[100:203, 50:150])
    write_png(d / "c.png", sample_hr[200:, 200:])
    return d


def test_drawn_kernels_follow_the_recipe():
    var1s, thetas = [], []
    for i in range(1, 41):
        k, p = draw_kernel(image_rng(0, i))
        assert k.shape == (11, 11)
        assert k.sum() == pytest.approx(1.0, abs=1e-12)
        assert (k > 0).all()
        assert 0.6 <= p.var1 <= 5.0 and 0.6 <= p.var2 <= 5.0
        assert 0.0 <= p.theta < np.pi
        # multiplicative noise within ±25 %: k / k_clean = noise / Z, so max/min ≤ 1.25 / 0.75
        ratio = k / anisotropic_gaussian(11, p.var1, p.var2, p.theta)
        assert ratio.max() / ratio.min() <= 1.25 / 0.75 + 1e-9
        assert ratio.max() / ratio.min() > 1.2  # the noise is really there
        var1s.append(p.var1)
        thetas.append(p.theta)
    assert 2.0 < np.mean(var1s) < 3.6  # U(0.6, 5) has mean 2.8
    assert np.ptp(thetas) > 2.0


@pytest.mark.parametrize("index", [1, 2, 3, 7])
def test_kernel_covariance_matches_the_drawn_parameters(index):
    """Noise-free kernel of large support: moments = R(θ) diag(var1, var2) R(θ)ᵀ."""
    _, p = draw_kernel(image_rng(5, index))
    k = anisotropic_gaussian(31, p.var1, p.var2, p.theta)
    rot = np.array([[np.cos(p.theta), -np.sin(p.theta)], [np.sin(p.theta), np.cos(p.theta)]])
    expected = rot @ np.diag([p.var1, p.var2]) @ rot.T
    np.testing.assert_allclose(moment_covariance(k), expected, atol=2e-3)
    np.testing.assert_allclose(
        np.sort(np.linalg.eigvalsh(moment_covariance(k))), sorted([p.var1, p.var2]), atol=2e-3
    )


def test_per_image_seeding_is_reproducible_and_distinct():
    a, pa = draw_kernel(image_rng(0, 3))
    b, pb = draw_kernel(image_rng(0, 3))
    np.testing.assert_array_equal(a, b)
    assert pa == pb
    c, _ = draw_kernel(image_rng(1, 3))
    d, _ = draw_kernel(image_rng(0, 4))
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_x4_kernel_equals_degrading_twice(sample_hr):
    k2, _ = draw_kernel(image_rng(0, 1))
    k4 = analytic_x4(k2)
    assert k4.shape == (31, 31)
    hr = sample_hr.astype(np.float64)
    twice = degrade(degrade(hr, k2, 2), k2, 2)
    once = degrade(hr, k4, 4)
    b = 6  # LR x4 pixels touched by the borders (31 // 2 / 4 < 4, plus the inner stage)
    np.testing.assert_allclose(once[b:-b, b:-b], twice[b:-b, b:-b], atol=1e-12)


def test_select_evenly_and_crop():
    paths = [Path(f"{c}.png") for c in "jihgfedcba"]
    assert [p.stem for p in select_evenly(paths, 4)] == ["a", "d", "g", "j"]
    assert len(select_evenly(paths, None)) == 10
    assert len(select_evenly(paths, 50)) == 10
    assert crop_to_multiple(np.zeros((98, 123, 3))).shape == (96, 120, 3)


def test_layout_round_trips(tmp_path, hr_dir):
    out = tmp_path / "set"
    manifest = make_div2krk_like(sorted(hr_dir.glob("*.png")), out, seed=7, n=2)
    assert [m["name"] for m in manifest] == ["im_1", "im_2"]
    assert [m["source"] for m in manifest] == ["a.png", "c.png"]  # evenly spread
    for m in manifest:
        n = m["index"]
        for rel in (f"gt/im_{n}.png", f"lr_x2/im_{n}.png", f"lr_x4/im_{n}.png"):
            assert (out / rel).is_file(), rel
        k2 = loadmat(out / f"gt_k_x2/kernel_{n}.mat")["Kernel"]
        k4 = loadmat(out / f"gt_k_x4/kernel_{n}.mat")["Kernel"]
        assert k2.shape == (11, 11) and k4.shape == (31, 31)
        assert k2.sum() == pytest.approx(1.0) and k4.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(k4, analytic_x4(k2), atol=1e-15)
        ref, _ = draw_kernel(image_rng(7, n))
        np.testing.assert_allclose(k2, ref, atol=1e-15)
        gt = read_image(out / f"gt/im_{n}.png").astype(np.float64)
        src = read_image(hr_dir / m["source"])
        assert gt.shape[0] % 4 == 0 and gt.shape[1] % 4 == 0
        assert gt.shape[0] > src.shape[0] - 4 and gt.shape[1] > src.shape[1] - 4
        np.testing.assert_allclose(gt, src[: gt.shape[0], : gt.shape[1]], atol=1e-6)
        for s, k in ((2, k2), (4, k4)):
            lr = read_image(out / f"lr_x{s}/im_{n}.png").astype(np.float64)
            expect = degrade(gt, k, s)
            assert lr.shape == (gt.shape[0] // s, gt.shape[1] // s, 3)
            # equal up to 8-bit quantisation
            assert np.abs(lr - expect).max() <= 0.5 / 255 + 1e-6
    meta = __import__("json").loads((out / "synth.json").read_text())
    assert meta["seed"] == 7 and len(meta["images"]) == 2


def test_same_seed_same_files(tmp_path, hr_dir):
    paths = sorted(hr_dir.glob("*.png"))
    make_div2krk_like(paths, tmp_path / "a", seed=3, n=1)
    make_div2krk_like(paths, tmp_path / "b", seed=3, n=1)
    make_div2krk_like(paths, tmp_path / "c", seed=4, n=1)
    for rel in ("lr_x2/im_1.png", "lr_x4/im_1.png", "gt/im_1.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    ka = loadmat(tmp_path / "a/gt_k_x2/kernel_1.mat")["Kernel"]
    kb = loadmat(tmp_path / "b/gt_k_x2/kernel_1.mat")["Kernel"]
    kc = loadmat(tmp_path / "c/gt_k_x2/kernel_1.mat")["Kernel"]
    np.testing.assert_array_equal(ka, kb)
    assert not np.allclose(ka, kc)


def test_bad_hr_image_is_named(tmp_path):
    # a bad HR file is reported through the hooks (naming it) and skipped, no longer raised
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (30, 30)).save(tiny)
    failed = []
    hooks = JobHooks(item_finished=lambda n, s, d: failed.append(d) if s == "failed" else None)
    assert make_div2krk_like([bad, tiny], tmp_path / "out", seed=0, hooks=hooks) == []
    assert "broken.png" in failed[0] and "tiny.png" in failed[1] and "too small" in failed[1]


def test_synth_command(tmp_path, hr_dir):
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(hr_dir), "-o", str(tmp_path / "s"), "--n", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s/lr_x2/im_1.png").is_file()
    assert (tmp_path / "s/gt_k_x4/kernel_1.mat").is_file()
    res = runner.invoke(app, ["synth", str(tmp_path / "nope"), "-o", str(tmp_path / "t")])
    assert res.exit_code == 1
    assert "not a folder" in res.output
