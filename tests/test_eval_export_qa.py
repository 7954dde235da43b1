"""QA of ``kgengine synth``, ``eval``, ``export`` and ``info``: defects found and fixed.

1. ``eval``: a stored run whose file parses but holds a damaged kernel (NaN, 1-D, zero sum)
   or another seed was taken as finished: the image was skipped on every rerun (or the whole
   job failed); such a run is now estimated again, like an unreadable one.
2. ``eval``: an HR image under ``gt/`` whose size does not fit its LR image was reported as
   ``ValueError: lr (..) is larger than hr (..)``, naming no file; the message names it.
3. ``synth``: the same seed gave other ``.mat`` bytes on every run (scipy writes the time
   into the header); the header is now fixed.
4. ``synth``: a smaller set written over an earlier one left the earlier set's images past
   ``im_n`` in place, so ``eval`` mixed them in; they are removed (and said so).
5. ``synth``: HR images of 64-127 px a side were taken without a word, though ``eval`` can
   use none of their LR images; each such image is noted on one line.
6. ``export``: ``--dtype`` typos did not name the option; a kernel file with a side over 255
   did not name the file.
7. ``export generator``: complex weights lost their imaginary part with a ComplexWarning
   and were written; they are refused.
8. ``info``: a bad ``NUMBA_*`` variable (``NUMBA_NUM_THREADS=0``) was a traceback;
   ``KGENGINE_OPS_BACKEND`` was not reflected in the op lines (``torch`` still showed
   ``numba``, a misspelt value looked fine) and a misspelt ``KGENGINE_CUDA_GRAPH`` was shown
   as set, though a training stops on both.
"""

from __future__ import annotations

import builtins
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat
from typer.testing import CliRunner

from kgengine.accuracy import EvalSettings, list_dataset, make_div2krk_like, per_image, run_eval
from kgengine.cli import app
from kgengine.commands import info as info_command
from kgengine.errors import KGEngineError
from kgengine.export import build_generator_model, load_generator_weights
from kgengine.hooks import JobHooks
from kgengine.imageio import read_image, to_uint8, write_png

runner = CliRunner()


def _hr_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(folder / f"hr{i}.png")
        Image.fromarray(to_uint8(rng.random((h, w, 3)))).save(paths[-1])
    return paths


@pytest.fixture()
def dataset(tmp_path) -> Path:
    """A two-image DIV2KRK-layout set of small random HR images."""
    out = tmp_path / "ds"
    make_div2krk_like(_hr_images(tmp_path / "hr", [(72, 76), (68, 72)]), out, seed=0)
    return out


