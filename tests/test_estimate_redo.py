"""``kgengine estimate`` redoing an image (other settings, --force): the old result is void
before the first new file is written, so a redo cut short (a failed write, a kill) leaves no
report and the next run redoes the image, never keeping a kernel of other settings; and the
old run's files that the redo does not write (its x4 kernel) are removed, nothing else."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from faults import Killed
from typer.testing import CliRunner

from kgengine import atomic
from kgengine.cli import app
from kgengine.outputs import output_paths

SAMPLE = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_lr.png"
runner = CliRunner()


def estimate(out: Path, *extra: str):
    """One tiny real training of the bundled 160x160 LR sample into ``out``."""
    return runner.invoke(app, ["estimate", str(SAMPLE), "-o", str(out), "--iters", "30",
                               "--device", "cpu", "--threads", "1", *extra])


def own_files(out: Path) -> set[str]:
    """The names of kgengine's outputs of the sample in ``out`` that are there."""
    return {p.name for p in output_paths(out, "sample_lr").values() if p.exists()}


def check_consistent(out: Path) -> dict:
    """The report lists exactly the image's other files (all there) and describes the saved
    kernel; returns it."""
    report = json.loads((out / "sample_lr_report.json").read_text())
    assert own_files(out) == {*report["files"].values(), "sample_lr_report.json"}
    k2 = np.load(out / "sample_lr_kernel_x2.npy")
    assert report["kernel_x2"]["size"] == list(k2.shape)
    assert report["kernel_x2"]["sum"] == pytest.approx(float(k2.sum()))
    assert not list(out.glob(".*.tmp"))
    return report


def break_write(monkeypatch, name: str, how: str) -> list[str]:
    """Make the write layer's commit of the file ``name`` fail (EFBIG, as under ulimit -f)
    or be killed (:class:`Killed`, nothing after it runs); the files committed before it
    are kept. Returns the names committed while broken."""
    real, committed = atomic._commit, []

    def commit(tmp: str, path: Path) -> None:
        if path.name == name:
            if how == "kill":
                raise Killed
            raise OSError(errno.EFBIG, "File too large")
        real(tmp, path)
        committed.append(path.name)

    monkeypatch.setattr(atomic, "_commit", commit)
    return committed


@pytest.mark.parametrize(("name", "how"), [
    ("sample_lr_kernel_x2.mat", "fail"),  # right after the first new kernel file
    ("sample_lr_generator.npz", "fail"),  # the brief's reproduction (ulimit -f)
    ("sample_lr_report.json", "fail"),  # every new file written but the report
    ("sample_lr_kernel.png", "kill"),  # killed mid-way: no clean-up runs
])
def test_a_redo_cut_short_leaves_no_report_and_the_old_settings_are_redone(
        tmp_path, monkeypatch, name, how):
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert estimate(clean, "--seed", "0").exit_code == 0
    assert estimate(out, "--seed", "0").exit_code == 0
    seed0 = (out / "sample_lr_kernel_x2.npy").read_bytes()
    assert seed0 == (clean / "sample_lr_kernel_x2.npy").read_bytes()  # deterministic on CPU

    committed = break_write(monkeypatch, name, how)
    if how == "kill":
        with pytest.raises(Killed):
            estimate(out, "--seed", "7")
    else:
        res = estimate(out, "--seed", "7")
        assert res.exit_code == 1 and "redone" in res.output, res.output
        assert f"{name}: cannot write (File too large)" in res.output
    monkeypatch.undo()
    assert "sample_lr_kernel_x2.npy" in committed  # the seed-7 kernel is on disk ...
    assert (out / "sample_lr_kernel_x2.npy").read_bytes() != seed0
    assert not (out / "sample_lr_report.json").exists()  # ... and no report vouches for it

    res = estimate(out, "--seed", "0")  # the original settings again: redone, not skipped
    assert res.exit_code == 0 and "skip" not in res.output, res.output
    assert (out / "sample_lr_kernel_x2.npy").read_bytes() == seed0
    report = check_consistent(out)
    assert report["seed"] == 0
    assert report["kernel_x2"] == json.loads((clean / "sample_lr_report.json").read_text())[
        "kernel_x2"]
    assert "skip" in estimate(out, "--seed", "0").output


@pytest.mark.parametrize("redo", [["--seed", "1"], ["--force"]])
def test_a_redo_without_x4_removes_the_x4_files_and_nothing_else(tmp_path, redo):
    out = tmp_path / "out"
    assert estimate(out, "--x4").exit_code == 0
    x4 = {"sample_lr_kernel_x4.npy", "sample_lr_kernel_x4.mat"}
    assert x4 <= own_files(out)
    others = ["sample_lr_kernel_x4.npy.bak", "sample_lr_kernel_x4_notes.txt",
              "other_kernel_x4.npy", "other_report.json"]
    for other in others:
        (out / other).write_text("not kgengine's")
    with_x4 = check_consistent(out)
    # a rerun with the same settings but no --x4 keeps the x4 outputs (they serve it)
    res = estimate(out)
    assert res.exit_code == 0 and "skip" in res.output and x4 <= own_files(out)

    res = estimate(out, *redo)
    assert res.exit_code == 0, res.output
    assert ("redone" in res.output) == ("--force" not in redo), res.output
    assert not x4 & own_files(out)
    report = check_consistent(out)
    assert report["kernel_x4"] is None and set(report["files"]) == set(with_x4["files"]) - {
        "x4_npy", "x4_mat"}
    for other in others:
        assert (out / other).read_text() == "not kgengine's"


def test_a_first_write_removes_nothing_of_other_images(tmp_path):
    out = tmp_path / "out"
    assert estimate(out, "--x4").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = tmp_path / "other.png"
    other.write_bytes(SAMPLE.read_bytes())
    res = runner.invoke(app, ["estimate", str(other), "-o", str(out), "--iters", "30",
                              "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert {p.name for p in out.iterdir()} - set(before) == {
        p.name for p in output_paths(out, "other").values() if "x4" not in p.name}
