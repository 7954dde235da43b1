"""Bad-input audit (0.9.23): a symbolic-link loop among the inputs or as ``-o`` is one line
naming it (estimate, farm; a traceback before), a kernel too large for the ONNX degrader is
refused naming its file before ``degrade`` starts, a NaN or infinite ``--ray-cpus`` is
refused, the API's ``rule`` is checked before any training, and a newline in a file name
no longer splits a farm's ``failed:`` or degrade's ``error:`` line. 0.9.24: a symbolic link
to nothing inside a folder is one failed file naming the link (estimate, farm, degrade, the
noise bank), not dropped from the listing nor named by its missing target."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_reliability import FakeTrainer, _one_thread, error_lines, fake_estimate_kernel  # noqa: F401
from typer.testing import CliRunner

import kgengine.api
from kgengine import api
from kgengine.cli import app
from kgengine.farm import training
from kgengine.farm.manifest import Manifest

runner = CliRunner()
LOOP = "a symbolic link to nothing (broken, or a loop)"


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def _png(path, sample_hr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((sample_hr[:80, :90] * 255).round().astype(np.uint8)).save(path)
    return path


def _loop(path):
    """``path`` and ``path``.other: two symbolic links pointing at each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    other = path.with_name(path.name + ".other")
    path.symlink_to(other.name)
    other.symlink_to(path.name)
    return path


def _fake_kernels(images, *, seeds, **kwargs):
    return [fake_estimate_kernel(im, seed=s, **kwargs) for im, s in zip(images, seeds, strict=True)]


@pytest.fixture
def fake(monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(training, "estimate_kernels", fake)
    return fake


# ---------------------------------------------------------------------- symbolic-link loops
def test_estimate_names_a_symlink_loop_and_finishes_the_others(tmp_path, sample_hr,
                                                               monkeypatch):
    monkeypatch.setattr(kgengine.api, "estimate_kernels", _fake_kernels)
    good = _png(tmp_path / "in" / "good.png", sample_hr)
    loop = _loop(tmp_path / "in" / "sub" / "loop.png")
    res = _invoke("estimate", tmp_path / "in", "-r", "-o", tmp_path / "out", "--iters", 2)
    assert res.exit_code == 1, res.output
    assert error_lines(res.output) == [f"error: {loop}: {LOOP}"]
    assert (tmp_path / "out" / f"{good.stem}_report.json").is_file()
    res = _invoke("estimate", loop, good, "-o", tmp_path / "out", "--iters", 2)
    assert res.exit_code == 1 and error_lines(res.output) == [f"error: {loop}: {LOOP}"]


def test_farm_fails_a_symlink_loop_and_finishes_the_others(tmp_path, sample_hr, fake):
    good = _png(tmp_path / "in" / "good.png", sample_hr)
    loop = _loop(tmp_path / "in" / "sub" / "loop.png")
    listed = _loop(tmp_path / "listed.png")
    (tmp_path / "list.txt").write_text(f"{listed}\n")
    res = _invoke("farm", tmp_path / "in", tmp_path / "list.txt", "-r", "-o", tmp_path / "pool")
    assert res.exit_code == 1, res.output
    error_lines(res.output)  # no traceback
    with Manifest(tmp_path / "pool") as man:
        states = {row.path: (row.state, row.reason) for row in man.rows()}
    assert states[str(good)][0] == "done"
    for bad in (loop, listed):
        state, reason = states[str(bad)]
        assert state == "failed" and reason.startswith(f"{bad}: ")


def test_farm_out_on_a_symlink_loop_is_one_line(tmp_path, sample_hr, fake):
    _png(tmp_path / "in" / "good.png", sample_hr)
    loop = _loop(tmp_path / "pool")
    res = _invoke("farm", tmp_path / "in", "-o", loop)
    assert res.exit_code == 1
    lines = error_lines(res.output)
    assert len(lines) == 1 and lines[0].startswith(f"error: {loop}: "), res.output
    assert fake.calls == []


# ---------------------------------------------------------------------- degrade: kernel size
def test_degrade_names_a_kernel_too_large_for_the_onnx_degrader(tmp_path, sample_hr):
    _png(tmp_path / "hr" / "a.png", sample_hr)
    big = tmp_path / "big.npy"
    np.save(big, np.ones((301, 301)))
    res = _invoke("degrade", tmp_path / "hr", "-k", big, "-o", tmp_path / "out",
                  "--provider", "cpu")
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"error: {big}: kernel size 301 is above the ONNX degrader's limit 255 (pipeline "
        "options such as --jpeg take larger kernels)"], res.output
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_farm_ray_cpus_must_be_a_finite_number(tmp_path, sample_hr, fake, value):
    _png(tmp_path / "in" / "a.png", sample_hr)
    res = _invoke("farm", tmp_path / "in", "-o", tmp_path / "pool", "--ray-cpus", value)
    assert res.exit_code == 1
    assert error_lines(res.output) == [f"error: --ray-cpus must be a finite number, got {value}"]
    assert not (tmp_path / "pool").exists() and fake.calls == []


