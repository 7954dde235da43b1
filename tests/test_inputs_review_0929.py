"""0.9.29 review: file listing (links, FIFOs, BOM lists), the x4 farm pool on import, an odd
crop size, settings beyond float32 and a kernel that sums to 0; every test failed before its
fix."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_reliability import make_images
from typer.testing import CliRunner

from kgengine.api import estimate_kernel
from kgengine.cli import app
from kgengine.config import KernelGANConfig
from kgengine.errors import BadImageError
from kgengine.farm.inputs import expand_inputs
from kgengine.kernel import analytic_x4, boundary_mask, gaussian_kernel
from kgengine.pool import POOL_FILE, POOL_FILE_X4, make_pool, save_pool
from kgengine.pool_import import read_source
from kgengine.priors_numba import _kernel_terms

runner = CliRunner()


@pytest.fixture
def fake(fake_farm_trainer):
    return fake_farm_trainer


def test_a_listed_link_keeps_its_name_and_a_retargeted_one_is_redone(tmp_path, fake):
    """The farm named a linked photo after its target (git-annex: ``SHA256E-...``), so a
    link pointed at a new photo became a second row and the old kernel stayed in the pool."""
    a, b, c = make_images(tmp_path / "store", 3)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "beach.png").symlink_to(a)
    (photos / "forest.png").symlink_to(b)
    assert expand_inputs([photos]) == [photos / "beach.png", photos / "forest.png"]
    pool = tmp_path / "pool"
    assert runner.invoke(app, ["farm", str(photos), "-o", str(pool)]).exit_code == 0
    (photos / "beach.png").unlink()
    (photos / "beach.png").symlink_to(c)
    res = runner.invoke(app, ["farm", str(photos), "-o", str(pool)])
    assert res.exit_code == 0 and "1 done" in res.output, res.output
    assert sorted(np.load(pool / POOL_FILE)["ids"].tolist()) == ["beach", "forest"]


def test_recursive_listing_follows_linked_folders_once_and_skips_fifos(tmp_path):
    """``-r`` skipped a linked sub-folder without a word, and listed a FIFO named *.png,
    whose hashing then blocked forever."""
    (outside,) = make_images(tmp_path / "archive", 1, prefix="b")
    photos = tmp_path / "photos"
    (own,) = make_images(photos / "2023", 1, prefix="a")
    (photos / "2022").symlink_to(outside.parent, target_is_directory=True)
    (photos / "loop").symlink_to(photos, target_is_directory=True)  # a loop ends
    os.mkfifo(photos / "2023" / "fifo.png")
    got = expand_inputs([photos], recursive=True)
    assert got == [photos / "2022" / "b0.png", own]


def test_a_list_file_with_a_byte_order_mark(tmp_path):
    """A .txt list saved with a UTF-8 BOM (Notepad, PowerShell 5) lost its first entry."""
    imgs = make_images(tmp_path / "photos", 2)
    listing = tmp_path / "list.txt"
    listing.write_bytes(("\ufeff" + "\r\n".join(f"photos/{p.name}" for p in imgs)).encode())
    assert expand_inputs([listing]) == imgs


def test_pool_import_reads_a_farm_folders_x4_pool(tmp_path):
    """``pool import FARM --scale 4`` took kernel_pool.npz (x2) and refused it."""
    k2 = gaussian_kernel(13, 1.2)
    for name, k, scale in ((POOL_FILE, k2, 2), (POOL_FILE_X4, analytic_x4(k2), 4)):
        save_pool(tmp_path / name, make_pool([k], ["a"], ["a.png"], scale))
    (got,) = read_source(tmp_path, 4)
    assert got.id == "a" and got.kernel.shape == (37, 37)


def test_an_odd_crop_size_needs_one_more_pixel(tmp_path):
    """The image is trimmed to even sides: with crop 27 a 27 px image became 26 and the crop
    sampler raised a traceback; 28 is now asked for, and 31 trains."""
    cfg = KernelGANConfig(crop_size=27)
    rng = np.random.default_rng(0)
    with pytest.raises(BadImageError, match="needs 28 px a side"):
        estimate_kernel(rng.random((27, 40, 3)), iters=2, config=cfg)
    assert estimate_kernel(rng.random((31, 40, 3)), iters=2, config=cfg).kernel_x2.shape == (13, 13)


@pytest.mark.parametrize("setting", ["lr_g=1e39", "lambda_bicubic=1e39", "boundary_sigma=1e200"])
def test_settings_beyond_float32_are_refused(setting: str) -> None:
    """Accepted in float64, they trained as inf (a "diverged" error) or raised an
    OverflowError traceback."""
    key, value = setting.split("=")
    with pytest.raises(ValueError, match=f"config {key}: expected a finite float"):
        KernelGANConfig().replace(**{key: value})


def test_a_tiny_boundary_sigma_gives_a_finite_mask() -> None:
    """Below ~1e-154 σ² underflowed and the centre's 0/0 made the mask NaN."""
    tiny = boundary_mask(13, 30.0, 1e-200)
    assert np.isfinite(tiny).all()
    np.testing.assert_array_equal(tiny, boundary_mask(13, 30.0, 1e-100))
    np.testing.assert_array_equal(boundary_mask(13, 30.0, 2.5),
                                  30.0 * _mask_formula(13, 2.5))  # a normal σ: the formula