class TrueKernel:
    """A one-image estimator answering the true x2 kernel; records (image, seed)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, path, *, x4, iters, seed, device, config):
        p = Path(path)
        self.calls.append((p.stem, seed))
        k = loadmat(p.parents[1] / "gt_k_x2" / f"kernel_{p.stem.split('_')[1]}.mat")["Kernel"]
        return SimpleNamespace(kernel_x2=k, kernel_x4=None, report={"ms_per_iter": 1.0})


SETTINGS = EvalSettings(seeds=(0,), iters=3)


# ------------------------------------------------------------------------------ eval
@pytest.mark.parametrize("damage", [
    {"kernel": [1.0, 2.0]},
    {"kernel": [[float("nan")] * 3] * 3},
    {"kernel": [[0.0, 0.0], [0.0, 0.0]]},
    {"seed": 7},
])
def test_a_damaged_stored_run_is_estimated_again(dataset, tmp_path, damage) -> None:
    out = tmp_path / "o"
    run_eval(dataset, out, SETTINGS, estimator=per_image(TrueKernel()))
    path = out / "runs" / "im_1_seed0.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **damage}))
    again = TrueKernel()
    res = run_eval(dataset, out, SETTINGS, estimator=per_image(again))
    assert again.calls == [("im_1", 0)]
    assert res["errors"] == [] and {r["image"] for r in res["rows"]} == {"im_1", "im_2"}
    assert json.loads(path.read_text())["seed"] == 0


def test_an_hr_image_that_does_not_fit_its_lr_image_is_named(dataset, tmp_path) -> None:
    hr = dataset / "gt" / "im_1.png"
    write_png(hr, read_image(hr)[:40, :40])
    res = run_eval(dataset, tmp_path / "o", SETTINGS, estimator=per_image(TrueKernel()))
    assert [e["image"] for e in res["errors"]] == ["im_1"]
    assert res["errors"][0]["error"].startswith(f"{hr}: does not fit ")


# ------------------------------------------------------------------------------ synth
def test_the_same_seed_gives_the_same_bytes_at_any_time(tmp_path, monkeypatch) -> None:
    paths = _hr_images(tmp_path / "hr", [(64, 64)])
    clock = iter(f"Mon Jan  1 00:00:{s:02d} 2024" for s in range(60))
    monkeypatch.setattr(time, "asctime", lambda *a: next(clock))  # scipy's header clock
    make_div2krk_like(paths, tmp_path / "a", seed=3)
    make_div2krk_like(paths, tmp_path / "b", seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*")
                   if not p.name.startswith("."))  # synth's lock file (0.9.29)
    assert len(files) == 6
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_a_smaller_set_over_a_larger_one_leaves_no_old_image(tmp_path) -> None:
    paths = _hr_images(tmp_path / "hr", [(64, 64), (68, 64), (64, 72)])
    out = tmp_path / "set"
    make_div2krk_like(paths, out, seed=0)
    logged: list[str] = []
    make_div2krk_like(paths, out, seed=1, n=1, hooks=JobHooks(log=logged.append))
    assert [im.name for im in list_dataset(out, 2)] == ["im_1"]
    assert [im.name for im in list_dataset(out, 4)] == ["im_1"]
    assert sorted(p.name for p in (out / "gt_k_x2").iterdir()) == ["kernel_1.mat"]
    assert any("removed 10 files of images past im_1" in line for line in logged)


def test_an_hr_image_too_small_for_eval_is_noted(tmp_path) -> None:
    paths = _hr_images(tmp_path / "hr", [(64, 64), (128, 132), (256, 260)])
    logged: list[str] = []
    make_div2krk_like(paths, tmp_path / "set", seed=0, hooks=JobHooks(log=logged.append))
    assert len(logged) == 2
    assert logged[0].startswith("note: im_1 (hr0.png): its LR image at x2, x4 is under 64 px")
    assert logged[1].startswith("note: im_2 (hr1.png): its LR image at x4 is under 64 px")


# ------------------------------------------------------------------------------ export
def test_export_names_the_dtype_option_and_the_kernel_file(tmp_path) -> None:
    out = tmp_path / "m.onnx"
    res = runner.invoke(app, ["export", "pool", "-o", str(out), "--dtype", "fp61"])
    assert res.exit_code == 1
    assert res.output.strip() == "error: --dtype must be one of fp32, fp16, got 'fp61'"
    big = tmp_path / "big.npy"
    np.save(big, np.ones((301, 301)))
    res = runner.invoke(app, ["export", "fixed", "--kernel", str(big), "-o", str(out)])
    assert res.exit_code == 1
    assert res.output.strip() == (f"error: {big}: kernel side must be an integer in [1, 255], "
                                  "got 301")
    assert not out.exists()


def test_complex_generator_weights_are_refused(tmp_path) -> None:
    weights = [np.full((1, 1, 3, 3), 1 / 9) * (1 + 1j)]
    np.savez(tmp_path / "g.npz", w0=weights[0])
    with pytest.raises(KGEngineError, match=r"g\.npz: w0 holds complex128 values"):
        load_generator_weights(tmp_path / "g.npz")
    with pytest.raises(KGEngineError, match="w0 holds complex128 values"):
        build_generator_model(weights)
    res = runner.invoke(app, ["export", "generator", str(tmp_path / "g.npz"),
                              "-o", str(tmp_path / "g.onnx")])
    assert res.exit_code == 1 and "expected real numbers" in res.output
    assert not (tmp_path / "g.onnx").exists()


# ------------------------------------------------------------------------------ info
def test_info_reports_numba_that_fails_to_import(monkeypatch) -> None:
    real_import = builtins.__import__

    def importer(name, *args, **kwargs):
        if name == "numba":  # what NUMBA_NUM_THREADS=0 makes `import numba` raise
            raise ValueError("Number of threads specified must be > 0.")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importer)
    assert info_command._numba() == {
        "available": "no (ValueError: Number of threads specified must be > 0.)"}


def test_info_shows_what_the_environment_variables_make_of_a_training(monkeypatch) -> None:
    monkeypatch.setenv("KGENGINE_OPS_BACKEND", "torch")
    ops = info_command._ops()
    assert ops["downscale (cpu)"] == "torch (set by KGENGINE_OPS_BACKEND)"
    assert ops["sample_patches (cuda)"] == "torch (set by KGENGINE_OPS_BACKEND)"
    monkeypatch.setenv("KGENGINE_OPS_BACKEND", "bogus")
    monkeypatch.setenv("KGENGINE_CUDA_GRAPH", "yes")
    ops = info_command._ops()
    assert ops["downscale (cpu)"] == "none: KGENGINE_OPS_BACKEND is invalid"
    assert ops["KGENGINE_OPS_BACKEND"].startswith("bogus (invalid: a training stops with")
    assert ops["cuda graph of the step"].startswith(
        "invalid: a training stops with KGENGINE_CUDA_GRAPH: expected 0, 1 or eager")


# ------------------------------------- found by this review outside its files, fixed there
@pytest.mark.parametrize("var, value", [("KGENGINE_OPS_BACKEND", "bogus"),
                                        ("KGENGINE_CUDA_GRAPH", "yes")])
def test_a_misspelt_environment_variable_stops_estimate_with_one_line(tmp_path, monkeypatch,
                                                                      var, value) -> None:
    img = tmp_path / "lr.png"
    write_png(img, np.random.default_rng(0).random((72, 72, 3)))
    monkeypatch.setenv(var, value)
    res = runner.invoke(app, ["estimate", str(img), "-o", str(tmp_path / "out"),
                              "--iters", "2"])
    assert res.exit_code == 1
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert errors == [next(line for line in errors if f"{var}: expected" in line)]
    assert f"got '{value}'" in errors[0] and "Traceback" not in res.output


@pytest.mark.parametrize("name", ["missing.npy", "missing.mat", "folder.npy"])
def test_export_names_a_kernel_file_that_is_not_there(tmp_path, name) -> None:
    (tmp_path / "folder.npy").mkdir()
    res = runner.invoke(app, ["export", "fixed", "--kernel", str(tmp_path / name),
                              "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 1
    why = "a folder" if name.startswith("folder") else "no such file"
    assert f"{name}: {why}" in res.output.replace("\n", "")
    assert not (tmp_path / "m.onnx").exists()
