"""Farm reliability: a pool heals itself (deleted kernels, truncated reports, a rebuild never
dies on one bad report), non-finite settings are refused before anything is written, a file
name that is not UTF-8 does not stop the farm, a farm never reads a pool folder as input, and
an unreachable Ray address is one line at once."""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest
from test_reliability import FakeTrainer, error_lines, make_images
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.errors import KGEngineError
from kgengine.farm import training
from kgengine.farm.manifest import MANIFEST_FILE, Manifest
from kgengine.farm.poolfiles import POOL_X2, rebuild_pool
from kgengine.farm.ray_runner import check_reachable
from kgengine.farm.runner import run_farm
from kgengine.farm.settings import FarmSettings
from kgengine.pool import load_pool

runner = CliRunner()


@pytest.fixture
def fake(monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(training, "estimate_kernels", fake)
    return fake


@pytest.fixture
def pool(tmp_path, fake):
    """A finished 4-image pool (x4 too) and its images."""
    imgs = make_images(tmp_path / "in", 4)
    summary = run_farm(imgs, tmp_path / "pool", batch=2, device="cpu", x4=True)
    assert summary.done == 4
    return tmp_path / "pool", imgs


def _row(pool_dir, name):
    with Manifest(pool_dir) as man:
        return next(r for r in man.rows() if r.name == name)


def _events(pool_dir, name):
    with Manifest(pool_dir) as man:
        return [(e[2], e[3]) for e in man.events(_row(pool_dir, name).id)]


# ---------------------------------------------------------------------- 2. self-healing pool
@pytest.mark.parametrize("damage", ["delete x2 kernel", "truncate report", "corrupt x4 kernel",
                                    "empty x4 kernel", "empty picture"])
def test_pool_heals_damaged_done_rows(pool, fake, damage):
    """0.9.29: an empty .npy stopped the farm with "Aborted." (NumPy's EOFError) at every
    run; an empty picture was kept."""
    pool_dir, _ = pool
    files = _row(pool_dir, "p1").output_paths
    if damage.startswith("empty"):
        key = "x4_npy" if damage == "empty x4 kernel" else "png"
        (pool_dir / files[key]).write_bytes(b"")
        why = f"{files[key]} is empty"
    elif damage == "delete x2 kernel":
        (pool_dir / files["x2_npy"]).unlink()
        why = f"{files['x2_npy']} is missing"
    elif damage == "truncate report":
        report = pool_dir / files["report"]
        report.write_bytes(report.read_bytes()[:40])
        why = f"{files['report']} is unreadable (JSONDecodeError)"
    else:
        np.save(pool_dir / files["x4_npy"], np.full((37, 37), np.nan))
        why = f"{files['x4_npy']} is not a usable kernel"
    res = runner.invoke(app, ["farm", "-o", str(pool_dir)])
    assert res.exit_code == 0, res.output
    assert "1 done, 0 failed, 3 skipped" in res.output and not error_lines(res.output)
    assert fake.calls[-1] == ["p1"]
    states = _events(pool_dir, "p1")
    assert [s for s, _ in states].count("done") == 2  # redone once, after the damage
    detail = next(d for s, d in states if s == "pending" and d and "damaged" in d)
    assert why in detail
    assert len(load_pool(pool_dir / POOL_X2)) == 4
    assert len(load_pool(pool_dir / "kernel_pool_x4.npz")) == 4
    res = runner.invoke(app, ["farm", "-o", str(pool_dir)])  # healthy again: nothing to do
    assert res.exit_code == 0 and "0 done, 0 failed, 4 skipped" in res.output


def test_rebuild_never_dies_on_one_bad_report(pool):
    pool_dir, _ = pool
    files = _row(pool_dir, "p2").output_paths
    (pool_dir / files["report"]).write_text("{ not json")
    lines: list[str] = []
    with Manifest(pool_dir) as man:
        written = rebuild_pool(man, pool_dir, x4=True, log=lines.append)
        assert man.counts()["pending"] == 1 and _row(pool_dir, "p2").state == "pending"
    assert len(written) == 2 and len(load_pool(pool_dir / POOL_X2)) == 3
    assert len(lines) == 1 and lines[0].startswith("p2: left out of the pool")


def test_non_finite_config_is_refused_before_anything_is_written(tmp_path, fake):
    make_images(tmp_path / "in", 1)
    for value in ("nan", "inf", "-inf"):
        res = runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(tmp_path / "pool"),
                                  "--set", f"lr_g={value}"])
        assert res.exit_code == 1
        assert error_lines(res.output) == [
            f"error: config lr_g: expected a finite float (float32), got '{value}'"]
    assert not (tmp_path / "pool").exists() and not fake.calls


