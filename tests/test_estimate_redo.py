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


def own_files(out: Path, name: str = "sample_lr") -> set[str]:
    """The names of kgengine's outputs of image ``name`` in ``out`` that are there."""
    return {p.name for p in output_paths(out, name).values() if p.exists()}


def check_consistent(out: Path, name: str = "sample_lr") -> dict:
    """The report lists exactly the image's other files (all there) and describes the saved
    kernel; returns it."""
    report = json.loads((out / f"{name}_report.json").read_text())
    assert own_files(out, name) == {*report["files"].values(), f"{name}_report.json"}
    k2 = np.load(out / f"{name}_kernel_x2.npy")
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
    # without --x4 the spectrum is read as x2's, so the x2 kernel is another one: the x4
    # outputs do not serve it (before 0.9.26 they were kept, with a kernel a fresh run
    # without --x4 does not give)
    res = estimate(out)
    assert res.exit_code == 0 and "x4 (stored True, asked False)" in res.output
    assert not x4 & own_files(out)
    assert estimate(tmp_path / "plain").exit_code == 0
    assert (out / "sample_lr_kernel_x2.npy").read_bytes() == (
        tmp_path / "plain" / "sample_lr_kernel_x2.npy").read_bytes()
    assert estimate(out, "--x4").exit_code == 0 and x4 <= own_files(out)

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


# ---------------------------------------------------------------- other files, same name
def _two_photos_named_im(tmp_path: Path) -> tuple[Path, Path]:
    """``a/im.png`` (the sample) and ``b/im.png`` (the sample upside down): one name, two
    images."""
    from PIL import Image

    a, b = tmp_path / "a" / "im.png", tmp_path / "b" / "im.png"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_bytes(SAMPLE.read_bytes())
    Image.fromarray(np.asarray(Image.open(SAMPLE))[::-1].copy()).save(b)
    return a, b


def run(out: Path, *inputs: Path):
    return runner.invoke(app, ["estimate", *map(str, inputs), "-o", str(out), "--iters", "30",
                               "--device", "cpu", "--threads", "1"])


def test_another_file_of_the_same_name_is_redone_not_skipped(tmp_path):
    """Before 0.9.25 ``b/im.png`` was skipped as done: ``out`` kept ``a/im.png``'s kernel."""
    from kgengine.farm.seeds import content_hash

    a, b = _two_photos_named_im(tmp_path)
    alone = tmp_path / "alone"
    assert run(alone, b).exit_code == 0
    out = tmp_path / "out"
    assert run(out, a).exit_code == 0
    k_a = (out / "im_kernel_x2.npy").read_bytes()
    res = run(out, b)
    assert res.exit_code == 0, res.output
    sha_a, sha_b = content_hash(a), content_hash(b)
    assert (f"{b}: redone, its outputs were made from another file of its name: image (stored "
            f"sha256 {sha_a[:12]}, asked {sha_b[:12]})") in res.output
    assert (out / "im_kernel_x2.npy").read_bytes() == (alone / "im_kernel_x2.npy").read_bytes()
    assert (out / "im_kernel_x2.npy").read_bytes() != k_a
    report = check_consistent(out, "im")
    assert report["image"] == str(b) and report["image_sha256"] == sha_b
    assert f"skip {b} (done)" in run(out, b).output
    # a report written before 0.9.25 has no hash: kept, as then
    del report["image_sha256"]
    (out / "im_report.json").write_text(json.dumps(report))
    assert f"skip {a} (done)" in run(out, a).output


def test_inputs_sharing_a_name_get_their_content_hash_in_it(tmp_path):
    """Two inputs named ``im`` were refused before any work (0.9.24); now each gets
    ``im-<8 hex of its SHA-256>`` (the farm's rule), with the kernel it trains alone."""
    from kgengine.farm.seeds import content_hash

    a, b = _two_photos_named_im(tmp_path)
    names = {p: f"im-{content_hash(p)[:8]}" for p in (a, b)}
    alone = {}
    for p in (a, b):
        assert run(tmp_path / f"alone_{p.parent.name}", p).exit_code == 0
        alone[p] = (tmp_path / f"alone_{p.parent.name}" / "im_kernel_x2.npy").read_bytes()
    out = tmp_path / "out"
    res = run(out, a.parent, b.parent)
    assert res.exit_code == 0, res.output
    for p in (a, b):
        assert (f"{p}: another input has the name 'im'; its outputs are named "
                f"'{names[p]}'") in res.output
        assert (out / f"{names[p]}_kernel_x2.npy").read_bytes() == alone[p]  # a batch of 2
        report = json.loads((out / f"{names[p]}_report.json").read_text())
        assert report["image"] == str(p) and report["batch_size"] == 2
    assert not (out / "im_report.json").exists()
    res = run(out, a.parent, b.parent)
    assert res.exit_code == 0 and res.output.count("(done)") == 2, res.output


def test_a_photo_of_the_same_name_added_later_renames_nothing_done(tmp_path):
    """Before 0.9.26 adding ``b/im.png`` to a job that had done ``a/im.png`` renamed both to
    ``im-<hash>`` and trained ``a`` again; now an input whose outputs are in ``-o`` (the
    report's ``image_sha256``) keeps their name, under its stem or its hashed name."""
    from kgengine.farm.seeds import content_hash

    a, b = _two_photos_named_im(tmp_path)
    name_b = f"im-{content_hash(b)[:8]}"
    alone = tmp_path / "alone"
    assert run(alone, b).exit_code == 0
    out = tmp_path / "out"
    assert run(out, a).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = run(out, a.parent, b.parent)
    assert res.exit_code == 0, res.output
    assert f"skip {a} (done)" in res.output
    assert f"{a}: " not in res.output.replace(f"skip {a} (done)", "")
    assert f"{b}: another input has the name 'im'; its outputs are named '{name_b}'" in res.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert (out / f"{name_b}_kernel_x2.npy").read_bytes() == (
        alone / "im_kernel_x2.npy").read_bytes()
    assert json.loads((out / f"{name_b}_report.json").read_text())["image_sha256"] == (
        content_hash(b))
    # b alone later: it keeps its hashed name and is done; a alone keeps 'im'
    res = run(out, b)
    assert res.exit_code == 0, res.output
    assert (f"{b}: keeps the name of its earlier outputs in {out}; its outputs are named "
            f"'{name_b}'") in res.output
    assert f"skip {b} (done)" in res.output
    assert run(out, a).output.count("(done)") == 1
    assert {p.name for p in out.iterdir()} == {*before, *(p.name for p in output_paths(
        out, name_b).values() if "x4" not in p.name)}


