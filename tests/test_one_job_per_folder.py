"""One ``estimate`` or ``eval`` at a time per output folder, temporary files of a killed run
removed, and SIGTERM handled like Ctrl-C (0.9.26). Before, two ``estimate`` jobs into one
folder interleaved their files (a report next to the other job's kernel, kept on resume),
two ``eval`` jobs mixed their runs, and SIGTERM left ``.tmp`` files that stayed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kgengine.accuracy import EvalSettings, make_div2krk_like, run_eval
from kgengine.accuracy.job import LOCK_FILE as EVAL_LOCK
from kgengine.atomic import exclusive_lock, remove_stale_tmp
from kgengine.cli import app
from kgengine.commands.estimate import LOCK_FILE as ESTIMATE_LOCK
from kgengine.errors import KGEngineError

SAMPLE = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_lr.png"
QUICK = ["--iters", "30", "--device", "cpu", "--threads", "1"]


def test_a_second_estimate_into_a_busy_folder_is_one_line(tmp_path):
    out = tmp_path / "out"
    with exclusive_lock(out, ESTIMATE_LOCK, "held by the test"):
        res = CliRunner().invoke(app, ["estimate", str(SAMPLE), "-o", str(out), *QUICK])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        f"error: {out}: another kgengine estimate is writing into this folder"]
    assert sorted(p.name for p in out.iterdir()) == [ESTIMATE_LOCK]  # nothing written
    res = CliRunner().invoke(app, ["estimate", str(SAMPLE), "-o", str(out), *QUICK])
    assert res.exit_code == 0, res.output  # the lock goes with its holder


def test_estimate_removes_the_temporary_files_of_a_killed_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".sample_lr_kernel_x2.npy.k3_x9q2a.tmp"  # as atomic_write names them
    stale.write_bytes(b"half")
    mine = [out / ".notes.tmp", out / "sample_lr.k3_x9q2a.tmp", out / ".a.b.tmp"]
    for p in mine:
        p.write_text("the user's")
    res = CliRunner().invoke(app, ["estimate", str(SAMPLE), "-o", str(out), *QUICK])
    assert res.exit_code == 0, res.output
    assert f"{out}: removed 1 temporary file(s) of an interrupted run" in res.output
    assert not stale.exists() and all(p.read_text() == "the user's" for p in mine)
    assert remove_stale_tmp(tmp_path / "nowhere") == []


def test_a_second_eval_into_a_busy_folder_is_refused(tmp_path, sample_hr):
    from PIL import Image

    from kgengine.imageio import to_uint8

    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(to_uint8(sample_hr[:160, :160])).save(hr / "a.png")
    data = tmp_path / "data"
    make_div2krk_like([hr / "a.png"], data, seed=0)
    out = tmp_path / "eval"
    (out / "runs").mkdir(parents=True)
    stale = out / "runs" / ".im_1_seed0.json.ab12cd34.tmp"
    stale.write_text("{")
    settings = EvalSettings(seeds=[0], iters=30, device="cpu")
    with exclusive_lock(out, EVAL_LOCK, "held by the test"), pytest.raises(
            KGEngineError, match="another kgengine eval is writing into this folder"):
        run_eval(data, out, settings)
    assert stale.exists()  # the refused job touched nothing
    results = run_eval(data, out, settings)
    assert not stale.exists() and results["n_images"] == 1
    assert np.isfinite(results["rows"][0]["kernel_psnr"])


def test_sigterm_stops_a_command_like_ctrl_c(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgengine", "estimate", str(SAMPLE), "-o", str(out),
         "--iters", "20000", "--device", "cpu", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out / ESTIMATE_LOCK).exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # the imports are done and the job has started
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert [p.name for p in out.iterdir()] == [ESTIMATE_LOCK]
