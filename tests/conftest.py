"""Shared fixtures: seeded RNG restore, the bundled sample, a known anisotropic kernel, a
folder holding one kernel file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / "kgengine" / "data"


@pytest.fixture(autouse=True)
def _restore_rng():
    state = torch.get_rng_state()
    np_state = np.random.get_state()
    yield
    torch.set_rng_state(state)
    np.random.set_state(np_state)


@pytest.fixture(scope="session")
def sample_hr() -> np.ndarray:
    """The bundled 320x320 HR crop (Urban100 urban_010), float32 RGB in [0, 1]."""
    from kgengine.imageio import read_image

    return read_image(DATA / "sample_hr.png")


@pytest.fixture(scope="session")
def aniso_kernel() -> np.ndarray:
    """A clearly anisotropic 13x13 Gaussian (variances 4.0 and 0.8, angle 0.6 rad)."""
    from kgengine.kernel import anisotropic_gaussian

    return anisotropic_gaussian(13, 4.0, 0.8, 0.6)


@pytest.fixture()
def kernel_dir(tmp_path) -> Path:
    """A folder holding one kernel file, ``g.npy`` (a 13x13 anisotropic Gaussian)."""
    from kgengine.kernel import anisotropic_gaussian

    folder = tmp_path / "kernels"
    folder.mkdir()
    np.save(folder / "g.npy", anisotropic_gaussian(13, 1.0, 2.0, 0.5))
    return folder


@pytest.fixture()
def fake_farm_trainer(monkeypatch):
    """The farm's trainer replaced by ``test_reliability.FakeTrainer`` (a Gaussian per image
    from its seed); returns it (its ``calls`` list the names of each batch)."""
    from test_reliability import FakeTrainer

    from kgengine.farm import training

    fake = FakeTrainer()
    monkeypatch.setattr(training, "estimate_kernels", fake)
    return fake