def test_two_copies_of_one_photo_under_one_name_are_both_kept(tmp_path):
    """Two inputs ``x/im.png`` and ``y/im.png`` with the same bytes are named ``im-<8 hex>``
    and ``im-<12 hex>``; before 0.9.26 a rerun kept only the first name, trained the second
    again under ``im`` and, the run after, swapped them."""
    from kgengine.farm.seeds import content_hash

    x, y = tmp_path / "x" / "im.png", tmp_path / "y" / "im.png"
    for p in (x, y):
        p.parent.mkdir()
        p.write_bytes(SAMPLE.read_bytes())
    h = content_hash(x)
    out = tmp_path / "out"
    assert run(out, x, y).exit_code == 0
    reports = sorted(p.name for p in out.glob("*_report.json"))
    assert reports == [f"im-{h[:12]}_report.json", f"im-{h[:8]}_report.json"]
    for _ in range(2):
        res = run(out, x, y)
        assert res.exit_code == 0 and res.output.count("(done)") == 2, res.output
        assert sorted(p.name for p in out.glob("*_report.json")) == reports


def test_restarts_are_not_redone_for_a_length_given_another_way(tmp_path):
    """With restarts the iterations run are the top-level ``iters``: ``--iters 30`` and
    ``--set restart_iters=30`` train the same (before 0.9.26 the second was redone for
    ``config.iters``)."""
    out = tmp_path / "out"
    assert estimate(out, "--restarts", "2").exit_code == 0
    kernel = (out / "sample_lr_kernel_x2.npy").read_bytes()
    res = runner.invoke(app, ["estimate", str(SAMPLE), "-o", str(out), "--restarts", "2",
                              "--set", "restart_iters=30", "--device", "cpu", "--threads", "1"])
    assert res.exit_code == 0 and "(done)" in res.output, res.output
    assert (out / "sample_lr_kernel_x2.npy").read_bytes() == kernel
    res = runner.invoke(app, ["estimate", str(SAMPLE), "-o", str(out), "--restarts", "2",
                              "--set", "restart_iters=40", "--device", "cpu", "--threads", "1"])
    assert "iters (stored 30, asked 40)" in res.output


@pytest.mark.parametrize("damage", ["truncate", "empty", "nan", "delete_x4", "mat",
                                    "empty_png", "delete_generator"])
def test_a_damaged_kernel_file_is_redone(tmp_path, damage):
    """0.9.29: an empty .npy (NumPy raises EOFError) stopped the rerun with "Aborted.";
    a missing generator or an empty picture was kept as done."""
    out = tmp_path / "out"
    assert estimate(out, "--x4").exit_code == 0
    good = {n: (out / f"sample_lr_kernel_{n}.npy").read_bytes() for n in ("x2", "x4")}
    if damage == "truncate":
        (out / "sample_lr_kernel_x2.npy").write_bytes(good["x2"][:50])
    elif damage == "empty":
        (out / "sample_lr_kernel_x4.npy").write_bytes(b"")
    elif damage == "empty_png":
        (out / "sample_lr_kernel.png").write_bytes(b"")
    elif damage == "delete_generator":
        (out / "sample_lr_generator.npz").unlink()
    elif damage == "nan":
        np.save(out / "sample_lr_kernel_x2.npy", np.full((13, 13), np.nan))
    elif damage == "delete_x4":
        (out / "sample_lr_kernel_x4.npy").unlink()
    else:  # the .mat holding another kernel than its .npy
        mat = out / "sample_lr_kernel_x2.mat"
        mat.write_bytes((out / "sample_lr_kernel_x4.mat").read_bytes())
    res = estimate(out, "--x4")
    assert res.exit_code == 0 and "(done)" not in res.output, res.output
    assert {n: (out / f"sample_lr_kernel_{n}.npy").read_bytes() for n in ("x2", "x4")} == good
    assert min((out / f"sample_lr_{n}").stat().st_size for n in ("kernel.png", "generator.npz"))


def test_the_output_folder_may_be_the_folder_of_photos(tmp_path):
    """``kgengine estimate photos -o photos`` read nothing before 0.9.26 (the output folder
    was left out as a whole, with a message about pool folders); now its photos are read and
    its own kernel files are not, on this run and the next."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(SAMPLE.read_bytes())
    alone = tmp_path / "alone"
    assert run(alone, photos / "a.png").exit_code == 0
    res = run(photos, photos)
    assert res.exit_code == 0 and "pool" not in res.output, res.output
    assert (photos / "a_kernel_x2.npy").read_bytes() == (alone / "a_kernel_x2.npy").read_bytes()
    res = run(photos, photos)
    assert res.exit_code == 0 and res.output.count("(done)") == 1, res.output
    # the heat map a_kernel.png and a_kernel_x2.npy are not read as photos
    assert "skip 2 kernel file(s) in the estimate output folder(s)" in res.output
    assert not list(photos.glob("a_kernel*_kernel*"))
