"""``kgengine degrade``: bad options are one ``error:`` line, exit 1, and leave OUT unmade.

Covers the provider check before OUT is created, folders without pairs not pinning their
settings, negative range bounds, the accepted scales (2 or 4), size errors naming the file's
own size, ``-o`` on a file, and ``--seed``/``--threads``/``--batch`` bounds (as estimate/farm).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.degradation import MANIFEST, SETTINGS, PipelineConfig, degrade_folder
from kgengine.degradation import job as job_module
from kgengine.degradation.folder import LOCK_FILE
from kgengine.degradation.plan import make_plan
from kgengine.errors import KGEngineError
from kgengine.imageio import to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import make_pool, save_pool
from kgengine.providers import cuda_device_count

SIZES = {"a.png": (48, 40), "b.png": (50, 52)}
MAX_SEED = 2**63 - 1


def _image(path: Path, h: int, w: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(to_uint8(rng.random((h, w, 3)))).save(path)


@pytest.fixture()
def hr_dir(tmp_path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        _image(folder / name, h, w, i)
    return folder


def _pool_file(tmp_path: Path, scale: int) -> Path:
    pool = make_pool([anisotropic_gaussian(13, 1.0, 2.0, 0.5)], ["k0"], ["p0.png"], scale,
                     seeds=[0])
    return save_pool(tmp_path / f"pool_x{scale}", pool)


def _run(*args: object):
    return CliRunner().invoke(app, ["degrade", *map(str, args)])


def _refused(res, message: str, *, options: bool = True) -> None:
    """Exit 1 with one ``error: ...message...`` line; for bad ``options`` it is the only
    output (no progress bar: they are checked before it starts)."""
    assert res.exit_code == 1, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], res.stderr
    if options:
        assert lines == errors and "degrading" not in res.output, res.output


# --- 1. the provider is checked before OUT is created ---

PROVIDER_CASES = [("bogus", "unknown provider 'bogus'; choose one of auto, tensorrt, cuda, cpu")]
if cuda_device_count()[0] == 0:
    PROVIDER_CASES += [("cuda", "provider 'cuda' cannot run here: cuda: "),
                       ("tensorrt", "provider 'tensorrt' cannot run here: tensorrt: ")]


@pytest.mark.parametrize(("provider", "message"), PROVIDER_CASES)
def test_bad_provider_writes_nothing(hr_dir, kernel_dir, tmp_path, provider, message) -> None:
    out = tmp_path / "out"
    _refused(_run(hr_dir, "-k", kernel_dir, "-o", out, "--provider", provider), message)
    assert not out.exists()
    with pytest.raises(KGEngineError, match="provider"):
        degrade_folder(hr_dir, kernel_dir, out, provider=provider)
    assert not out.exists()
    res = _run(hr_dir, "-k", kernel_dir, "-o", out, "--provider", "cpu", "--seed", "1")
    assert res.exit_code == 0, res.output  # nothing pins the settings of the refused run
    assert json.loads((out / SETTINGS).read_text())["seed"] == 1


def test_a_named_provider_is_unused_with_a_pipeline(hr_dir, kernel_dir, tmp_path) -> None:
    res = _run(hr_dir, "-k", kernel_dir, "-o", tmp_path / "o", "--jpeg", "60-90",
               "--provider", "bogus")
    _refused(res, "unknown provider 'bogus'")  # the name is still checked
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("exists", [False, True])
def test_a_session_that_fails_leaves_no_settings(hr_dir, kernel_dir, tmp_path, monkeypatch,
                                                 exists: bool) -> None:
    def no_session(*args, **kwargs):
        raise KGEngineError("provider 'cuda' cannot run here: cuda: did not load")

    monkeypatch.setattr(job_module, "open_session", no_session)
    out = tmp_path / "new" / "out"
    if exists:
        out.mkdir(parents=True)
    with pytest.raises(KGEngineError, match="cannot run here"):
        degrade_folder(hr_dir, kernel_dir, out, provider="cuda")
    if exists:  # the user's folder stays, without settings or manifest
        assert not (out / SETTINGS).exists() and not (out / MANIFEST).exists()
    else:  # the folders this run created are gone again
        assert not (tmp_path / "new").exists()


def test_a_folder_without_pairs_does_not_pin_its_settings(hr_dir, kernel_dir,
                                                           tmp_path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    _image(tiny / "a.png", 8, 8)  # too small for the 13x13 kernel: every file fails
    out = tmp_path / "out"
    res = _run(tiny, "-k", kernel_dir, "-o", out, "--provider", "cpu", "--seed", "0")
    assert res.exit_code == 1 and "0 pairs written" in res.output
    assert (out / SETTINGS).is_file() and (out / MANIFEST).read_text() == ""
    res = _run(hr_dir, "-k", kernel_dir, "-o", out, "--provider", "cpu", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert json.loads((out / SETTINGS).read_text())["seed"] == 1
    res = _run(hr_dir, "-k", kernel_dir, "-o", out, "--provider", "cpu", "--seed", "2")
    _refused(res, "holds pairs made with seed=1, not 2", options=False)  # pairs pin them


def test_lr_files_without_a_manifest_still_pin_the_settings(hr_dir, kernel_dir,
                                                             tmp_path) -> None:
    out = tmp_path / "out"
    assert degrade_folder(hr_dir, kernel_dir, out, provider="cpu").written == 2
    (out / MANIFEST).unlink()
    with pytest.raises(KGEngineError, match="holds pairs made with seed=0, not 3"):
        degrade_folder(hr_dir, kernel_dir, out, provider="cpu", seed=3)


# --- 2. negative range bounds ---

@pytest.mark.parametrize(("args", "message"), [
    (("--noise-range", "-1-2"), "gaussian_sigma must be a range lo-hi with 0 <= lo <= hi, "
                                "got (-1.0, 2.0)"),
    (("--noise-range", "-0.01"), "gaussian_sigma must be a range"),
    (("--noise-range", "0.1--0.2"), "got (0.1, -0.2)"),
    (("--noise-range", "0.5-0.1"), "got (0.5, 0.1)"),
    (("--noise-range", "0.1-"), "gaussian_sigma expects a range lo-hi of float"),
    (("--jpeg", "-5-95"), "jpeg_quality must be a range lo-hi with 0 <= lo <= hi, got (-5, 95)"),
    (("--set", "second_resize=-0.5-1"), "second_resize must be a range"),
    (("--set", "poisson_peak=-30,1000"), "poisson_peak must be a range"),
])
def test_negative_range_bounds_are_refused(hr_dir, kernel_dir, tmp_path, args,
                                           message) -> None:
    out = tmp_path / "out"
    _refused(_run(hr_dir, "-k", kernel_dir, "-o", out, *args), message)
    assert not out.exists()


def test_ranges_still_parse() -> None:
    cfg = PipelineConfig()
    assert cfg.replace(gaussian_sigma="0-0.04").gaussian_sigma == (0.0, 0.04)
    assert cfg.replace(gaussian_sigma="1e-3-2e-2").gaussian_sigma == (0.001, 0.02)
    assert cfg.replace(gaussian_sigma=" 0.01 - 0.03 ").gaussian_sigma == (0.01, 0.03)
    assert cfg.replace(gaussian_sigma="0.02").gaussian_sigma == (0.02, 0.02)
    assert cfg.replace(jpeg_quality="30,95").jpeg_quality == (30, 95)
    assert cfg.replace(poisson_peak=[30, 1000]).poisson_peak == (30.0, 1000.0)


# --- 3. scales: 2 or 4 ---

@pytest.mark.parametrize("scale", [0, 1, 3, 5, -2])
def test_only_scales_2_and_4(hr_dir, kernel_dir, tmp_path, scale: int) -> None:
    out = tmp_path / "out"
    _refused(_run(hr_dir, "-k", kernel_dir, "-o", out, "--scale", scale),
             f"--scale must be 2 or 4, got {scale}")
    assert not out.exists()
    with pytest.raises(KGEngineError, match=f"scale must be 2 or 4, got {scale}"):
        degrade_folder(hr_dir, kernel_dir, out, scale=scale)
    assert not out.exists()


def test_a_pool_made_for_x3_is_refused(hr_dir, tmp_path) -> None:
    pool = _pool_file(tmp_path, 3)
    out = tmp_path / "out"
    _refused(_run(hr_dir, "-k", pool, "-o", out),
             f"{pool}: holds x3 kernels; degrade makes x2 or x4 pairs only", options=False)
    assert not out.exists()


def test_scales_2_and_4_are_planned(kernel_dir, tmp_path) -> None:
    assert make_plan(kernel_dir, None, 0.0, 0, 8).scale == 2
    assert make_plan(kernel_dir, 4, 0.0, 0, 8).scale == 4
    assert make_plan(_pool_file(tmp_path, 4), None, 0.0, 0, 8).scale == 4


def test_help_says_2_or_4() -> None:
    res = CliRunner().invoke(app, ["degrade", "--help"])
    assert res.exit_code == 0 and "2 or 4" in res.output


# --- 4. size errors name the file's own size ---

@pytest.mark.parametrize("pipeline", [False, True])
def test_size_errors_give_the_file_size(kernel_dir, tmp_path, pipeline: bool) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    for name, (h, w) in {"one": (1, 1), "thirteen": (13, 13), "wide": (1, 200),
                         "twelve": (12, 12), "ok": (30, 31)}.items():
        _image(folder / f"{name}.png", h, w)
    cfg = PipelineConfig(jpeg_prob=1.0) if pipeline else None
    report = degrade_folder(folder, kernel_dir, tmp_path / "out", provider="cpu", pipeline=cfg)
    failed = {Path(line.split(":")[0]).stem: line for line in report.failed}
    if pipeline:  # any side >= the scale works there
        assert report.written == 3 and sorted(failed) == ["one", "wide"]
        assert failed["one"].endswith("image is 1x1: smaller than the scale 2")
        assert failed["wide"].endswith("image is 200x1: smaller than the scale 2")
        return
    assert report.written == 1 and sorted(failed) == ["one", "thirteen", "twelve", "wide"]
    rule = "the HR side must exceed the kernel size 13"
    assert failed["one"].endswith(
        f"image is 1x1 (0x0 once cropped to multiples of the scale 2): {rule}")
    assert failed["thirteen"].endswith(
        f"image is 13x13 (12x12 once cropped to multiples of the scale 2): {rule}")
    assert failed["wide"].endswith(
        f"image is 200x1 (200x0 once cropped to multiples of the scale 2): {rule}")
    assert failed["twelve"].endswith(f"image is 12x12: {rule}")  # no crop, no note


# --- 5. -o on a file ---

def test_out_on_a_file_is_refused_like_other_commands(hr_dir, kernel_dir, tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_bytes(b"keep")
    _refused(_run(hr_dir, "-k", kernel_dir, "-o", afile), f"{afile}: is a file, not a folder")
    _refused(_run(hr_dir, "-k", kernel_dir, "-o", afile / "sub"),
             f"{afile / 'sub'}: cannot create the folder: {afile} is a file")
    assert afile.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "hr", "kernels"]


# --- 6. --seed, --threads, --batch, --noise, --min-confidence, --top bounds ---

@pytest.mark.parametrize(("args", "message"), [
    (("--seed", "-1"), f"--seed must be between 0 and {MAX_SEED}, got -1"),
    (("--seed", str(MAX_SEED + 1)), f"--seed must be between 0 and {MAX_SEED}, got "),
    (("--threads", "-1"), "--threads must be at least 0, got -1"),
    (("--batch", "0"), "--batch must be at least 1, got 0"),
    (("--noise", "-0.1"), "--noise must be a sigma in [0, 1] (image range), got -0.1"),
    (("--noise", "-0.1", "--jpeg", "30-95"), "--noise must be a sigma in [0, 1]"),
    (("--min-confidence", "1.5"), "min confidence must be in [0, 1], got 1.5"),
    (("--top", "0"), "top fraction must be in (0, 1], got 0.0"),
    (("--top", "0.5", "--min-confidence", "0.1"), "give at most one of --min-confidence"),
])
def test_bad_numbers_are_refused_before_out(hr_dir, kernel_dir, tmp_path, args,
                                            message) -> None:
    out = tmp_path / "out"
    _refused(_run(hr_dir, "-k", kernel_dir, "-o", out, *args), message)
    assert not out.exists()


def test_the_api_refuses_them_too(hr_dir, kernel_dir, tmp_path) -> None:
    out = tmp_path / "out"
    for kwargs, message in (({"seed": -1}, "seed must be between 0 and"),
                            ({"threads": -1}, "threads must be >= 0"),
                            ({"provider": "bogus"}, "unknown provider")):
        with pytest.raises(KGEngineError, match=message):
            degrade_folder(hr_dir, kernel_dir, out, **kwargs)
        assert not out.exists()


def test_a_good_run_keeps_its_lock_and_settings(hr_dir, kernel_dir, tmp_path) -> None:
    out = tmp_path / "out"
    res = _run(hr_dir, "-k", kernel_dir, "-o", out, "--provider", "cpu", "--threads", "1")
    assert res.exit_code == 0, res.output
    assert {LOCK_FILE, SETTINGS, MANIFEST, "lr"} <= {p.name for p in out.iterdir()}
    res = _run(hr_dir, "-k", kernel_dir, "-o", out, "--provider", "cpu")
    assert res.exit_code == 0 and "0 pairs written, 2 already there" in res.output
