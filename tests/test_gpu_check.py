"""bench/gpu_check.sh: without a CUDA device it says so on one line and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script "
                    "would run the GPU benches (run bench/gpu_check.sh by hand)")
def test_gpu_check_without_cuda_is_one_clear_line(tmp_path):
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], capture_output=True,
                         text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device (torch.cuda.is_available() is False): GPU tests and "
        "benches skipped"]
    assert not (tmp_path / "out").exists()
