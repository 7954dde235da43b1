"""When writes fail: one line naming the file and the reason, exit 1, the other images still
finish with intact files (estimate, farm, synth, export, pool plot); a farm whose writes fail
and which is killed at random points ends, after reruns, with the pool of an undisturbed run.

Failures are injected in kgengine's one write layer (:func:`kgengine.atomic._commit`), since
chmod does not stop root. The helpers here are shared by the other ``test_reliability_*``
files.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from faults import Killed, inject_write_faults
from PIL import Image
from typer.testing import CliRunner

import kgengine.api
from kgengine import atomic
from kgengine.api import EstimateResult
from kgengine.cli import app
from kgengine.errors import KGEngineError, OutputError, TrainingDivergedError
from kgengine.farm import records, training
from kgengine.farm.manifest import Manifest
from kgengine.farm.poolfiles import POOL_X2
from kgengine.farm.runner import run_farm
from kgengine.kernel import analytic_x4, gaussian_kernel
from kgengine.pool import load_pool
from kgengine.stopping import stop_rule_of, stop_setting

DATA = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"
BOXES = [(0, 0, 96, 96), (100, 100, 196, 200), (200, 0, 300, 96), (0, 200, 100, 296),
         (200, 200, 296, 300), (110, 0, 206, 96)]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    """torch on 1 thread: the machine is shared."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------- shared helpers
def make_images(folder: Path, n: int = 3, prefix: str = "p") -> list[Path]:
    """``n`` PNG crops of the bundled sample (all at least 96 px a side)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with Image.open(DATA) as im:
        for i, box in enumerate(BOXES[:n]):
            paths.append(folder / f"{prefix}{i}.png")
            im.crop(box).save(paths[-1])
    return paths


def error_lines(output: str) -> list[str]:
    """The ``error:`` lines of a command's output; also checks there is no traceback."""
    assert "Traceback" not in output, output
    return [line for line in output.splitlines() if line.startswith("error:")]


def fake_estimate_kernel(image, *, seed=0, x4=False, device="auto", config=None,
                         mode="composed", callback=None, restarts=1, stop="auto", **_):
    """Stands in for :func:`kgengine.api.estimate_kernel`: a Gaussian whose width depends on
    the seed, with a report holding what resume compares (seed, iters, config, mode, stop)."""
    k2 = gaussian_kernel(13, 1.0 + (seed % 7) / 10)
    k4 = analytic_x4(k2) if x4 else None
    report = {"seed": seed, "iters": config.iters, "config": config.to_dict(), "mode": mode,
              "kernel_x4": None if k4 is None else {"size": list(k4.shape)},
              "restarts": {"k": restarts} if restarts > 1 else None,
              "wall_s": 0.0, "ms_per_iter": 0.0, "stop": stop_setting(stop_rule_of(stop))}
    return EstimateResult("x", k2, k4, report, [np.zeros((1, 1, 1, 1))] * 6, k2)


