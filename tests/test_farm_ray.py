"""The farm on Ray: a local 2-CPU Ray instance gives the same pool as a local run, and a
failing task leaves its images pending with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kgengine.config import KernelGANConfig
from kgengine.farm.manifest import Manifest
from kgengine.farm.poolfiles import POOL_X2
from kgengine.farm.runner import run_farm
from kgengine.pool import load_pool

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'kgengine[cluster]')")

DATA = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"
# short float64 runs, as in tests/test_trainer.py (exactness holds over a few iterations)
EXACT = KernelGANConfig(iters=8, lr_decay_every=3, bic_decay_every=2, bic_loss_threshold=10.0)
BOXES = [(0, 0, 100, 96), (100, 100, 210, 200), (180, 0, 320, 120), (0, 190, 124, 320)]


def test_ray_pool_equals_local_pool(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with Image.open(DATA) as im:
        for i, box in enumerate(BOXES):
            im.crop(box).save(folder / f"r{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    common = {"batch": 2, "config": EXACT, "dtype": "float64", "device": "cpu"}
    local = run_farm([folder], tmp_path / "local", threads=1, **common)
    assert (local.done, local.failed) == (4, 1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2)
    try:
        remote = run_farm([folder], tmp_path / "ray", ray_address="local", **common)
        # a task that fails as a whole (here: a device the workers cannot train on) leaves
        # its images pending with the reason, for a rerun
        lost = run_farm([folder / "r0.png"], tmp_path / "lost", ray_address="local",
                        batch=1, config=EXACT, device="meta")
    finally:
        ray.shutdown()
    assert (remote.done, remote.failed, remote.left_pending) == (4, 1, 0)
    a, b = load_pool(tmp_path / "local" / POOL_X2), load_pool(tmp_path / "ray" / POOL_X2)
    assert a.ids == b.ids and a.seeds == b.seeds and a.sources == b.sources
    np.testing.assert_allclose(b.kernels, a.kernels, rtol=0, atol=1e-6 * a.kernels.max())
    with Manifest(tmp_path / "local") as ml, Manifest(tmp_path / "ray") as mr:
        for ra, rb in zip(ml.rows(), mr.rows(), strict=True):
            assert (ra.name, ra.state, ra.reason) == (rb.name, rb.state, rb.reason)
            if ra.state == "done":
                ka = np.load(tmp_path / "local" / ra.output_paths["x2_npy"])
                kb = np.load(tmp_path / "ray" / rb.output_paths["x2_npy"])
                # tolerance as tests/test_trainer.py: a fraction of the kernel's maximum
                np.testing.assert_allclose(kb, ka, rtol=0, atol=1e-6 * np.abs(ka).max())
    assert (lost.done, lost.left_pending) == (0, 1)
    with Manifest(tmp_path / "lost") as m:
        (row,) = m.rows()
    assert row.state == "pending" and row.reason.startswith("Ray task failed")
