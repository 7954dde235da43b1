"""Inputs and values: one loader with one set of checks for every format (.npy size from the
header, dtype scaling and range, EXIF orientation, Pillow's own pixel limit), resume that
compares settings, every bad option value is one line and exit 1, eval/synth report skipped
images with exit 1 after finishing the others, and error lines stay short."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps
from test_reliability import error_lines, fake_estimate_kernel, make_images
from typer.testing import CliRunner

import kgengine.api
import kgengine.imageio as io
from kgengine.accuracy import make_div2krk_like, per_image
from kgengine.cli import app
from kgengine.commands._common import MODES
from kgengine.config import KernelGANConfig
from kgengine.errors import BadImageError
from kgengine.imageio import image_size, read_image
from kgengine.pool import make_pool, save_pool
from kgengine.trainer import MODES as TRAINER_MODES

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _one_error(res, text: str) -> None:
    """Exit 1 with exactly one ``error:`` line, and ``text`` in it."""
    assert res.exit_code == 1, res.output
    lines = error_lines(res.output)
    assert len(lines) == 1 and text in lines[0], res.output


# ---------------------------------------------------------------------- 7. .npy inputs
def _sparse_npy(path, shape, dtype="<f4"):
    """A .npy whose header claims ``shape`` but whose data is a hole (a few KB on disk)."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.truncate(fh.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)


def test_huge_npy_is_refused_from_its_header(tmp_path):
    _sparse_npy(tmp_path / "huge.npy", (14200, 14200, 3))
    t0 = time.perf_counter()
    with pytest.raises(BadImageError, match=r"huge\.npy: image is 14200x14200, larger than"):
        read_image(tmp_path / "huge.npy")
    with pytest.raises(BadImageError, match="larger than"):
        image_size(tmp_path / "huge.npy")
    assert time.perf_counter() - t0 < 2  # nothing was loaded
    with open(tmp_path / "cut.npy", "wb") as fh:  # header only: the data is missing
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (100, 100, 3)})
    with pytest.raises(BadImageError, match=r"cut\.npy: cannot read \.npy array"):
        read_image(tmp_path / "cut.npy")


def test_npy_dtypes_are_scaled_or_refused(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (70, 80, 3), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", rgb)
    Image.fromarray(rgb).save(tmp_path / "same.png")
    np.testing.assert_array_equal(read_image(tmp_path / "u8.npy"),
                                  read_image(tmp_path / "same.png"))
    np.save(tmp_path / "u16.npy", rgb.astype(np.uint16) * 257)
    np.testing.assert_allclose(read_image(tmp_path / "u16.npy"), rgb / 255.0, atol=1e-6)
    cases = {
        "f255.npy": (rgb.astype(np.float32), r"float values must lie in \[0, 1\], found 0 to 255"),
        "i32.npy": (rgb.astype(np.int32), "unsupported dtype int32"),
        "two.npy": (rgb[..., :2] / 255.0, r"got shape \(70, 80, 2\)"),
        "inf.npy": (np.full((70, 80), np.inf), "NaN or inf"),
        "neg.npy": (rgb / 255.0 - 0.5, "float values must lie in"),
    }
    for name, (arr, message) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(BadImageError, match=message) as info:
            read_image(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)) and "\n" not in str(info.value)


def test_estimate_refuses_a_0_255_npy_and_finishes_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(kgengine.api, "estimate_kernel", fake_estimate_kernel)
    (good,) = make_images(tmp_path / "in", 1)
    bad = tmp_path / "in" / "raw.npy"
    np.save(bad, np.asarray(Image.open(good), dtype=np.float32))  # 0-255 floats
    res = _invoke("estimate", bad, good, "-o", tmp_path / "out", "--iters", 2)
    _one_error(res, f"{bad}: float values must lie in [0, 1]")
    assert (tmp_path / "out" / "p0_report.json").is_file()
    assert not (tmp_path / "out" / "raw_report.json").exists()


# ---------------------------------------------------------------------- 8. EXIF orientation
def test_exif_orientation_is_applied(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)  # H 40, W 60
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    Image.fromarray(rgb).save(tmp_path / "r.png", exif=exif)
    for name in ("r.jpg", "r.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (60, 40, 3)
        assert image_size(tmp_path / name) == (40, 60)  # (width, height) as read
        with Image.open(tmp_path / name) as im:
            stored = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB")) / 255.0
        np.testing.assert_allclose(img, upright, atol=1e-6)
        np.testing.assert_allclose(img, np.rot90(stored, k=-1), atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "r.png") * 255, np.rot90(rgb, k=-1),
                               atol=1e-3)


