"""Degradation pipeline and ``kgengine noise`` QA: bad configs, noise banks, options and
output folders fail with one line naming the file or option (no traceback), a stage asked
for is never silently left out, and ``--copy-hr`` makes 8-bit RGB HR PNGs like the LR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.degradation import (
    MANIFEST,
    SETTINGS,
    Degrader,
    PairDataset,
    PipelineConfig,
    build_config,
    load_config,
    load_noise_bank,
    read_manifest,
)
from kgengine.degradation.config import parse_sets
from kgengine.degradation.noisebank import INDEX_FILE, NOISE_FILE
from kgengine.errors import KGEngineError
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import make_pool, save_pool

RNG = np.random.default_rng(0)


def _rgb8(h: int, w: int) -> np.ndarray:
    return (RNG.random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture()
def pool_file(tmp_path) -> Path:
    pool = make_pool([anisotropic_gaussian(13, 1.0, 2.0, 0.5)], ["k0"], ["p0.png"], 2,
                     seeds=[0])
    return save_pool(tmp_path / "pool", pool)


@pytest.fixture()
def hr_dir(tmp_path) -> Path:
    folder = tmp_path / "hr"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(_rgb8(24, 24)).save(folder / name)
    return folder


def _run(*args: object):
    return CliRunner().invoke(app, [*map(str, args)])


def _one_error(res, message: str) -> None:
    """Exit 1 with exactly one ``error: ...message...`` line and no traceback."""
    assert res.exit_code == 1, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], res.stderr
    assert isinstance(res.exception, SystemExit), res.output  # not an uncaught exception


# --- 1. pipeline config: wrong types and out-of-range values ---


def test_a_real_noise_that_is_no_text_is_one_line(tmp_path) -> None:
    path = tmp_path / "deg.toml"
    path.write_text("real_noise = 5\n")
    with pytest.raises(KGEngineError, match=r"deg.toml: pipeline: real_noise expects str"):
        load_config(path)


def test_a_poisson_peak_numpy_cannot_sample_is_refused_up_front(hr_dir, pool_file,
                                                                 tmp_path) -> None:
    with pytest.raises(KGEngineError, match="poisson_peak must be at most"):
        PipelineConfig(poisson_prob=1.0, poisson_peak=(30.0, 1e30))
    out = tmp_path / "out"
    res = _run("degrade", hr_dir, "-k", pool_file, "-o", out, "--noise-poisson",
               "--set", "poisson_peak=1e20")
    _one_error(res, "poisson_peak must be at most")
    assert not out.exists()


def test_a_stage_turned_on_is_never_silently_left_out_of_order(tmp_path) -> None:
    path = tmp_path / "deg.toml"
    path.write_text('order = ["jpeg", "gaussian"]\npoisson_prob = 0.3\n')
    with pytest.raises(KGEngineError, match=r"poisson_prob is 0.3 but order \['jpeg', "
                                            r"'gaussian'\] has no 'poisson'"):
        load_config(path)
    # a flag turns its stage on: added to an order that leaves it out
    path.write_text('order = ["jpeg", "gaussian"]\njpeg_prob = 1.0\n')
    assert build_config(path, poisson=True).active() == ("jpeg", "poisson")
    with pytest.raises(KGEngineError, match="jpeg_prob is 1.0 but order"):
        build_config(jpeg="30-90", sets=parse_sets(["order="]))


def test_noise_and_noise_range_together_are_refused() -> None:
    with pytest.raises(KGEngineError, match="at most one of --noise and --noise-range"):
        build_config(noise=0.1, noise_range="0-0.03")


# --- 2. noise banks ---


def _bad_bank(folder: Path, kind: str) -> None:
    good = np.zeros((2, 8, 8, 3), np.float32)
    if kind == "empty file":
        (folder / NOISE_FILE).write_bytes(b"")
    elif kind == "npz":
        with open(folder / NOISE_FILE, "wb") as fh:
            np.savez(fh, patches=good)
    elif kind == "zero-size patches":
        np.save(folder / NOISE_FILE, np.zeros((2, 0, 0, 3), np.float32))
    else:
        np.save(folder / NOISE_FILE, good)
        (folder / INDEX_FILE).write_bytes(b"{oops" if kind == "bad index" else b"\xff\xfe")


@pytest.mark.parametrize("kind, match", [
    ("empty file", "cannot read noise patches"),
    ("npz", r"cannot read noise patches \(not a .npy file\)"),
    ("zero-size patches", r"expected finite \(N,P,P,3\) float patches"),
    ("bad index", "not a valid noise index"),
    ("index not utf-8", "not a valid noise index"),
])
def test_a_bad_noise_bank_is_one_line_naming_the_file(tmp_path, kind, match) -> None:
    _bad_bank(tmp_path, kind)
    with pytest.raises(KGEngineError, match=rf"^{tmp_path}/noise_\w+\.\w+: {match}"):
        load_noise_bank(tmp_path)


# --- 3. kgengine noise collect: options checked before OUT is made ---


@pytest.mark.parametrize("option, message", [
    (["--stride", "0"], "--stride must be at least 1, got 0"),
    (["--max-var", "nan"], "--max-var must be > 0, got nan"),
    (["--min-mean", "200", "--max-mean", "100"], "--min-mean must be at most --max-mean"),
])
def test_noise_collect_bad_options_are_refused(tmp_path, option, message) -> None:
    photo = tmp_path / "flat.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(photo)
    out = tmp_path / "noise"
    res = _run("noise", "collect", photo, "-o", out, "--patch", "16", *option)
    _one_error(res, message)
    assert not out.exists()


# --- 4. Python API ---


@pytest.mark.parametrize(("hr", "why"), [("missing", "no such folder"),
                                         ("hr/a.png", "is a file, not a folder")])
def test_pair_dataset_refuses_a_path_that_is_no_folder(hr_dir, pool_file, hr, why) -> None:
    with pytest.raises(KGEngineError, match=why):
        PairDataset(str(hr_dir.parent / hr), pool_file)


def test_an_empty_batch_is_a_value_error(pool_file) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Degrader(pool_file)(torch.rand(0, 3, 8, 8))


# --- 5. output folders with odd content ---


def _pairs(hr_dir: Path, pool_file: Path, out: Path, *extra: str):
    return _run("degrade", hr_dir, "-k", pool_file, "-o", out, "--jpeg", "50-60", *extra)


def test_a_settings_file_that_is_no_object_is_one_line(hr_dir, pool_file, tmp_path) -> None:
    out = tmp_path / "out"
    assert _pairs(hr_dir, pool_file, out).exit_code == 0
    (out / SETTINGS).write_text("[1]\n")
    _one_error(_pairs(hr_dir, pool_file, out), f"{SETTINGS}: not a JSON object of settings")


def test_a_manifest_line_without_its_files_is_ignored(hr_dir, pool_file, tmp_path) -> None:
    out = tmp_path / "out"
    assert _pairs(hr_dir, pool_file, out).exit_code == 0
    lr = (out / "lr" / "a.png").read_bytes()
    with open(out / MANIFEST, "a") as fh:
        fh.write(json.dumps({"name": "a.png"}) + "\n")
    res = _pairs(hr_dir, pool_file, out)
    assert res.exit_code == 0 and "0 pairs written, 2 already there" in res.output, res.output
    assert (out / "lr" / "a.png").read_bytes() == lr
    assert set(read_manifest(out / MANIFEST)) == {"a.png", "b.png"}


# --- 6. --copy-hr: hr/ holds 8-bit RGB PNGs, as lr/ ---


def test_copy_hr_writes_8bit_rgb_pngs(pool_file, tmp_path) -> None:
    hr = tmp_path / "hr"
    hr.mkdir()
    rgb = _rgb8(24, 24)
    Image.fromarray(rgb).save(hr / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(hr / "gray.png")
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(hr / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(hr / "gray16.png")
    out = tmp_path / "out"
    res = _pairs(hr, pool_file, out, "--copy-hr")
    assert res.exit_code == 0, res.output
    assert (out / "hr" / "rgb.png").read_bytes() == (hr / "rgb.png").read_bytes()
    for name, want in [("gray", np.repeat(rgb[..., :1], 3, axis=2)), ("rgba", rgb),
                       ("gray16", np.repeat(rgb[..., :1], 3, axis=2))]:
        with Image.open(out / "hr" / f"{name}.png") as im:
            assert im.mode == "RGB", name
            np.testing.assert_array_equal(np.asarray(im), want)


# --- 0.9.22: caps on sizes that only exhaust memory or saturate the image ---


@pytest.mark.parametrize(("changes", "message"), [
    ({"second_size": 99999}, "second_size must be odd, 1-63"),
    ({"second_size": 65}, "second_size must be odd, 1-63"),
    ({"second_resize": "0.5-100"}, "second_resize must be at most 4"),
    ({"gaussian_sigma": "0-5"}, "gaussian_sigma must be at most 1"),
])
def test_pipeline_sizes_beyond_their_caps_are_refused(changes, message) -> None:
    with pytest.raises(KGEngineError, match=message):
        PipelineConfig().replace(**changes)
    # the caps themselves are accepted
    PipelineConfig().replace(second_size=63, second_resize="0.5-4", gaussian_sigma="0-1")


@pytest.mark.parametrize("noise", ["5", "-0.1", "nan"])
def test_degrade_noise_outside_the_image_range_is_one_line(hr_dir, pool_file, tmp_path,
                                                           noise) -> None:
    res = _run("degrade", hr_dir, "-k", pool_file, "-o", tmp_path / "out", "--noise", noise)
    _one_error(res, "--noise must be a sigma in [0, 1]")
    assert not (tmp_path / "out").exists()


def test_degrade_folder_refuses_noise_outside_the_image_range(hr_dir, pool_file,
                                                              tmp_path) -> None:
    from kgengine.degradation import degrade_folder

    with pytest.raises(KGEngineError, match="noise must be a sigma in"):
        degrade_folder(hr_dir, pool_file, tmp_path / "out", noise=float("nan"))


def _noise_folder(path: Path, seed: int) -> Path:
    patches = 0.02 * np.random.default_rng(seed).standard_normal((5, 16, 16, 3))
    path.mkdir()
    patches -= patches.mean(axis=(1, 2), keepdims=True)
    np.save(path / NOISE_FILE, patches.astype(np.float32))
    return path


def test_a_moved_noise_folder_resumes_and_other_patches_are_refused(hr_dir, pool_file,
                                                                    tmp_path) -> None:
    out = tmp_path / "out"
    first = _noise_folder(tmp_path / "noise", 1)
    assert _run("degrade", hr_dir, "-k", pool_file, "-o", out,
                "--noise-patches", first).exit_code == 0
    lr = {p.name: p.read_bytes() for p in (out / "lr").iterdir()}
    moved = first.rename(tmp_path / "moved")
    res = _run("degrade", hr_dir, "-k", pool_file, "-o", out, "--noise-patches", moved)
    assert res.exit_code == 0 and "0 pairs written, 2 already there" in res.output, res.output
    assert {p.name: p.read_bytes() for p in (out / "lr").iterdir()} == lr
    other = _noise_folder(tmp_path / "other", 2)
    _one_error(_run("degrade", hr_dir, "-k", pool_file, "-o", out, "--noise-patches", other),
               "real_noise_fingerprint")