def _mask_formula(size: int, sigma: float) -> np.ndarray:
    z = np.arange(-size // 2 + 1, size // 2 + 1, dtype=np.float64)
    g1 = np.exp(-(z**2) / (2 * sigma**2))
    g = np.outer(g1, g1)
    mask = 1.0 - g / g.max()
    mask[2:-2, 2:-2] = 0.0
    return mask


def test_a_kernel_summing_to_zero_gives_nan_terms_not_an_exception() -> None:
    """The compiled prior pass divided by the kernel's sum: ZeroDivisionError (a traceback)
    where PyTorch's path gave NaN, reported as a diverged training."""
    terms, dk = np.zeros(5), np.zeros((4, 13, 13))
    _kernel_terms(np.zeros((13, 13), np.float32), np.zeros((13, 13)), 6.0, 0.2, terms, dk)
    assert np.isnan(terms[3]) and np.isnan(dk[2]).all()
    assert terms[1] == 1.0 and terms[2] == 0.0


def test_a_pool_stored_under_link_targets_is_relinked_without_reading(tmp_path, fake,
                                                                    monkeypatch):
    """Before 0.9.29 rows were stored under a linked photo's target; listed as links now,
    every such photo was hashed again at every run, one ``skip`` line each."""
    from kgengine.farm import intake
    from kgengine.farm.manifest import Manifest

    a, b = make_images(tmp_path / "store", 2)
    photos = tmp_path / "photos"
    photos.mkdir()
    for link, target in (("x.png", a), ("y.png", b)):
        (photos / link).symlink_to(target)
    pool = tmp_path / "pool"
    assert runner.invoke(app, ["farm", str(photos), "-o", str(pool)]).exit_code == 0
    with Manifest(pool) as man:  # as 0.9.28 stored them
        for row in man.rows():
            man.set_path(row.id, os.path.realpath(row.path), "as 0.9.28")
    probed = []
    real_probe = intake.probe
    monkeypatch.setattr(intake, "probe", lambda p: probed.append(p) or real_probe(p))
    res = runner.invoke(app, ["farm", str(photos), "-o", str(pool)])
    assert res.exit_code == 0 and "same content" not in res.output and probed == [], res.output
    assert "0 done, 0 failed, 2 skipped" in res.output
    with Manifest(pool) as man:
        assert sorted(r.path for r in man.rows()) == [str(photos / "x.png"),
                                                      str(photos / "y.png")]
