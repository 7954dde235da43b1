"""Options and settings (0.9.28's review): every assertion failed before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_reliability import error_lines
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import make_pool, save_pool

SAMPLE = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_lr.png"


def _run(*args: object, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def _refused(res, *parts: str) -> str:
    """Exit 1 with one ``error:`` line holding every part; returns that line."""
    assert res.exit_code == 1, res.output
    lines = error_lines(res.output)
    assert len(lines) == 1 and all(p in lines[0] for p in parts), res.output
    return lines[0]


@pytest.mark.parametrize("command", ["estimate", "farm", "degrade"])
def test_a_huge_thread_count_is_refused(tmp_path, command) -> None:
    """``estimate --threads 100000`` segfaulted; ``degrade --threads 3000`` hung."""
    hr = tmp_path / "in"
    hr.mkdir()
    (hr / "a.png").write_bytes(SAMPLE.read_bytes())
    extra = ["-k", SAMPLE] if command == "degrade" else []
    _refused(_run(command, hr, "-o", tmp_path / "o", "--threads", 100000, *extra),
             "--threads must be at most")
    assert not (tmp_path / "o").exists()


def test_restarts_have_a_ceiling(tmp_path) -> None:
    _refused(_run("estimate", SAMPLE, "-o", tmp_path / "o", "--restarts", 1000000),
             "--restarts must be at most 64")
    assert not (tmp_path / "o").exists()


def _pool(tmp_path: Path) -> Path:
    k = anisotropic_gaussian(13, 2.0, 1.0, 0.3)
    return save_pool(tmp_path / "p.npz", make_pool([k], ["a"], ["a.png"], 2,
                                                   confidences=[0.7]))


def test_a_failed_command_makes_no_output_folder(tmp_path) -> None:
    """Each of these failed on one line but left an empty ``-o`` folder (or the ``-o``
    file's new parent folder)."""
    pool = _pool(tmp_path)
    missing = tmp_path / "missing"
    cases = [
        (("eval", missing, "-o", tmp_path / "o1"), "o1"),
        (("pool", "export", missing, "-o", tmp_path / "o2", "--format", "npy"), "o2"),
        (("pool", "export", pool, "-o", tmp_path / "o3", "--format", "npy",
          "--min-confidence", 2), "o3"),
        (("pool", "filter", pool, "-o", tmp_path / "o4" / "f.npz", "--top", 1.5), "o4"),
        (("pool", "filter", pool, "-o", tmp_path / "o5" / "f.npz"), "o5"),
        (("pool", "plot", missing, "-o", tmp_path / "o6" / "m.png"), "o6"),
        (("pool", "import", missing, "-o", tmp_path / "o7" / "p.npz"), "o7"),
        (("export", "fixed", "--kernel", missing, "-o", tmp_path / "o8" / "d.onnx"), "o8"),
        (("export", "generator", missing, "-o", tmp_path / "o9" / "g.onnx"), "o9"),
        (("estimate", missing / "a.png", "-o", tmp_path / "o10"), "o10"),
    ]
    for args, folder in cases:
        res = _run(*args)
        assert res.exit_code == 1 and error_lines(res.output), (args, res.output)
        assert not (tmp_path / folder).exists(), (args, res.output)


def test_synth_checks_the_environment_before_writing(tmp_path) -> None:
    hr = tmp_path / "hr"
    hr.mkdir()
    (hr / "a.png").write_bytes(SAMPLE.read_bytes())
    _refused(_run("synth", hr, "-o", tmp_path / "ds", env={"KGENGINE_OPS_BACKEND": "bogus"}),
             "KGENGINE_OPS_BACKEND")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("value", ["pytorch", "numba"])
def test_a_misspelt_networks_variable_is_refused(tmp_path, value) -> None:
    """``KGENGINE_NETWORKS=pytorch`` was ignored and the compiled networks ran."""
    _refused(_run("estimate", SAMPLE, "-o", tmp_path / "o", env={"KGENGINE_NETWORKS": value}),
             "KGENGINE_NETWORKS", value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key", ["iters", "restart_iters"])
@pytest.mark.parametrize("command", ["estimate", "farm"])
def test_iters_and_set_iters_must_agree(tmp_path, command, key) -> None:
    """``--iters 2 --set iters=3``: estimate trained 3 and the farm 2 (``restart_iters``
    likewise, which ``--iters`` sets too); equal values are taken."""
    _refused(_run(command, SAMPLE, "-o", tmp_path / "o", "--iters", 2, "--set", f"{key}=3"),
             f"--iters 2 and --set {key}=3 disagree")
    from kgengine.farm.settings import resolve_settings

    assert resolve_settings(None, iters=2, overrides={key: "2"}).config.iters == 2


@pytest.mark.parametrize(("setting", "bound"), [("g_channels=100000", "[1, 1024]"),
                                                ("d_layers=100000000", "[3, 64]"),
                                                ("grad_window=1000000000", "[1, 255]")])
def test_structural_settings_have_a_ceiling(tmp_path, setting, bound) -> None:
    """These hung or raised torch's allocator error as a traceback."""
    _refused(_run("estimate", SAMPLE, "-o", tmp_path / "o", "--set", setting), bound)


def test_an_unknown_setting_names_the_nearest(tmp_path) -> None:
    _refused(_run("estimate", SAMPLE, "-o", tmp_path / "o", "--set", "lr_G=1e-4"),
             "unknown config key 'lr_G'", "did you mean lr_g")


def test_export_fixed_reads_the_scale_of_a_result_file(tmp_path) -> None:
    """An ``_x4`` kernel exported with the default ``--scale 2`` made an x2 degrader."""
    np.save(tmp_path / "a_kernel_x4.npy", anisotropic_gaussian(13, 2.0, 1.0, 0.3))
    _refused(_run("export", "fixed", "--kernel", tmp_path / "a_kernel_x4.npy", "-o",
                  tmp_path / "d.onnx"), "an x4 kernel (its name), not x2", "--scale 4")
    assert not (tmp_path / "d.onnx").exists()


def test_noise_patch_has_a_ceiling(tmp_path) -> None:
    """``--patch 1000000000`` raised NumPy's "array is too big" as a traceback."""
    _refused(_run("noise", "collect", SAMPLE, "-o", tmp_path / "n", "--patch", 1000000000),
             "--patch must be in [2, 1024]")
    assert not (tmp_path / "n").exists()
