"""``restarts=K``: K seeds of an image in one batch, combined; equal to K single runs combined."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgengine.api import estimate_kernels, restart_seed
from kgengine.consensus import combine
from kgengine.imageio import read_image


@pytest.fixture(scope="module")
def lr() -> np.ndarray:
    from importlib.resources import files

    return read_image(files("kgengine") / "data" / "sample_lr.png")[:96, :96]


def test_restart_seeds_are_distinct_and_start_with_the_seed():
    seeds = [restart_seed(7, r) for r in range(6)]
    assert seeds[0] == 7 and len(set(seeds)) == 6 and all(0 <= s < 2**56 for s in seeds)
    assert restart_seed(7, 3) == restart_seed(7, 3) != restart_seed(8, 3)


def test_restarts_equal_single_runs_combined(lr):
    # float64 and 8 iterations: batched and single runs then agree to rounding (training
    # amplifies last-bit differences ~5x per iteration, tests/test_trainer.py), and the
    # combination of the batched restarts must equal that of the single runs
    kw = {"iters": 8, "dtype": torch.float64, "device": "cpu"}
    (res,) = estimate_kernels([lr], seeds=[5], restarts=3, x4=True, **kw)
    singles = [estimate_kernels([lr], seeds=[restart_seed(5, r)], **kw)[0] for r in range(3)]
    expected = combine([s.kernel_x2 for s in singles])
    np.testing.assert_allclose(res.kernel_x2, expected.kernel, atol=1e-9)
    assert res.confidence == pytest.approx(expected.confidence, abs=1e-9)
    assert res.report["restarts"]["seeds"] == [restart_seed(5, r) for r in range(3)]
    assert res.report["confidence"] == res.confidence and res.kernel_x4.shape == (37, 37)
    single = estimate_kernels([lr], seeds=[5], **kw)[0]
    assert single.confidence is None and single.report["confidence"] is None


def test_restarts_must_be_positive(lr):
    with pytest.raises(ValueError, match="restarts"):
        estimate_kernels([lr], restarts=0, iters=1)
