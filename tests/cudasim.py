"""Run a test file's ``test_sim_*`` tests under the Numba CUDA simulator, in a subprocess.

Numba reads ``NUMBA_ENABLE_CUDASIM`` at import, and the main pytest process may already have
imported Numba without it, so the simulator tests run in a child pytest with the variable set.
Also the GPU facts the op tests skip on: :data:`HAS_CUDA`, :data:`HAS_CUPY`, :data:`sim_only`,
:func:`skip_unless_gpu_backend`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
IN_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
HAS_CUDA = torch.cuda.is_available()
try:
    import cupy  # noqa: F401

    HAS_CUPY = True
except ImportError:
    HAS_CUPY = False

#: Marks a ``test_sim_*`` test: it runs only in the simulator process of :func:`run_sim_tests`.
sim_only = pytest.mark.skipif(
    not IN_SIM, reason="runs inside test_numba_cuda_simulator's NUMBA_ENABLE_CUDASIM=1 process"
)


def run_sim_tests(test_file: str) -> None:
    """Run ``test_file``'s ``test_sim_*`` with the simulator; fail unless all of them passed."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    cmd = [sys.executable, "-m", "pytest", test_file, "-q", "-k", "test_sim_",
           "-p", "no:cacheprovider"]
    res = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout, res.stdout[-2000:]


def skip_unless_gpu_backend(name: str) -> None:
    """Skip the calling test unless GPU backend ``name`` can run: a CUDA device, and CuPy
    for ``"cupy"``."""
    if not HAS_CUDA:
        pytest.skip("no CUDA device")
    if name == "cupy" and not HAS_CUPY:
        pytest.skip("cupy not installed")
    from kgengine.ops.backend import availability

    ok, why = availability(name)
    if not ok:
        pytest.skip(f"{name} cannot run here: {why}")