# ---------------------------------------------------------------------- 12. Pillow's limit
def test_pillow_limit_never_overrides_kgengines(tmp_path, monkeypatch):
    Image.new("L", (100, 100), 128).save(tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # below the image, as 89.5 MP < 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        assert read_image(tmp_path / "ok.png").shape == (100, 100, 3)
        assert image_size(tmp_path / "ok.png") == (100, 100)
        Image.new("L", (80, 80)).save(tmp_path / "big.png")
        monkeypatch.setattr(io, "MAX_PIXELS", 5000)  # kgengine's own limit still holds
        with pytest.raises(BadImageError, match="image is 80x80, larger than 5000 pixels"):
            read_image(tmp_path / "big.png")
    assert Image.MAX_IMAGE_PIXELS >= 5000


def test_a_9500_px_png_header_is_accepted(tmp_path):
    Image.new("1", (9500, 9500)).save(tmp_path / "wide.png")  # 90.25 MP > Pillow's 89.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size(tmp_path / "wide.png") == (9500, 9500)


# ---------------------------------------------------------------------- 6. resume settings
def test_estimate_redoes_outputs_made_with_other_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(kgengine.api, "estimate_kernel", fake_estimate_kernel)
    (img,) = make_images(tmp_path / "in", 1)
    out = tmp_path / "out"

    def run(*options):
        res = _invoke("estimate", img, "-o", out, *options)
        assert res.exit_code == 0, res.output
        return res.output, json.loads((out / "p0_report.json").read_text())

    _, first = run("--iters", 3)
    output, again = run("--iters", 3)
    assert "skip" in output and "(done)" in output and again == first
    steps = [(["--iters", 3, "--seed", 4], "seed (stored 0, asked 4)"),
             (["--iters", 5, "--seed", 4], "iters (stored 3, asked 5)"),
             (["--iters", 5, "--seed", 4, "--set", "lr_g=1e-4"],
              "config.lr_g (stored 0.0002, asked 0.0001)"),
             (["--iters", 5, "--seed", 4, "--set", "lr_g=1e-4", "--mode", "layers"],
              "mode (stored composed, asked layers)"),
             (["--iters", 5, "--seed", 4, "--set", "lr_g=1e-4", "--mode", "layers", "--x4"],
              "x4 (stored False, asked True)")]
    for options, diff in steps:
        output, report = run(*options)
        assert "redone, its outputs were made with other settings" in output, output
        assert diff in output and "(done)" not in output
        output, _ = run(*options)  # the same request again: kept
        assert "(done)" in output
    assert report["seed"] == 4 and report["mode"] == "layers" and report["iters"] == 5
    assert (out / "p0_kernel_x4.npy").is_file()
    output, _ = run(*steps[-2][0])  # x4 outputs do not serve a run without --x4 (0.9.26)
    assert "x4 (stored True, asked False)" in output and "(done)" not in output
    output, _ = run(*steps[-1][0], "--force")
    assert "(done)" not in output


# ---------------------------------------------------------------------- 9 + 10. bad values
@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sample_hr):
    hr = tmp_path_factory.mktemp("hr")
    from kgengine.imageio import write_png

    write_png(hr / "a.png", sample_hr[:128, :120])
    write_png(hr / "b.png", sample_hr[150:278, 180:300])
    out = tmp_path_factory.mktemp("ds")
    make_div2krk_like(sorted(hr.glob("*.png")), out, seed=0)
    return out


