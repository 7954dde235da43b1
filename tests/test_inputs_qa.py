"""Inputs QA: a recursive walk leaves out kgengine's own outputs (earlier estimate output
folders' kernel files, degrade output folders, pools) and says so on one line; a farm reports
folder INPUTs without images and exits 1, refuses to start a new pool from nothing and checks
its options before it creates POOL_DIR; a file reached twice through a link is reported."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_reliability import FakeTrainer, _one_thread, error_lines  # noqa: F401
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.farm import training
from kgengine.farm.inputs import (
    DEGRADE_SETTINGS,
    OUTPUT_ENDINGS,
    expand_inputs,
    folder_images,
    folders_without_images,
)
from kgengine.farm.manifest import MANIFEST_FILE, Manifest

runner = CliRunner()
ITERS = ["--iters", "20", "--device", "cpu"]


@pytest.fixture
def fake(monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(training, "estimate_kernels", fake)
    return fake


def _png(path, sample_hr, top=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    crop = sample_hr[top : top + 80, :90]
    Image.fromarray((crop * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def estimated(tmp_path_factory, sample_hr):
    """``setr/img0.png`` and ``setr/est/``, the outputs of a real (20-iteration) estimate."""
    setr = tmp_path_factory.mktemp("qa") / "setr"
    _png(setr / "img0.png", sample_hr)
    res = runner.invoke(app, ["estimate", str(setr), "-o", str(setr / "est"), *ITERS])
    assert res.exit_code == 0, res.output
    assert (setr / "est" / "img0_kernel.png").is_file()
    return setr


@pytest.fixture
def setr(estimated, tmp_path):
    """A private copy of :func:`estimated`."""
    return shutil.copytree(estimated, tmp_path / "setr")


def _degrade_output(folder, sample_hr):
    """A ``kgengine degrade`` output folder: its settings file and one LR image."""
    from kgengine.degradation.manifest import RESUME_KEYS

    _png(folder / "lr" / "deg0.png", sample_hr)
    (folder / DEGRADE_SETTINGS).write_text(json.dumps(dict.fromkeys(RESUME_KEYS, "x")))
    return folder


def test_constants_match_what_kgengine_writes(tmp_path):
    from kgengine.degradation.manifest import RESUME_KEYS, SETTINGS
    from kgengine.outputs import output_paths

    assert DEGRADE_SETTINGS == SETTINGS
    assert {"pool_fingerprint", "hr_dir"} <= set(RESUME_KEYS)  # what recognises the folder
    paths = output_paths(tmp_path, "a")
    assert tuple(paths[k].name[1:] for k in ("png", "x2_npy", "x4_npy")) == OUTPUT_ENDINGS
    assert paths["report"].name == "a_report.json"


# ---------------------------------------------------------------------- 1. own outputs
def test_estimate_recursive_does_not_read_an_earlier_output_folder(setr, monkeypatch):
    import kgengine.imageio

    read, real = [], kgengine.imageio.read_image

    def spy(path, *args, **kwargs):
        read.append(path.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(kgengine.imageio, "read_image", spy)
    res = runner.invoke(app, ["estimate", str(setr), "-r", "-o", str(setr / "est2"), *ITERS])
    assert res.exit_code == 0, res.output
    assert error_lines(res.output) == [] and "too small" not in res.output
    assert read == ["img0.png"]
    assert sorted(p.name for p in (setr / "est2").glob("*_kernel_x2.npy")) == [
        "img0_kernel_x2.npy"]
    assert "kgengine never reads its own outputs as input" in res.output  # said on one line


def test_folder_images_leaves_out_kernel_files_of_estimate_folders_only(setr, sample_hr):
    est = setr / "est"
    _png(est / "photo.png", sample_hr)  # the user's own image next to the outputs: kept
    lines: list[str] = []
    found = folder_images(setr, recursive=True, log=lines.append)
    assert [p.relative_to(setr).as_posix() for p in found] == ["est/photo.png", "img0.png"]
    assert lines == [f"skip 2 kernel file(s) in the estimate output folder(s) {est}: "
                     "kgengine never reads its own outputs as input"]
    # named, the output folder still gives only its non-kernel images
    assert [p.name for p in folder_images(est)] == ["photo.png"]
    # a *_kernel.png without a kgengine report beside it is an ordinary image
    mine = setr / "mine"
    _png(mine / "x_kernel.png", sample_hr)
    (mine / "x_report.json").write_text(json.dumps({"image": "x", "kernel_x2": {}}))
    assert [p.name for p in folder_images(mine)] == ["x_kernel.png"]
    # nor does a damaged report make a folder an output folder
    (mine / "a_report.json").write_text("{not json")
    assert [p.name for p in folder_images(mine)] == ["x_kernel.png"]


def test_farm_recursive_leaves_out_estimate_degrade_and_pool_folders(setr, sample_hr, fake):
    deg = _degrade_output(setr / "deg", sample_hr)
    pool = setr / "pool3"
    args = ["farm", str(setr), "-r", "-o", str(pool), "--iters", "20"]
    for _ in range(2):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    with Manifest(pool) as man:
        assert [(r.name, r.state) for r in man.rows()] == [("img0", "done")]
    assert [n for call in fake.calls for n in call] == ["img0"]
    skips = [ln for ln in res.output.splitlines() if ln.startswith("skip ")]
    assert skips == [f"skip the pool folder(s) {pool}, the degrade output folder(s) {deg} and "
                     f"2 kernel file(s) in the estimate output folder(s) {setr / 'est'}: "
                     "kgengine never reads its own outputs as input"]
    # named, a degrade output folder is read (its LR images are a test of the estimator)
    assert [p.name for p in folder_images(deg, recursive=True)] == ["deg0.png"]


# ---------------------------------------------------------------------- 2. empty inputs
def test_farm_folder_without_images_is_one_line_and_exit_1(tmp_path, sample_hr, fake):
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "notes.txt").write_text("no images here")
    res = runner.invoke(app, ["farm", str(tmp_path / "txt"), "-o", str(tmp_path / "pool")])
    assert res.exit_code == 1
    assert error_lines(res.output) == [
        f"error: {tmp_path / 'txt'}: no image files in this folder (-r also reads its "
        "sub-folders)"]
    assert not (tmp_path / "pool").exists() and fake.calls == []
    # next to a folder with images: those are done, the exit code is still 1
    _png(tmp_path / "good" / "a.png", sample_hr)
    res = runner.invoke(app, ["farm", str(tmp_path / "good"), str(tmp_path / "txt"), "-r",
                              "-o", str(tmp_path / "pool")])
    assert res.exit_code == 1
    assert error_lines(res.output) == [
        f"error: {tmp_path / 'txt'}: no image files in this folder"]
    assert "1 done, 0 failed" in res.output
    # a pool that exists: the empty folder is reported, the pool resumed
    res = runner.invoke(app, ["farm", str(tmp_path / "txt"), "-o", str(tmp_path / "pool")])
    assert res.exit_code == 1 and len(error_lines(res.output)) == 1
    assert "0 done, 0 failed, 1 skipped" in res.output


def test_farm_without_inputs_needs_an_existing_pool(tmp_path, sample_hr, fake):
    new = tmp_path / "newpool"
    res = runner.invoke(app, ["farm", "-o", str(new)])
    assert res.exit_code == 1
    lines = error_lines(res.output)
    assert len(lines) == 1 and lines[0].startswith(f"error: {new}: no pool there yet")
    assert not new.exists()
    # the documented resume still works
    _png(tmp_path / "in" / "a.png", sample_hr)
    pool = tmp_path / "pool"
    assert runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(pool)]).exit_code == 0
    res = runner.invoke(app, ["farm", "-o", str(pool)])
    assert res.exit_code == 0, res.output
    assert "0 done, 0 failed, 1 skipped" in res.output


def test_folders_without_images_walks_until_the_first_image(tmp_path, sample_hr):
    _png(tmp_path / "deep" / "sub" / "a.png", sample_hr)
    (tmp_path / "pool" / "kernels").mkdir(parents=True)
    (tmp_path / "pool" / MANIFEST_FILE).write_bytes(b"")
    _png(tmp_path / "pool" / "kernels" / "k_kernel.png", sample_hr)
    assert folders_without_images([tmp_path / "deep"], recursive=True) == []
    assert folders_without_images([tmp_path / "deep"]) == [
        f"{tmp_path / 'deep'}: no image files in this folder (-r also reads its sub-folders)"]
    assert folders_without_images([tmp_path / "pool"], recursive=True) == [
        f"{tmp_path / 'pool'}: a kgengine pool or output folder, never read as input"]


# ---------------------------------------------------------------------- 3. options first
@pytest.mark.parametrize("option, message", [
    (["--stop", "bogus"], "error: --stop: expected full or auto, got 'bogus'"),
    (["--dtype", "bogus"], "error: --dtype: expected float32 or float64, got 'bogus'"),
    (["--iters", "20", "missing.png"], "no such file or folder"),
])
def test_farm_bad_option_or_input_creates_no_pool_folder(tmp_path, sample_hr, option, message,
                                                         fake):
    _png(tmp_path / "in" / "a.png", sample_hr)
    res = runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(tmp_path / "pool"),
                              *option])
    assert res.exit_code == 1
    lines = error_lines(res.output)
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "pool").exists() and fake.calls == []


# ---------------------------------------------------------------------- 4. links
def test_a_file_reached_through_a_link_is_reported(tmp_path, sample_hr, fake):
    good = _png(tmp_path / "in" / "good.png", sample_hr)
    link = tmp_path / "in" / "link.png"
    link.symlink_to(good)
    lines: list[str] = []
    assert expand_inputs([link, good], log=lines.append) == [link]  # as listed (0.9.29)
    assert lines == [f"skip {good}: same file as {link}"]
    # a folder and a file in it, the same path twice: no line
    lines.clear()
    b = _png(tmp_path / "other" / "b.png", sample_hr)
    assert expand_inputs([b, tmp_path / "other", b], log=lines.append) == [b]
    assert lines == []
    res = runner.invoke(app, ["farm", str(good), str(link), "-o", str(tmp_path / "pool")])
    assert res.exit_code == 0, res.output
    assert f"skip {link}: same file as {good}" in res.output
    assert "1 done, 0 failed" in res.output


def test_estimate_reports_a_file_given_twice_through_a_link(tmp_path, sample_hr, capsys):
    from kgengine.commands.estimate import _expand

    good = _png(tmp_path / "in" / "good.png", sample_hr)
    link = tmp_path / "in" / "link.png"
    link.symlink_to(good)
    assert _expand([good, link], False, tmp_path / "out") == ([good], 0)
    assert capsys.readouterr().err.splitlines() == [f"skip {link}: same file as {good}"]
    # a folder and a file in it: one file, no line
    other = _png(tmp_path / "other" / "b.png", sample_hr)
    assert _expand([tmp_path / "other", other], False, tmp_path / "out") == ([other], 0)
    assert capsys.readouterr().err == ""