def test_pool_with_nan_settings_from_an_older_version_is_one_line(tmp_path, fake):
    stored = FarmSettings().to_dict()
    stored["config"]["lr_g"] = float("nan")
    with Manifest(tmp_path / "pool") as man:
        man.set_settings(stored)
    res = runner.invoke(app, ["farm", "-o", str(tmp_path / "pool")])
    assert res.exit_code == 1
    (line,) = error_lines(res.output)
    assert "the pool's stored settings are not usable" in line and "lr_g" in line


# ---------------------------------------------------------------------- 3. non-UTF-8 names
def test_non_utf8_file_name_fails_with_one_line(tmp_path, fake):
    imgs = make_images(tmp_path / "in", 2)
    bad = os.fsencode(tmp_path / "in") + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    with open(bad, "wb") as fh:
        fh.write(imgs[0].read_bytes()[:-1] + b"\x00")
    res = runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(tmp_path / "pool")])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if "caf" in ln]
    assert lines == [f"failed: {tmp_path / 'in'}/caf\\xe9.png: the file name is not valid UTF-8; "
                     "rename the file"]
    assert "2 done, 1 failed" in res.output
    with Manifest(tmp_path / "pool") as man:
        assert sorted(r.name for r in man.rows("done")) == ["p0", "p1"]
    assert len(load_pool(tmp_path / "pool" / POOL_X2)) == 2


# ---------------------------------------------------------------------- 4. own output
def test_farm_never_reads_a_pool_folder_as_input(tmp_path, fake):
    photos = tmp_path / "photos"
    third = make_images(photos, 3)[2]
    (photos / "sub").mkdir()
    third.rename(photos / "sub" / "deep0.png")
    args = ["farm", str(photos), "-r", "-o", str(photos / "pool")]
    for _ in range(2):  # the second run sees photos/pool/kernels/*_kernel.png
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    assert f"skip the pool folder(s) {photos / 'pool'}: a farm never reads" in res.output
    heat = photos / "pool" / "kernels" / "p0_kernel.png"  # given by name: left out too
    res = runner.invoke(app, ["farm", str(heat), "-o", str(photos / "pool")])
    assert "1 file(s) inside kgengine pool folders" in res.output
    # an INPUT that gives nothing is an error, as an empty folder is (exit 0 before 0.9.26)
    assert res.exit_code == 1 and error_lines(res.output) == [
        f"error: {heat}: inside a kgengine pool or output folder, never read as input"]
    other = photos / "old_pool"  # another kgengine pool folder inside the input
    make_images(other / "kernels", 1, prefix="heat")
    (other / MANIFEST_FILE).write_bytes(b"")
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"{photos / 'old_pool'}" in res.output and "0 done, 0 failed, 3 skipped" in res.output
    with Manifest(photos / "pool") as man:
        assert sorted(r.name for r in man.rows()) == ["deep0", "p0", "p1"]
        assert all(r.state == "done" for r in man.rows())
    assert sum(len(c) for c in fake.calls) == 3


# ---------------------------------------------------------------------- 5. Ray unreachable
def test_unreachable_ray_is_one_line_at_once(tmp_path, fake):
    make_images(tmp_path / "in", 1)
    t0 = time.monotonic()
    res = runner.invoke(app, ["farm", str(tmp_path / "in"), "-o", str(tmp_path / "pool"),
                              "--ray", "127.0.0.1:1"])
    assert time.monotonic() - t0 < 30
    assert res.exit_code == 1
    (line,) = error_lines(res.output)
    assert line.startswith("error: cannot connect to Ray at '127.0.0.1:1': ")
    assert not (tmp_path / "pool").exists() and not fake.calls


def test_ray_connect_is_bounded_by_a_timeout(monkeypatch):
    seen = {}

    def silent(address, timeout):
        seen["timeout"] = timeout
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(KGEngineError, match=r"'ray://10\.0\.0\.9:10001': no answer within 10 s"):
        check_reachable("ray://10.0.0.9:10001")
    assert seen["timeout"] == 10.0
    with pytest.raises(KGEngineError, match="expected auto, local, host:port"):
        check_reachable("nowhere")


def test_a_deleted_report_is_written_again(pool, fake):
    pool_dir, _ = pool
    files = _row(pool_dir, "p0").output_paths
    (pool_dir / files["report"]).unlink()
    summary = run_farm([], pool_dir, device="cpu")
    assert summary.done == 1 and summary.skipped == 3
    report = json.loads((pool_dir / files["report"]).read_text())
    assert report["farm"]["job_seed"] == 0
