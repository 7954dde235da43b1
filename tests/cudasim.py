"""Run a test file's ``test_sim_*`` tests under the Numba CUDA simulator, in a subprocess.

Numba reads ``NUMBA_ENABLE_CUDASIM`` at import, and the main pytest process may already have
imported Numba without it, so the simulator tests run in a child pytest with the variable set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IN_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def run_sim_tests(test_file: str) -> None:
    """Run ``test_file``'s ``test_sim_*`` with the simulator; fail unless all of them passed."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    cmd = [sys.executable, "-m", "pytest", test_file, "-q", "-k", "test_sim_",
           "-p", "no:cacheprovider"]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout, res.stdout[-2000:]
