"""Where the commands print (0.9.26): results on stdout; progress bars and per-file lines on
stderr, also with ``COLUMNS=0``. Before, ``estimate``, ``farm``, ``eval`` and ``synth`` drew
their bars and their ``failed:`` lines on stdout (into ``> results.txt``), and with
``COLUMNS=0`` Rich printed those lines as nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_lr.png"


def kgengine(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "0"}
    return subprocess.run([sys.executable, "-m", "kgengine", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_progress_and_file_lines_go_to_stderr(tmp_path):
    bad = tmp_path / "in" / "bad.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    (tmp_path / "in" / "good.png").write_bytes(SAMPLE.read_bytes())
    quick = ["--iters", "8", "--device", "cpu", "--threads", "1"]
    res = kgengine("estimate", tmp_path / "in", "-o", tmp_path / "out", *quick)
    assert res.returncode == 1
    assert res.stdout == ""
    assert f"{tmp_path / 'in' / 'good.png'}: done in " in res.stderr
    assert f"error: {bad}: not an image file" in res.stderr
    res = kgengine("farm", tmp_path / "in", "-o", tmp_path / "pool", *quick)
    assert res.returncode == 1
    assert f"failed: {bad}: not an image file" in res.stderr
    assert "1 done, 1 failed" in res.stdout
    assert "━" not in res.stdout and "failed:" not in res.stdout
