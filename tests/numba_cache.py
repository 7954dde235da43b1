"""Run a script twice against one empty Numba disk cache: a fresh compile, then the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch


def cold_then_warm(script: str, tmp_path: Path) -> tuple[list, list]:
    """Run ``script`` (it saves a list of tensors to ``sys.argv[1]`` with ``torch.save``) in
    two fresh processes with ``NUMBA_CACHE_DIR`` in ``tmp_path``: the first compiles into the
    empty cache, the second loads from it. Returns the two saved lists."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    path = tmp_path / "run.py"
    path.write_text(script)
    for name in ("cold.pt", "warm.pt"):
        subprocess.run([sys.executable, str(path), str(tmp_path / name)], env=env, check=True,
                       timeout=600)
    return torch.load(tmp_path / "cold.pt"), torch.load(tmp_path / "warm.pt")
