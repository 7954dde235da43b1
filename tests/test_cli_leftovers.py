"""Three CLI defects of 0.9.19, fixed: the farm's word for a file it cannot take agrees with
its count, ``--threads 0`` means the default in every command, and ``degrade`` reports a bad
kernel pool before its progress bar starts.

1. ``kgengine farm``: a file whose name is not valid UTF-8 was printed as ``skip`` but counted
   as failed; it is now a ``failed:`` line like any other unreadable file (exit 1).
2. ``--threads 0``: ``estimate`` took it as torch's default, ``farm`` and ``degrade`` refused
   it; now all three take 0 as their default (``degrade``: all usable cores).
3. ``kgengine degrade`` with a pool that cannot be loaded printed a ``degrading 0/?`` line
   before the error; the pool is now loaded and checked first.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from test_reliability import FakeTrainer, _one_thread, make_images  # noqa: F401
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.commands import estimate as estimate_command
from kgengine.degradation import degrade_folder
from kgengine.degradation import runner as degrade_runner
from kgengine.farm import runner as farm_runner
from kgengine.farm import training
from kgengine.imageio import to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import make_pool, save_pool

runner = CliRunner()
#: What a patched :func:`kgengine.sysinfo.auto_threads` returns: not 1, so that a default
#: is told apart from the one thread a clamped 0 gave.
DEFAULT_THREADS = 2


@pytest.fixture()
def fake(monkeypatch) -> FakeTrainer:
    """The farm's trainer replaced by :class:`FakeTrainer`, recording torch's threads."""
    fake = FakeTrainer()
    fake.threads = []

    def train(*args, **kwargs):
        fake.threads.append(torch.get_num_threads())
        return fake(*args, **kwargs)

    monkeypatch.setattr(training, "estimate_kernels", train)
    return fake


@pytest.fixture()
def hr_dir(tmp_path) -> Path:
    """Two small HR images."""
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (48, 40), "b.png": (50, 52)}.items():
        Image.fromarray(to_uint8(rng.random((h, w, 3)))).save(folder / name)
    return folder


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------- 1. farm: skip/failed
def test_farm_reports_a_non_utf8_name_as_failed_like_an_unreadable_file(tmp_path, fake):
    imgs = make_images(tmp_path / "in", 2)
    bad = os.fsencode(tmp_path / "in") + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    with open(bad, "wb") as fh:
        fh.write(imgs[0].read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text("gone.png\n")  # listed, missing: a failed row naming the file
    res = runner.invoke(app, ["farm", str(tmp_path / "in"), str(listing),
                              "-o", str(tmp_path / "pool")])
    assert res.exit_code == 1, res.output
    assert "2 done, 2 failed" in res.output
    failed = [line for line in _lines(res.output) if line.startswith("failed:")]
    assert failed == [
        f"failed: {tmp_path / 'in'}/caf\\xe9.png: the file name is not valid UTF-8; "
        "rename the file",
        f"failed: {tmp_path / 'gone.png'}: no such file"]
    assert not [line for line in _lines(res.output) if line.startswith("skip")]
    res = runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(tmp_path / "pool")])
    assert res.exit_code == 1 and "0 done, 1 failed, 2 skipped" in res.output, res.output
    assert sum(line.startswith("failed:") for line in _lines(res.output)) == 1


# ---------------------------------------------------------------------- 2. --threads 0
@pytest.mark.parametrize("command", ["estimate", "farm", "degrade"])
def test_threads_help_says_what_0_means(command):
    click_app = typer.main.get_command(app)
    param = next(p for p in click_app.commands[command].params if p.name == "threads")
    assert re.search(r"\b0\b", param.help) and "default" in param.help, param.help


def test_estimate_threads_0_is_the_default(tmp_path, monkeypatch):
    img = make_images(tmp_path / "in", 1)[0]
    seen: list[int] = []

    def stub(images, out, **_):
        seen.append(torch.get_num_threads())
        return 0

    monkeypatch.setattr(estimate_command, "_estimate", stub)
    monkeypatch.setattr("kgengine.sysinfo.auto_threads", lambda default: DEFAULT_THREADS)
    for threads, expected in (("0", DEFAULT_THREADS), ("1", 1)):
        res = runner.invoke(app, ["estimate", str(img), "-o", str(tmp_path / "out"),
                                  "--threads", threads])
        assert res.exit_code == 0, res.output
        assert seen[-1] == expected
    res = runner.invoke(app, ["estimate", str(img), "-o", str(tmp_path / "o"), "--threads", "-1"])
    assert res.exit_code == 1 and "--threads must be at least 0, got -1" in res.output


def test_farm_threads_0_is_the_default(tmp_path, fake, monkeypatch):
    make_images(tmp_path / "in", 2)
    monkeypatch.setattr(farm_runner, "auto_threads", lambda default: DEFAULT_THREADS)
    res = runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(tmp_path / "pool"),
                              "--threads", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "2 done, 0 failed" in res.output
    assert fake.threads and set(fake.threads) == {DEFAULT_THREADS}
    assert torch.get_num_threads() == 1  # restored
    res = runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(tmp_path / "p2"),
                              "--threads", "-1"])
    assert res.exit_code == 1 and "--threads must be at least 0, got -1" in res.output
    assert not (tmp_path / "p2").exists()


def test_degrade_threads_0_is_the_default(hr_dir, kernel_dir, tmp_path, monkeypatch):
    asked: list[int | None] = []
    real = degrade_runner.make_session

    def make_session(model, provider, threads, **kwargs):
        asked.append(threads)
        return real(model, provider, threads, **kwargs)

    monkeypatch.setattr(degrade_runner, "make_session", make_session)
    out = tmp_path / "out"
    res = runner.invoke(app, ["degrade", str(hr_dir), "-k", str(kernel_dir), "-o", str(out),
                              "--provider", "cpu", "--threads", "0"])
    assert res.exit_code == 0, res.output
    assert "2 pairs written" in res.output and asked == [None]  # None: all usable cores
    report = degrade_folder(hr_dir, kernel_dir, tmp_path / "api", provider="cpu", threads=0)
    assert report.written == 2 and asked == [None, None]
    res = runner.invoke(app, ["degrade", str(hr_dir), "-k", str(kernel_dir),
                              "-o", str(tmp_path / "o"), "--threads", "-1"])
    assert res.exit_code == 1 and "--threads must be at least 0, got -1" in res.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- 3. degrade: bad pool
def _bad_confidences(tmp_path: Path) -> Path:
    """A pool file whose confidence is 2 (outside [0, 1])."""
    pool = make_pool([anisotropic_gaussian(13, 1.0, 2.0, 0.5)], ["k0"], ["p0.png"], 2,
                     seeds=[0], confidences=[0.5])
    path = save_pool(tmp_path / "conf", pool)
    with np.load(path, allow_pickle=False) as data:
        arrays = dict(data)
    arrays["confidences"] = np.array([2.0])
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("corrupt", "cannot read kernel pool"),
    ("missing", "no such kernel pool"),
    ("bad confidences", "confidences must be in [0, 1]"),
    ("none confident", "no kernel has confidence >= 0.9"),
])
def test_degrade_reports_a_bad_pool_before_the_progress_bar(hr_dir, kernel_dir, tmp_path,
                                                            case, message):
    pool = tmp_path / "kernel_pool.npz"
    extra: list[str] = []
    if case == "corrupt":
        pool.write_bytes(b"PK\x03\x04 not a zip archive")
    elif case == "bad confidences":
        pool = _bad_confidences(tmp_path)
    elif case == "none confident":  # kernel files have no known confidence
        pool, extra = kernel_dir, ["--min-confidence", "0.9"]
    out = tmp_path / "out"
    res = runner.invoke(app, ["degrade", str(hr_dir), "-k", str(pool), "-o", str(out),
                              "--provider", "cpu", *extra])
    assert res.exit_code == 1, res.output
    lines = _lines(res.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "degrading" not in res.output
    assert not out.exists() or not any(out.rglob("*"))  # nothing written
