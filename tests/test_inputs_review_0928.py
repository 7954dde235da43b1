"""Unusual input files (0.9.28's review): every assertion failed before its fix."""

from __future__ import annotations

import io
import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kgengine.api import estimate_kernels
from kgengine.cli import app
from kgengine.errors import BadImageError
from kgengine.imageio import folder_image, image_size, read_image

SAMPLE_HR = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"


def _png(path: Path, side: int = 96, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.normal(128, 3, (side, side, 3)).clip(0, 255).astype(np.uint8)).save(
        path)
    return path


def _chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def test_a_link_loop_in_a_photo_folder_fails_alone_in_noise_collect(tmp_path) -> None:
    """It raised a RuntimeError traceback (``Path.resolve`` on a loop) and read nothing."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _png(photos / "a.png", 128)
    (photos / "loop.png").symlink_to("loop.png")
    res = CliRunner().invoke(app, ["noise", "collect", str(photos), "-o", str(tmp_path / "n"),
                                   "--patch", "32"])
    assert res.exit_code == 1 and not isinstance(res.exception, RuntimeError), res.output
    assert "loop.png: a symbolic link to nothing" in res.output
    assert "from 1 photos, 1 failed" in res.output


def test_hidden_files_are_no_input_of_any_folder_listing(tmp_path) -> None:
    """A macOS ``._a.png`` was read (and failed) by degrade, noise collect and synth, and
    skipped by estimate and farm; a folder named ``old.png`` was an HR image of synth, and
    synth ignored .webp/.ppm/.npy HR files."""
    from kgengine.degradation.noisebank import list_photos
    from kgengine.degradation.plan import list_hr_files

    hr = tmp_path / "hr"
    hr.mkdir()
    _png(hr / "a.png")
    (hr / "._a.png").write_bytes(b"\x00\x05\x16\x07Mac OS X" + b"\0" * 64)
    (hr / "old.png").mkdir()
    Image.open(hr / "a.png").save(hr / "b.webp", lossless=True)
    assert not folder_image(hr / "._a.png") and not folder_image(hr / "old.png")
    assert [p.name for p in list_hr_files(hr)] == ["a.png", "b.webp"]
    assert [p.name for p in list_photos([hr])] == ["a.png", "b.webp"]
    res = CliRunner().invoke(app, ["synth", str(hr), "-o", str(tmp_path / "s"), "--n", "2"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "s" / "synth.json").read_text())
    assert sorted(Path(str(im["source"])).name for im in meta["images"]) == ["a.png", "b.webp"]


def test_too_small_is_refused_from_the_header(tmp_path) -> None:
    """A 1,000,000 x 40 PNG was decoded (1 GB, seconds) before "too small": now the header
    refuses it, so a file whose pixel data is cut short says "too small", not "truncated"."""
    ihdr = struct.pack(">IIBBBBB", 1_000_000, 40, 8, 2, 0, 0, 0)
    data = zlib.compressobj().compress(b"\0" + b"\x80" * 3000)  # cut short, never decoded
    path = tmp_path / "strip.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data))
    with pytest.raises(BadImageError, match=r"strip.png: image is 1000000x40, too small"):
        read_image(path, min_size=64)
    np.save(tmp_path / "s.npy", np.zeros((40, 5000, 3), np.float32))
    with pytest.raises(BadImageError, match=r"s.npy: image is 5000x40, too small"):
        read_image(tmp_path / "s.npy", min_size=64)


def test_a_16_bit_pgm_is_read_by_its_maxval(tmp_path) -> None:
    """Pillow opens a 16-bit PGM as mode "I" scaled to 0-65535; dark data (all values <=
    255) was divided by 255, 257 times too bright, and one count more by 65535."""
    g = np.random.default_rng(0).integers(20, 240, (80, 80)).astype(np.uint16)
    for name, arr in (("dark.pgm", g), ("dark_plus.pgm", g + 17)):
        (tmp_path / name).write_bytes(b"P5\n80 80\n65535\n" + arr.astype(">u2").tobytes())
        np.testing.assert_allclose(read_image(tmp_path / name)[..., 0], arr / 65535.0,
                                   rtol=1e-6)
    Image.fromarray(g.astype(np.uint8)).save(tmp_path / "eight.pgm")  # 8-bit: /255
    np.testing.assert_allclose(read_image(tmp_path / "eight.pgm")[..., 0], g / 255.0,
                               rtol=1e-6)


def test_image_size_of_a_rotated_tiff_is_what_read_image_gives(tmp_path) -> None:
    """Pillow 13 reports a rotated TIFF upright on open; image_size swapped it again."""
    rgb = np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("r.tif", "r.jpg", "r.png"):
        Image.fromarray(rgb).save(tmp_path / name, exif=exif)
        h, w = read_image(tmp_path / name).shape[:2]
        assert (w, h) == (100, 200) and image_size(tmp_path / name) == (w, h), name


def test_pillow_warnings_do_not_reach_the_user(tmp_path) -> None:
    """A damaged LZW TIFF printed Pillow's "Corrupt EXIF data" before kgengine's line."""
    buf = io.BytesIO()
    Image.open(SAMPLE_HR).convert("RGB").save(buf, format="TIFF", compression="tiff_lzw")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(BadImageError, match="cut.tif: "):
            read_image(cut)
        with pytest.raises(BadImageError):
            image_size(cut)
    assert [str(w.message) for w in seen] == []


def test_the_api_names_a_small_file_by_its_path(tmp_path) -> None:
    """Two ``im.png`` in two folders: the refusal named the stem ``im`` only."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _png(tmp_path / "a" / "im.png", 96)
    _png(tmp_path / "b" / "im.png", 50)
    with pytest.raises(BadImageError, match=r"b[/\\]im.png: image is 50x50, too small"):
        estimate_kernels([tmp_path / "a" / "im.png", tmp_path / "b" / "im.png"], iters=2)


def test_a_bool_npy_reads_as_the_same_mask_png(tmp_path) -> None:
    mask = np.random.default_rng(0).random((80, 80)) > 0.5
    np.save(tmp_path / "m.npy", mask)
    Image.fromarray(mask).save(tmp_path / "m.png")  # 1-bit
    np.testing.assert_array_equal(read_image(tmp_path / "m.npy"), read_image(tmp_path / "m.png"))


def test_eval_keeps_the_other_runs_batched_when_one_image_is_too_small(tmp_path) -> None:
    """One LR image under 64 px failed its chunk, and the chunk's other runs trained one at
    a time (batch_size 1); they now stay one batch and the small image fails alone."""
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.open(SAMPLE_HR).save(hr / "a.png")
    Image.open(SAMPLE_HR).crop((0, 0, 100, 100)).save(hr / "b_small.png")
    runner = CliRunner()
    assert runner.invoke(app, ["synth", str(hr), "-o", str(tmp_path / "set")]).exit_code == 0
    res = runner.invoke(app, ["eval", str(tmp_path / "set"), "-o", str(tmp_path / "ev"),
                              "--seeds", "0,1", "--iters", "4", "--batch", "4"])
    assert "running them one by one" not in res.output, res.output
    runs = sorted((tmp_path / "ev" / "runs").glob("im_1_*.json"))
    assert len(runs) == 2
    assert {json.loads(p.read_text())["report"]["batch_size"] for p in runs} == {2}
    assert "im_2 seed 0: " in res.output and "too small" in res.output
