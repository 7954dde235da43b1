"""0.9.29 review of interrupted and overlapping jobs: synth, degrade's ONNX path, noise
collect and the farm's pool on Ctrl-C; every test failed before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_reliability import FakeTrainer, fail_writes, make_images

import kgengine.accuracy.synth as synth
import kgengine.degradation.noisebank as noisebank
from kgengine.atomic import exclusive_lock
from kgengine.degradation import degrade_folder
from kgengine.degradation.noisebank import collect_noise, load_noise_bank
from kgengine.errors import KGEngineError
from kgengine.farm import training
from kgengine.farm.runner import run_farm
from kgengine.imageio import read_image, to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import POOL_FILE, load_pool, make_pool, save_pool


@pytest.fixture
def hr_dir(tmp_path):
    folder = tmp_path / "hr"
    make_images(folder, 3, prefix="h")
    return folder


def test_an_interrupted_synth_rerun_leaves_no_mixed_image(hr_dir, tmp_path, monkeypatch):
    """A rerun cut short after an LR image (Ctrl-C) left it next to the earlier run's true
    kernel, and synth.json describing the earlier set: eval scored the wrong truth."""
    out = tmp_path / "set"
    synth.make_div2krk_like(sorted(hr_dir.iterdir()), out, seed=0)
    (out / "lr_x2" / ".im_2.png.abcd1234.tmp").write_bytes(b"x")  # a killed run's
    monkeypatch.setattr(synth, "save_mat", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        synth.make_div2krk_like(sorted(hr_dir.iterdir()), out, seed=1)
    assert not (out / "synth.json").exists()
    assert not [p for p in out.rglob("im_1.*")] + [p for p in out.rglob("kernel_1.*")]
    assert not list(out.rglob("*.tmp"))
    lr = read_image(out / "lr_x2" / "im_2.png")  # the rest: seed 0's, whole
    assert lr.shape[2] == 3


def test_synth_takes_the_folders_lock(hr_dir, tmp_path):
    out = tmp_path / "set"
    with exclusive_lock(out, synth.SYNTH_LOCK, "busy"), \
            pytest.raises(KGEngineError, match="another kgengine synth"):
        synth.make_div2krk_like(sorted(hr_dir.iterdir()), out, seed=0)


def test_degrade_onnx_path_goes_on_after_a_pair_it_cannot_write(tmp_path, monkeypatch):
    """The default (ONNX) path stopped the whole job at the first LR it could not write and
    left pairs written by the other writer thread out of the manifest."""
    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(to_uint8(rng.random((40, 44, 3)))).save(hr / f"im{i}.png")
    pool = save_pool(tmp_path / "pool", make_pool([anisotropic_gaussian(13, 1.0, 2.0, 0.3)],
                                                  ["k0"], ["a"], 2, seeds=[0]))
    failed = fail_writes(monkeypatch, {"im1.png"})
    report = degrade_folder(hr, pool, tmp_path / "out", batch=4, provider="cpu")
    assert failed == ["im1.png"] and len(report.failed) == 1 and report.written == 3
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["name"] for x in lines) == ["im0.png", "im2.png", "im3.png"]


def test_a_failed_noise_collect_leaves_no_stale_index(tmp_path, monkeypatch):
    """A rerun whose index write failed left new patches next to the old index (another
    patch size and count), and the bank loaded."""
    photos = tmp_path / "in"
    make_images(photos, 1)
    out = tmp_path / "noise"
    collect_noise([photos], out, patch=32, max_var=1e9)
    fail_writes(monkeypatch, {noisebank.INDEX_FILE})
    with pytest.raises(KGEngineError):
        collect_noise([photos], out, patch=16, max_var=1e9)
    assert not (out / noisebank.INDEX_FILE).exists()
    assert load_noise_bank(out).patches.shape[1] == 16
    index = {"count": 1, "patch_size": 32}
    (out / noisebank.INDEX_FILE).write_text(json.dumps(index))  # another run's index
    with pytest.raises(KGEngineError, match="files of two runs"):
        load_noise_bank(out)


class _StopsAfterFirstBatch(FakeTrainer):
    def __call__(self, images, **kw):
        if self.calls:
            raise KeyboardInterrupt
        return super().__call__(images, **kw)


def test_a_farm_stopped_by_ctrl_c_writes_the_pool_of_its_done_images(tmp_path, monkeypatch):
    """Only a farm that ran to its end wrote kernel_pool.npz: a first run stopped by Ctrl-C
    or SIGTERM left none, and a later one the earlier run's."""
    monkeypatch.setattr(training, "estimate_kernels", _StopsAfterFirstBatch())
    imgs = make_images(tmp_path / "in", 4)
    with pytest.raises(KeyboardInterrupt):
        run_farm(imgs, tmp_path / "pool", batch=2, device="cpu")
    assert len(load_pool(tmp_path / "pool" / POOL_FILE)) == 2


def test_a_farm_folder_without_its_pool_file_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "estimate_kernels", FakeTrainer())
    run_farm(make_images(tmp_path / "in", 1), tmp_path / "pool", batch=1, device="cpu")
    (tmp_path / "pool" / POOL_FILE).unlink()
    with pytest.raises(KGEngineError, match="a farm folder without kernel_pool.npz"):
        load_pool(tmp_path / "pool")
