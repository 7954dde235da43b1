"""``degrade`` and ``noise collect`` review (0.9.26): an HR file renamed within its stem is
made again, not skipped over the other name's pair; ``--copy-hr`` writes an HR PNG with an
EXIF orientation rotated, as its LR was made; an infinite or degenerate pipeline value is
one line before anything is written; ``noise collect -o`` the photo folder reruns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.degradation import (
    PipelineConfig,
    degrade_folder,
    kernel_row,
    load_config,
    load_noise_bank,
    rebuild_lr,
)
from kgengine.degradation.noisebank import INDEX_FILE, NOISE_FILE
from kgengine.errors import KGEngineError
from kgengine.hooks import JobHooks
from kgengine.imageio import to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import load_pool, make_pool, save_pool

SEED = 3


def _rgb8(seed: int, shape: tuple[int, int]) -> np.ndarray:
    return (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)


@pytest.fixture()
def pool_file(tmp_path) -> Path:
    kernels = [anisotropic_gaussian(13, v1, v2, t) for v1, v2, t in
               [(0.5, 0.5, 0.0), (6.0, 1.0, 0.4), (2.0, 8.0, 1.2), (4.0, 4.0, 0.0)]]
    pool = make_pool(kernels, ["k0", "k1", "k2", "k3"], ["a", "b", "c", "d"], 2,
                     seeds=[0, 1, 2, 3])
    return save_pool(tmp_path / "pool", pool)


def _run(hr: Path, pool: Path, out: Path, **kw):
    logs: list[str] = []
    states: dict[str, str] = {}
    hooks = JobHooks(log=logs.append,
                     item_finished=lambda name, state, _d: states.__setitem__(name, state))
    report = degrade_folder(hr, pool, out, seed=SEED, provider="cpu", hooks=hooks, **kw)
    return report, logs, states


def _entries(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {e["name"]: e for e in map(json.loads, filter(str.strip, lines))}


def _cli(*args: object):
    return CliRunner().invoke(app, [*map(str, args)])


def _one_error(res, message: str) -> None:
    """Exit 1 with exactly one ``error: ...message...`` line and no traceback."""
    assert res.exit_code == 1, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], res.stderr
    assert isinstance(res.exception, SystemExit), res.output


# --- 1. an HR file renamed within its stem ---


def _check_pairs(out: Path, pool_file: Path) -> None:
    """The LR of every entry whose HR file is there is the one its own kernel row gives, and
    no file has two entries."""
    pool = load_pool(pool_file)
    entries = _entries(out)
    claimed = [e["lr"] for e in entries.values()]
    assert len(claimed) == len(set(claimed)), entries
    for e in entries.values():
        if not Path(e["hr_source"]).is_file():
            continue
        lr = np.asarray(Image.open(out / e["lr"])).astype(np.int32)
        assert np.abs(lr - to_uint8(rebuild_lr(e, pool)).astype(np.int32)).max() <= 1, e["name"]


@pytest.mark.parametrize("copy_hr", [True, False])
def test_an_hr_file_renamed_within_its_stem_is_made_again(pool_file, tmp_path,
                                                          copy_hr) -> None:
    # the two names draw other kernels, or a stale pair could not be told from a good one
    assert kernel_row(SEED, "r1.png", 4) != kernel_row(SEED, "r1.PNG", 4)
    hr, out = tmp_path / "hr", tmp_path / "out"
    hr.mkdir()
    for i in (1, 2):
        Image.fromarray(_rgb8(i, (32, 36))).save(hr / f"r{i}.png")
    assert _run(hr, pool_file, out, copy_hr=copy_hr)[0].written == 2
    (hr / "r1.png").rename(hr / "r1.PNG")
    report, logs, states = _run(hr, pool_file, out, copy_hr=copy_hr)
    assert (report.written, report.skipped) == (1, 1)
    assert states == {"r1.PNG": "done", "r2.png": "skipped"}
    assert logs.count(f"{hr / 'r1.PNG'}: made, its pair's files lr/r1.png were also claimed "
                      "in the manifest by r1.png, no longer in the HR folder (renamed?); that "
                      "entry and its files are removed") == 1
    assert sorted(_entries(out)) == ["r1.PNG", "r2.png"]
    _check_pairs(out, pool_file)
    (hr / "r1.PNG").rename(hr / "r1.png")  # back: the pair there is r1.PNG's
    report, logs, states = _run(hr, pool_file, out, copy_hr=copy_hr)
    assert (report.written, report.skipped) == (1, 1)
    assert states == {"r1.png": "done", "r2.png": "skipped"}
    assert [line for line in logs if "also claimed" in line] == [
        f"{hr / 'r1.png'}: made, its pair's files lr/r1.png were also claimed in the "
        "manifest by r1.PNG, no longer in the HR folder (renamed?); that entry and its files "
        "are removed"]
    assert sorted(_entries(out)) == ["r1.png", "r2.png"]
    _check_pairs(out, pool_file)
    fresh = tmp_path / "fresh"
    _run(hr, pool_file, fresh, copy_hr=copy_hr)
    for sub in ("lr", "hr") if copy_hr else ("lr",):
        assert (out / sub / "r1.png").read_bytes() == (fresh / sub / "r1.png").read_bytes()


def test_two_entries_claiming_one_pair_are_both_voided(pool_file, tmp_path) -> None:
    """A manifest left by an earlier version: r1.png listed, and r1.PNG's entry claiming
    the same files; which wrote them last is not known, so the pair is made again."""
    hr, out = tmp_path / "hr", tmp_path / "out"
    hr.mkdir()
    for i in (1, 2, 3):
        Image.fromarray(_rgb8(i, (32, 36))).save(hr / f"r{i}.png")
    _run(hr, pool_file, out, copy_hr=True)
    entries = _entries(out)
    rival = {**entries["r1.png"], "name": "r1.PNG",
             "kernel_row": kernel_row(SEED, "r1.PNG", 4)}
    with open(out / "manifest.jsonl", "a") as fh:
        fh.write(json.dumps(rival) + "\n")
    (hr / "r3.png").unlink()  # removed from the folder: its pair stays, as before
    report, logs, states = _run(hr, pool_file, out, copy_hr=True)
    assert (report.written, report.skipped) == (1, 1)
    assert states == {"r1.png": "done", "r2.png": "skipped"}
    assert [line for line in logs if "also claimed" in line] == [
        f"{hr / 'r1.png'}: redone, its pair's files lr/r1.png were also claimed in the "
        "manifest by r1.PNG, no longer in the HR folder (renamed?); that entry and its files "
        "are removed"]
    assert sorted(_entries(out)) == ["r1.png", "r2.png", "r3.png"]
    assert _entries(out)["r3.png"] == entries["r3.png"]
    assert (out / "lr" / "r3.png").is_file() and (out / "hr" / "r3.png").is_file()
    _check_pairs(out, pool_file)


# --- 2. --copy-hr and an EXIF orientation ---


def _rotated_png(path: Path, rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Save ``rgb`` as an 8-bit RGB PNG with an eXIf orientation; return it as read."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif)
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == orientation
        return np.asarray(ImageOps.exif_transpose(im))


@pytest.mark.parametrize("pipeline", [None, PipelineConfig()])
def test_copy_hr_writes_an_exif_rotated_png_as_its_lr_was_made(pool_file, tmp_path,
                                                               pipeline) -> None:
    hr, out = tmp_path / "hr", tmp_path / "out"
    hr.mkdir()
    rotated = _rotated_png(hr / "x.png", _rgb8(0, (32, 48)), 6)
    upright = _rotated_png(hr / "y.png", _rgb8(1, (32, 48)), 1)
    assert rotated.shape == (48, 32, 3)
    report = _run(hr, pool_file, out, copy_hr=True, pipeline=pipeline)[0]
    assert report.written == 2 and not report.failed
    with Image.open(out / "hr" / "x.png") as im:
        assert im.getexif().get(0x0112, 1) == 1
        hr_x = np.asarray(im)
    np.testing.assert_array_equal(hr_x, rotated)
    lr_x = np.asarray(Image.open(out / "lr" / "x.png"))
    assert (lr_x.shape[0] * 2, lr_x.shape[1] * 2) == hr_x.shape[:2] == (48, 32)
    # orientation 1: copied byte for byte, as before
    assert (out / "hr" / "y.png").read_bytes() == (hr / "y.png").read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "hr" / "y.png")), upright)


# --- 3. infinite and degenerate pipeline values ---


@pytest.mark.parametrize(("toml", "message"), [
    ("second_prob = 1\nsecond_size = inf\n", "second_size expects int, got inf"),
    ("second_prob = 1\nsecond_size = nan\n", "second_size expects int, got nan"),
    ("second_prob = 1\nsecond_sigma = [1e-200, 1e-200]\n", "second_sigma must be at least 0.01"),
    ("second_prob = 1\nsecond_sigma = [0.0, 1.0]\n", "second_sigma must be at least 0.01"),
    ("second_prob = inf\n", "second_prob must be in [0, 1], got inf"),
    ("jpeg_prob = nan\n", "jpeg_prob must be in [0, 1], got nan"),
])
def test_an_infinite_or_degenerate_pipeline_value_is_one_line(pool_file, tmp_path, toml,
                                                              message) -> None:
    hr, out = tmp_path / "hr", tmp_path / "out"
    hr.mkdir()
    Image.fromarray(_rgb8(0, (32, 32))).save(hr / "a.png")
    path = tmp_path / "deg.toml"
    path.write_text(toml)
    key = message.split()[0]
    with pytest.raises(KGEngineError, match=rf"^{path}: pipeline: {key} "):
        load_config(path)
    res = _cli("degrade", hr, "-k", pool_file, "-o", out, "--pipeline", path)
    _one_error(res, message)
    assert not out.exists()


@pytest.mark.parametrize("changes", [
    {"second_size": float("inf")}, {"second_size": "inf"}, {"gray_prob": float("nan")},
    {"second_sigma": "1e-200"}, {"second_sigma": (0.005, 1.0)},
])
def test_pipeline_replace_refuses_infinite_and_degenerate_values(changes) -> None:
    with pytest.raises(KGEngineError, match=rf"^pipeline: {next(iter(changes))} "):
        PipelineConfig().replace(**changes)
    # the lower end of the default range, and a narrower (delta) Gaussian, are accepted
    PipelineConfig().replace(second_prob=1.0, second_sigma="0.2-0.2")
    PipelineConfig().replace(second_prob=1.0, second_sigma="0.01-0.05")


# --- 4. noise collect -o the photo folder ---


def test_noise_collect_into_the_photo_folder_reruns(tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        flat = 128 + np.random.default_rng(i).integers(-2, 3, (48, 48, 3))
        Image.fromarray(flat.astype(np.uint8)).save(photos / f"p{i}.png")
    args = ("noise", "collect", photos, "-o", photos, "--patch", "16")
    first = _cli(*args)
    assert first.exit_code == 0, first.output
    assert "own outputs" not in first.stderr
    bank = load_noise_bank(photos).patches
    again = _cli(*args)
    assert again.exit_code == 0, again.output
    # a folder listing leaves a bank's patch file out without a word since 0.9.27 (every
    # command's, kgengine.imageio.listed_file); named, it is skipped with a line (below)
    assert "own outputs" not in again.stderr, again.stderr
    assert "18 noise patches (16x16) from 2 photos, 0 failed" in again.stdout
    np.testing.assert_array_equal(load_noise_bank(photos).patches, bank)
    index = json.loads((photos / INDEX_FILE).read_text())
    assert {Path(p["source"]).name for p in index["patches"]} == {"p0.png", "p1.png"}
    # named on the command line, the bank of another run is left out too
    named = _cli("noise", "collect", photos / "p0.png", photos / NOISE_FILE,
                 "-o", tmp_path / "noise", "--patch", "16")
    assert named.exit_code == 0, named.output
    assert "9 noise patches (16x16) from 1 photos, 0 failed" in named.stdout