@pytest.mark.parametrize("restarts", [1, 2])
def test_api_rule_is_checked_before_training(sample_hr, monkeypatch, restarts):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking rule")

    monkeypatch.setattr(api, "make_trainer", no_training)
    with pytest.raises(ValueError, match=r"^rule: expected one of \('mean', 'medoid'\), "
                                         r"got 'bogus'$"):
        api.estimate_kernels([sample_hr[:80, :80]], iters=2, device="cpu", rule="bogus",
                             restarts=restarts)


# ---------------------------------------------------------------------- control characters
def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path, sample_hr, fake):
    from kgengine.errors import shown

    assert shown("a\nb\t\x1b.png") == "a\\nb\\t\\x1b.png" == shown(shown("a\nb\t\x1b.png"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x\ny.png").write_bytes(b"")  # not an image
    _png(tmp_path / "in" / "good.png", sample_hr)
    res = _invoke("farm", tmp_path / "in", "-o", tmp_path / "pool")
    assert res.exit_code == 1
    assert f"failed: {tmp_path / 'in'}/x\\ny.png: not an image file (unrecognised format)" in (
        res.output.splitlines()), res.output
    res = _invoke("degrade", tmp_path / "in", "-k", tmp_path / "pool", "-o", tmp_path / "pairs",
                  "--provider", "cpu")
    assert res.exit_code == 1
    assert error_lines(res.output) == [
        f"error: {tmp_path / 'in'}/x\\ny.png: not an image file (unrecognised format)"]


# ---------------------------------------------------------------------- links to nothing
def _dangling(path):
    """``path``: a symbolic link to a file that does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(path.with_name("gone.png"))
    return path


@pytest.mark.parametrize("recursive", [False, True])
def test_estimate_names_a_link_to_nothing_in_a_folder(tmp_path, sample_hr, monkeypatch,
                                                     recursive):
    """0.9.23 dropped a broken link from a plain folder's listing without a word (and a
    recursive walk named its missing target instead of the link)."""
    monkeypatch.setattr(kgengine.api, "estimate_kernels", _fake_kernels)
    good = _png(tmp_path / "in" / "good.png", sample_hr)
    link = _dangling(tmp_path / "in" / "link.png")
    res = _invoke("estimate", tmp_path / "in", *(["-r"] if recursive else []),
                  "-o", tmp_path / "out", "--iters", 2)
    assert res.exit_code == 1, res.output
    assert error_lines(res.output) == [f"error: {link}: {LOOP}"]
    assert (tmp_path / "out" / f"{good.stem}_report.json").is_file()


def test_farm_fails_a_link_to_nothing_and_finishes_the_others(tmp_path, sample_hr, fake):
    good = _png(tmp_path / "in" / "good.png", sample_hr)
    link = _dangling(tmp_path / "in" / "link.png")
    res = _invoke("farm", tmp_path / "in", "-o", tmp_path / "pool")
    assert res.exit_code == 1, res.output
    with Manifest(tmp_path / "pool") as man:
        states = {row.path: (row.state, row.reason) for row in man.rows()}
    assert states == {str(good): ("done", states[str(good)][1]),
                      str(link): ("failed", f"{link}: {LOOP}")}


def test_degrade_and_noise_bank_name_a_link_to_nothing(tmp_path, sample_hr, fake):
    from kgengine.degradation import collect_noise

    _png(tmp_path / "in" / "good.png", sample_hr)
    link = _dangling(tmp_path / "in" / "link.png")
    _invoke("farm", tmp_path / "in" / "good.png", "-o", tmp_path / "pool")
    res = _invoke("degrade", tmp_path / "in", "-k", tmp_path / "pool", "-o", tmp_path / "pairs",
                  "--provider", "cpu")
    assert res.exit_code == 1
    assert error_lines(res.output) == [f"error: {link}: {LOOP}"]
    assert (tmp_path / "pairs" / "lr" / "good.png").is_file()
    report = collect_noise([tmp_path / "in"], tmp_path / "noise", patch=16, max_var=1e9)
    assert report.images == 1 and report.failed == [f"{link}: {LOOP}"]
