"""Bugs found by the 0.9.27 audit of the README against the commands, one test each: every
assertion here failed before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat
from test_farm import _one_thread  # noqa: F401 (an autouse fixture: torch on 1 thread)
from test_farm_files_changed import farm, photo, rows
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.errors import KGEngineError
from kgengine.farm.seeds import content_hash
from kgengine.kernel import analytic_x4, gaussian_kernel
from kgengine.pool import load_pool


def _result_folder(path: Path, suffix: str = ".mat") -> Path:
    """A KernelGAN-style result folder: ``<name>_kernel_x2`` and ``_x4`` files per image."""
    path.mkdir()
    for i, name in enumerate("ab"):
        k2 = gaussian_kernel(13, 1.0 + 0.2 * i)
        for scale, k in ((2, k2), (4, analytic_x4(k2))):
            target = path / f"{name}_kernel_x{scale}{suffix}"
            if suffix == ".mat":
                savemat(target, {"Kernel": k})
            else:
                np.save(target, k)
    return path


@pytest.mark.parametrize("suffix", [".mat", ".npy"])
def test_a_result_folder_gives_the_kernels_of_one_scale(tmp_path: Path, suffix: str) -> None:
    """x2 and x4 files were padded into one pool and used at either scale."""
    folder = _result_folder(tmp_path / "res", suffix)
    for scale, size in ((None, 13), (2, 13), (4, 37)):
        pool = load_pool(folder, scale)
        assert pool.kernel_size == size and pool.scale == (scale or 2)
        assert pool.ids == [f"{n}_kernel_x{scale or 2}" for n in "ab"]
    only_x4 = tmp_path / "x4"
    only_x4.mkdir()
    for p in folder.glob("*_x4*"):
        shutil.copy(p, only_x4)
    assert load_pool(only_x4).scale == 4  # the one scale its result files have
    assert load_pool(only_x4 / f"a_kernel_x4{suffix}").scale == 4  # and one such file
    with pytest.raises(KGEngineError, match="no .npy or .mat kernel files for x2"):
        load_pool(only_x4, 2)
    result = CliRunner().invoke(app, ["pool", "info", str(folder)])
    assert result.exit_code == 0 and "13x13" in result.output and "37x37" not in result.output


@pytest.mark.parametrize("variable,value", [("KGENGINE_OPS_BACKEND", "numbaa"),
                                            ("KGENGINE_CUDA_GRAPH", "yes")])
def test_a_misspelt_environment_variable_writes_nothing(tmp_path: Path, monkeypatch,
                                                         variable: str, value: str) -> None:
    """The farm recorded its pool settings and a pending row before the first step failed."""
    monkeypatch.setenv(variable, value)
    img = photo(tmp_path / "a.png", "a")
    runner = CliRunner()
    for args in (["farm", str(img), "-o", str(tmp_path / "pool"), "--iters", "8"],
                 ["estimate", str(img), "-o", str(tmp_path / "est"), "--iters", "8"],
                 ["degrade", str(tmp_path), "--kernels", str(tmp_path), "-o",
                  str(tmp_path / "pairs")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, args
        assert f"error: {variable}: expected" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_retried_file_that_became_a_duplicate_is_not_trained(tmp_path: Path) -> None:
    """A failed file replaced by a copy of a listed photo was trained as a second kernel of
    the same content ("byte-identical duplicates are skipped")."""
    photos = tmp_path / "photos"
    photo(photos / "a.png", "a")
    (photos / "zbad.png").write_bytes(b"not an image")
    pool = tmp_path / "pool"
    farm([photos], pool)
    shutil.copy(photos / "a.png", photos / "zbad.png")
    summary, logs = farm([], pool, retry_failed=True)
    assert summary.total["done"] == 1 and summary.failed == 1
    assert logs == [f"failed: {photos / 'zbad.png'}: same content as {photos / 'a.png'} (the "
                    "file changed since it was listed); a duplicate, not trained"]
    assert rows(pool)["zbad.png"].state == "failed"
    assert list(np.load(pool / "kernel_pool.npz")["ids"]) == ["a"]


def test_farm_reports_carry_the_image_hash(tmp_path: Path) -> None:
    """estimate's reports had ``image_sha256``, the farm's only ``farm.sha256``."""
    img = photo(tmp_path / "photos" / "a.png", "a")
    farm([img], tmp_path / "pool")
    report = json.loads((tmp_path / "pool" / "kernels" / "a_report.json").read_text())
    assert report["image_sha256"] == report["farm"]["sha256"] == content_hash(img)


def test_the_environment_module_names_every_op_backend() -> None:
    """:mod:`kgengine.env_settings` parses the variable without importing torch: its list of
    backends must be the op table's."""
    from kgengine.env_settings import OPS_BACKENDS
    from kgengine.ops.backend import BACKENDS

    assert OPS_BACKENDS == BACKENDS


def test_two_photos_that_swapped_contents_are_both_redone(tmp_path: Path) -> None:
    """The duplicate check compared with the hashes recorded before the swap: each photo
    was taken for a copy of the other, both failed and both kernels were removed."""
    import os
    import time

    photos = tmp_path / "photos"
    photo(photos / "a.png", "a")
    photo(photos / "b.png", "b")
    pool = tmp_path / "pool"
    farm([photos], pool)
    os.rename(photos / "a.png", photos / "t.png")
    os.rename(photos / "b.png", photos / "a.png")
    os.rename(photos / "t.png", photos / "b.png")
    for p in photos.iterdir():
        os.utime(p, ns=(time.time_ns(), time.time_ns()))
    summary, logs = farm([photos], pool)
    assert summary.failed == 0 and summary.total["done"] == 2
    assert all("redone, its file changed" in line for line in logs) and len(logs) == 2
    assert {r.state for r in rows(pool).values()} == {"done"}
    # two files changed into one content: the first listed is trained, the other fails
    photo(photos / "a.png", "c")
    photo(photos / "b.png", "c")
    summary, logs = farm([photos], pool)
    assert summary.total["done"] == 1 and summary.failed == 1
    assert logs[-1] == (f"failed: {photos / 'b.png'}: same content as {photos / 'a.png'} (the "
                        "file changed since it was listed); a duplicate, not trained")


def test_an_estimate_output_folder_is_a_pool(tmp_path: Path) -> None:
    """``kgengine estimate -o out`` writes each kernel as ``.npy`` and ``.mat``: the folder
    was refused as a pool ("several kernel files named ...")."""
    folder = _result_folder(tmp_path / "out", ".npy")
    for p in folder.glob("*.npy"):
        savemat(p.with_suffix(".mat"), {"Kernel": np.load(p)})
    pool = load_pool(folder, 4)
    assert pool.ids == ["a_kernel_x4", "b_kernel_x4"]
    assert all(s.endswith(".npy") for s in pool.sources)
