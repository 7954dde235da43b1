"""Reproducibility records (0.9.28's review): every assertion failed before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kgengine.api import estimate_kernel


@pytest.mark.parametrize("env", [None, "KGENGINE_NETWORKS", "KGENGINE_OPS_BACKEND"])
def test_the_report_names_the_backends_that_trained_it(monkeypatch, env) -> None:
    """Another backend trains other bytes; the reports of the three were identical."""
    pytest.importorskip("numba")
    if env:
        monkeypatch.setenv(env, "torch")
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    got = estimate_kernel(img, iters=2).report["backends"]
    assert got["networks"] == ("numba" if env is None else "torch")
    ops = "torch" if env == "KGENGINE_OPS_BACKEND" else "numba"
    assert got["downscale"] == ops and got["sample_patches"] == ops
    import numba

    assert got["numba"] == numba.__version__ and got["llvmlite"]


def test_numba_gets_a_private_cache_folder_where_it_has_none(monkeypatch, tmp_path) -> None:
    """A read-only install run by a user without a writable home: every ``@njit(cache=True)``
    raised ``RuntimeError: cannot cache function ...: no locator available`` at import."""
    import os
    import stat
    import tempfile

    import numba

    from kgengine import numba_util

    def no_locator(fn):  # noqa: ANN001, ANN202 - Numba's failure where nothing is writable
        raise RuntimeError(f"cannot cache function {fn.__name__!r}: no locator available")

    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert numba_util.ensure_cache_location() is None  # this machine has a location
    with pytest.warns(RuntimeWarning, match="set NUMBA_CACHE_DIR"):
        folder = numba_util.ensure_cache_location(no_locator)
    assert folder == str(tmp_path / f"kgengine-numba-{os.getuid()}")
    assert numba.config.CACHE_DIR == folder
    assert stat.S_IMODE(os.stat(folder).st_mode) & 0o077 == 0
    # a folder of that name that others may write is not used: a fresh private one is
    os.chmod(folder, 0o777)
    with pytest.warns(RuntimeWarning):
        other = numba_util.ensure_cache_location(no_locator)
    assert other != folder and Path(other).parent == tmp_path


@pytest.mark.parametrize("x4", ["no", "false", 0, None])
def test_x4_must_be_a_bool(x4) -> None:
    """``estimate_kernel(x4="no")`` derived an x4 kernel."""
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="x4: expected True or False"):
        estimate_kernel(img, iters=2, x4=x4)