BAD_VALUES = [
    (["estimate", "{img}", "-o", "{out}", "--iters", "-5"], "--iters must be at least 1, got -5"),
    (["estimate", "{img}", "-o", "{out}", "--threads", "-1"], "--threads must be at least 0"),
    (["estimate", "{img}", "-o", "{out}", "--device", "bogus"], "--device: expected auto, cpu"),
    (["estimate", "{img}", "-o", "{out}", "--seed", "99999999999999999999"],
     "--seed must be between 0 and 9223372036854775807"),
    (["estimate", "{img}", "-o", "{out}", "--mode", "bogus"], "--mode: expected composed or"),
    (["estimate", "{img}", "-o", "{out}", "--set", "g_kernel_sizes=4,4"],
     "config g_kernel_sizes: expected odd sizes"),
    (["estimate", "{img}", "-o", "{out}", "--set", "iters=2.7"],
     "config iters: expected an integer, got '2.7'"),
    (["farm", "{img}", "-o", "{out}", "--threads", "-1"], "--threads must be at least 0"),
    (["farm", "{img}", "-o", "{out}", "--device", "gpu"], "--device: expected auto, cpu"),
    (["farm", "{img}", "-o", "{out}", "--mode", "bogus"], "--mode: expected composed or"),
    (["farm", "{img}", "-o", "{out}", "--seed", "-1"], "--seed must be between 0 and"),
    (["eval", "{ds}", "-o", "{out}", "--iters", "-5"], "--iters must be at least 1, got -5"),
    (["eval", "{ds}", "-o", "{out}", "--batch", "-1"], "--batch must be at least 0, got -1"),
    (["eval", "{ds}", "-o", "{out}", "--device", "bogus"], "--device: expected auto, cpu"),
    (["eval", "{ds}", "-o", "{out}", "--seeds", "-3"], "--seeds: expected integers"),
    (["synth", "{hr}", "-o", "{out}", "--n", "0"], "--n must be at least 1, got 0"),
    (["synth", "{hr}", "-o", "{out}", "--seed", "-5"], "--seed must be between 0 and"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES)
def test_bad_values_are_one_line_and_exit_1(tmp_path, dataset, monkeypatch, args, message):
    calls = []
    monkeypatch.setattr(kgengine.api, "estimate_kernel", lambda *a, **k: calls.append(1))
    (img,) = make_images(tmp_path / "hr", 1)
    fill = {"img": img, "out": tmp_path / "out", "ds": dataset, "hr": tmp_path / "hr"}
    res = _invoke(*[a.format(**fill) for a in args])
    _one_error(res, message)
    assert not calls and not (tmp_path / "out").exists()  # checked before any work


def test_config_refuses_non_integral_and_out_of_range_values():
    cfg = KernelGANConfig()
    for changes, message in (({"iters": 2.7}, "expected an integer"),
                             ({"iters": -5}, "at least 1"), ({"iters": True}, "expected int"),
                             ({"lr_g": float("nan")}, "finite"),
                             ({"g_kernel_sizes": (4, 4)}, "odd sizes"),
                             ({"crop_size": 8}, "too small")):
        with pytest.raises(ValueError, match=message):
            cfg.replace(**changes)
    assert cfg.replace(iters=3.0, lr_g="1e-4").iters == 3
    assert MODES == TRAINER_MODES


def test_folder_without_images_given_to_estimate_is_named_and_the_others_finish(
        tmp_path, monkeypatch):
    # since 0.9.17 a folder stands for its image files; one without any fails alone
    monkeypatch.setattr(kgengine.api, "estimate_kernel", fake_estimate_kernel)
    (img,) = make_images(tmp_path / "in", 1)
    (tmp_path / "folder.png").mkdir()
    res = _invoke("estimate", tmp_path / "folder.png", img, "-o", tmp_path / "out")
    _one_error(res, f"{tmp_path / 'folder.png'}: no image files in this folder")
    assert "1 of 2 image(s) failed" in res.output
    assert (tmp_path / "out" / "p0_report.json").is_file()


@pytest.mark.parametrize("kind", ["empty", "array scale"])
def test_pool_info_and_plot_on_a_malformed_pool(tmp_path, kind):
    good = make_pool([np.ones((3, 3))], ["a"], ["a.png"], 2)
    path = save_pool(tmp_path / "pool.npz", good)
    with np.load(path) as z:
        arrays = dict(z)
    if kind == "empty":
        arrays.update(kernels=np.zeros((0, 3, 3), np.float32), ids=np.array([], str),
                      sources=np.array([], str), seeds=np.array([], np.int64))
        message = "the pool holds no kernels"
    else:
        arrays["scale"] = np.array([2, 4])
        message = "scale must be one integer"
    np.savez(path, **arrays)
    _one_error(_invoke("pool", "info", path), message)
    _one_error(_invoke("pool", "plot", path, "-o", tmp_path / "m.png"), message)
    assert not (tmp_path / "m.png").exists()


# ---------------------------------------------------------------------- 11. skipped items
def test_eval_exits_1_when_an_image_was_skipped(dataset, tmp_path, monkeypatch):
    import kgengine.accuracy.job as job

    def estimator(path, *, x4, iters, seed, device, config, stop="auto"):  # as KernelGAN
        if "im_2" in path:
            raise RuntimeError("estimator broke")
        return fake_estimate_kernel(path, seed=seed, config=config)

    monkeypatch.setattr(job, "default_estimator", lambda: per_image(estimator))
    res = _invoke("eval", dataset, "-o", tmp_path / "o", "--seeds", 0, "--iters", 2)
    _one_error(res, "1 image(s) skipped: im_2")
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert {r["image"] for r in results["rows"]} >= {"im_1"}
    assert [e["image"] for e in results["errors"]] == ["im_2"]
    assert (tmp_path / "o" / "report.md").is_file()


def test_eval_huge_id_range_is_a_short_line(dataset, tmp_path):
    t0 = time.perf_counter()
    res = _invoke("eval", dataset, "-o", tmp_path / "o", "--ids", "1-99999999")
    _one_error(res, "--ids: 99999999 values, at most 100000")
    assert time.perf_counter() - t0 < 10 and len(res.output) < 300
    res = _invoke("eval", dataset, "-o", tmp_path / "o", "--ids", "1-50")
    _one_error(res, "no image for ids [3, 4, 5, 6, 7, 8, 9, 10, 11, 12 ... and 38 more]")
    assert len(res.output) < 300


def test_synth_skips_a_bad_hr_file_and_writes_the_others(tmp_path):
    make_images(tmp_path / "hr", 2)
    (tmp_path / "hr" / "p0b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    res = _invoke("synth", tmp_path / "hr", "-o", tmp_path / "set")
    assert res.exit_code == 1, res.output
    lines = error_lines(res.output)
    assert len(lines) == 2 and f"{tmp_path / 'hr' / 'p0b.png'}:" in lines[0]
    assert lines[1] == "error: 1 HR image(s) skipped"
    images = json.loads((tmp_path / "set" / "synth.json").read_text())["images"]
    assert [(e["name"], e["source"]) for e in images] == [("im_1", "p0.png"), ("im_3", "p1.png")]
    assert (tmp_path / "set" / "lr_x2" / "im_3.png").is_file()
    assert not (tmp_path / "set" / "lr_x2" / "im_2.png").exists()