class FakeTrainer:
    """Stands in for ``estimate_kernels`` in the farm: a Gaussian per image from its seed."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, images, *, seeds, names, x4, device, config, dtype, mode, callback,
                 on_diverge, restarts, stop):
        self.calls.append(list(names))
        out: list[EstimateResult | TrainingDivergedError] = []
        for name, seed in zip(names, seeds, strict=True):
            k = gaussian_kernel(13, 1.0 + (seed % 7) / 10)
            report = {"seed": seed, "train_s": 0.01, "iters": config.iters}
            out.append(EstimateResult(name, k, analytic_x4(k) if x4 else None, report,
                                      [np.zeros((1, 1, 1, 1))], k, None))
        return out


def fail_writes(monkeypatch, names: set[str], code: int = errno.EFBIG,
                text: str = "File too large") -> list[str]:
    """Make the write layer fail with ``OSError(code, text)`` for files named in ``names``;
    returns the list of names that failed."""
    real, failed = atomic._commit, []

    def commit(tmp: str, path: Path) -> None:
        if path.name in names:
            failed.append(path.name)
            raise OSError(code, text)
        real(tmp, path)

    monkeypatch.setattr(atomic, "_commit", commit)
    return failed


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------- 1. write failures
def test_estimate_write_failure_is_one_line_and_the_others_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(kgengine.api, "estimate_kernel", fake_estimate_kernel)
    imgs = make_images(tmp_path / "in")
    out = tmp_path / "out"
    failed = fail_writes(monkeypatch, {"p1_kernel_x2.npy"})
    res = runner.invoke(app, ["estimate", *map(str, imgs), "-o", str(out), "--iters", "2"])
    assert res.exit_code == 1, res.output
    assert failed == ["p1_kernel_x2.npy"]
    assert error_lines(res.output) == [
        f"error: {out / 'p1_kernel_x2.npy'}: cannot write (File too large)"]
    assert "1 of 3 image(s) failed" in res.output
    for name in ("p0", "p2"):  # the others finished, with intact files
        assert np.load(out / f"{name}_kernel_x2.npy").sum() == pytest.approx(1.0)
        assert json.loads((out / f"{name}_report.json").read_text())["seed"] == 0
    assert not (out / "p1_report.json").exists() and not tmp_files(out)
    monkeypatch.undo()  # the disk has room again: a rerun does the missing image only
    monkeypatch.setattr(kgengine.api, "estimate_kernel", fake_estimate_kernel)
    res = runner.invoke(app, ["estimate", *map(str, imgs), "-o", str(out), "--iters", "2"])
    assert res.exit_code == 0 and res.output.count("(done)") == 2, res.output
    assert (out / "p1_report.json").is_file()


def test_estimate_out_is_a_file_fails_before_training(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(kgengine.api, "estimate_kernel", lambda *a, **k: calls.append(1))
    imgs = make_images(tmp_path / "in", 1)
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    res = runner.invoke(app, ["estimate", str(imgs[0]), "-o", str(out), "--iters", "2"])
    assert res.exit_code == 1 and not calls
    assert error_lines(res.output) == [f"error: {out}: is a file, not a folder"]
    res = runner.invoke(app, ["estimate", str(imgs[0]), "-o", str(out / "sub"), "--iters", "2"])
    assert res.exit_code == 1 and not calls
    assert error_lines(res.output) == [
        f"error: {out / 'sub'}: cannot create the folder: {out} is a file"]


def test_farm_disk_full_leaves_the_image_pending_and_the_others_done(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "estimate_kernels", FakeTrainer())
    imgs = make_images(tmp_path / "in", 4)
    pool = tmp_path / "pool"
    fail_writes(monkeypatch, {"p2_report.json"}, errno.ENOSPC, "No space left on device")
    res = runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(pool), "--batch", "2"])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if "p2_report.json" in ln]
    assert len(lines) == 1 and "cannot write (No space left on device)" in lines[0]
    assert "3 done, 0 failed" in res.output and "1 left pending" in res.output
    with Manifest(pool) as man:
        states = {r.name: r.state for r in man.rows()}
        assert states == {"p0": "done", "p1": "done", "p2": "pending", "p3": "done"}
        (p2,) = man.rows("pending")
        assert "No space left on device" in p2.reason
    assert len(load_pool(pool / POOL_X2)) == 3 and not tmp_files(pool)
    monkeypatch.undo()
    monkeypatch.setattr(training, "estimate_kernels", FakeTrainer())
    res = runner.invoke(app, ["farm", "-o", str(pool)])
    assert res.exit_code == 0 and "1 done, 0 failed, 3 skipped" in res.output, res.output
    with Manifest(pool) as man:
        assert [[e[2] for e in man.events(r.id)].count("done") for r in man.rows()] == [1] * 4
    assert len(load_pool(pool / POOL_X2)) == len(imgs)


@pytest.mark.parametrize("command", ["farm", "synth", "eval"])
def test_out_is_a_file_is_one_line_before_any_work(tmp_path, command):
    make_images(tmp_path / "in", 1)
    for sub in ("lr_x2", "gt_k_x2"):  # enough of a dataset for eval to get to its output
        (tmp_path / "in" / sub).mkdir()
    out = tmp_path / "out"
    out.write_text("x")
    res = runner.invoke(app, [command, str(tmp_path / "in"), "-o", str(out)])
    assert res.exit_code == 1
    assert error_lines(res.output) == [f"error: {out}: is a file, not a folder"]
    assert out.read_text() == "x"


def test_synth_write_failure_skips_that_image_only(tmp_path, monkeypatch):
    make_images(tmp_path / "hr", 3)
    out = tmp_path / "set"
    fail_writes(monkeypatch, {"kernel_2.mat"})  # the x2 and x4 kernels of im_2
    res = runner.invoke(app, ["synth", str(tmp_path / "hr"), "-o", str(out)])
    assert res.exit_code == 1, res.output
    (line,) = [ln for ln in error_lines(res.output) if "kernel_2.mat" in ln]
    assert line == f"error: {out / 'gt_k_x2' / 'kernel_2.mat'}: cannot write (File too large)"
    assert "wrote 2 images" in res.output
    assert [e["name"] for e in json.loads((out / "synth.json").read_text())["images"]] == [
        "im_1", "im_3"]
    for n in (1, 3):
        for rel in (f"gt/im_{n}.png", f"lr_x2/im_{n}.png", f"lr_x4/im_{n}.png",
                    f"gt_k_x2/kernel_{n}.mat", f"gt_k_x4/kernel_{n}.mat"):
            assert (out / rel).is_file(), rel
    assert not list(out.rglob("*_2.*")) and not tmp_files(out)  # no partial im_2


def test_export_and_pool_plot_write_failures(tmp_path, monkeypatch):
    from kgengine.pool import make_pool, save_pool

    pool = save_pool(tmp_path / "pool.npz", make_pool([gaussian_kernel(13, 1.5)], ["a"],
                                                      ["a.png"], 2))
    fail_writes(monkeypatch, {"x.onnx", "mosaic.png"}, errno.EACCES, "Permission denied")
    res = runner.invoke(app, ["export", "pool", "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 1
    assert error_lines(res.output) == [
        f"error: {tmp_path / 'x.onnx'}: cannot write (Permission denied)"]
    res = runner.invoke(app, ["pool", "plot", str(pool), "-o", str(tmp_path / "mosaic.png")])
    assert res.exit_code == 1
    assert error_lines(res.output) == [
        f"error: {tmp_path / 'mosaic.png'}: cannot write (Permission denied)"]
    res = runner.invoke(app, ["export", "pool", "-o", str(tmp_path)])  # a folder
    assert res.exit_code == 1
    assert error_lines(res.output) == [f"error: {tmp_path}: is a folder; give a file name"]
    assert not tmp_files(tmp_path) and not (tmp_path / "x.onnx").exists()


def test_atomic_write_raises_output_error_and_leaves_nothing(tmp_path, monkeypatch):
    fail_writes(monkeypatch, {"a.json"}, errno.EFBIG, "File too large")
    with pytest.raises(OutputError) as info:
        atomic.save_json(tmp_path / "a.json", {"x": 1})
    assert str(info.value) == f"{tmp_path / 'a.json'}: cannot write (File too large)"
    assert isinstance(info.value, KGEngineError) and isinstance(info.value, OSError)
    assert info.value.errno == errno.EFBIG and info.value.filename == str(tmp_path / "a.json")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- fault injection
def test_farm_survives_random_write_failures_and_kills(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "estimate_kernels", FakeTrainer())
    imgs = make_images(tmp_path / "in", 6)
    reference = run_farm(imgs, tmp_path / "calm", batch=2, device="cpu")
    assert reference.done == 6
    injected = inject_write_faults(monkeypatch, 1234, kill_below=0.05, fail_below=0.25)
    monkeypatch.setattr(records.FarmJob, "give_back", lambda self, rows, reason: None)
    pool, runs = tmp_path / "pool", 0
    while True:
        runs += 1
        assert runs < 200, "the farm never finished"
        try:
            summary = run_farm(imgs if runs == 1 else [], pool, batch=2, device="cpu")
        except (Killed, KGEngineError):
            continue
        if summary.left_pending == 0:
            break
    assert injected["fail"] > 3 and injected["kill"] > 0, injected
    with Manifest(pool) as man:
        assert man.counts() == {"pending": 0, "running": 0, "done": 6, "failed": 0}
        for r in man.rows():
            assert [e[2] for e in man.events(r.id)].count("done") == 1, r.name
            for rel in r.output_paths.values():
                assert (pool / rel).is_file()
    assert not tmp_files(pool)
    got, want = load_pool(pool / POOL_X2), load_pool(tmp_path / "calm" / POOL_X2)
    assert got.ids == want.ids and got.sources == want.sources and got.seeds == want.seeds
    np.testing.assert_array_equal(got.kernels, want.kernels)
    np.testing.assert_array_equal(got.confidences, want.confidences)
