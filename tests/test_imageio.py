"""Image reading: normal cases load correctly, bad files give one-line errors naming them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kgengine.errors import BadImageError
from kgengine.imageio import read_image, write_png


@pytest.fixture()
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (40, 50, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, rgb / 255.0, atol=1e-7)
    write_png(tmp_path / "b.png", img)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), rgb)


def test_grayscale_is_replicated(tmp_path, rgb):
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    np.testing.assert_allclose(img[..., 1], rgb[..., 0] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(img[..., 0], img[..., 2])


def test_rgba_alpha_dropped_and_palette_expanded(tmp_path, rgb):
    rgba = np.concatenate([rgb, np.full((40, 50, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), rgb / 255.0, atol=1e-7)
    pal = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    expected = np.asarray(pal.convert("RGB")) / 255.0
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), expected, atol=1e-7)


def test_16bit_grayscale_scaled(tmp_path):
    arr = (np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(img[..., 0], arr / 65535.0, atol=1e-6)


def test_32bit_integer_tiff(tmp_path):
    """Mode "I" within 16 bits reads as 16-bit values; beyond, a one-line error that says
    so (not "float values must lie in [0, 1]")."""
    arr = (np.arange(40 * 50).reshape(40, 50) * 30).astype(np.int32)
    Image.fromarray(arr).save(tmp_path / "ok.tif")
    np.testing.assert_allclose(read_image(tmp_path / "ok.tif")[..., 0], arr / 65535.0,
                               atol=1e-6)
    Image.fromarray(arr * 1000).save(tmp_path / "wide.tif")
    with pytest.raises(BadImageError, match=r"wide\.tif: 32-bit integer pixels from 0 to "
                                            r"59970000: expected 8- or 16-bit values"):
        read_image(tmp_path / "wide.tif")


def test_npy_input_and_nan(tmp_path):
    arr = np.random.default_rng(1).random((30, 30, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", arr)
    np.testing.assert_allclose(read_image(tmp_path / "x.npy"), arr)
    arr[3, 4, 1] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(BadImageError, match=r"nan\.npy: image contains NaN"):
        read_image(tmp_path / "nan.npy")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("text.png", b"this is not an image", "not an image file"),
        ("empty.jpg", b"", "not an image file"),
    ],
)
def test_non_images(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as exc:
        read_image(tmp_path / name)
    assert str(exc.value).startswith(str(tmp_path / name))
    assert "\n" not in str(exc.value)


def test_truncated_png(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match=r"cut\.png: .*(truncated|decode)"):
        read_image(tmp_path / "cut.png")


def test_too_small_and_missing(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with pytest.raises(BadImageError, match="50x40, too small"):
        read_image(tmp_path / "a.png", min_size=64)
    with pytest.raises(BadImageError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_huge_image_refused(tmp_path, monkeypatch):
    import kgengine.imageio as io

    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(io, "MAX_PIXELS", 5000)
    with pytest.raises(BadImageError, match="larger than 5000 pixels"):
        io.read_image(tmp_path / "big.png")


@pytest.mark.parametrize("dtype", [">u2", "<u2", ">f4", "|u1"])
def test_npy_of_either_byte_order_reads_the_same(tmp_path, dtype):
    """A big-endian uint16 ``.npy`` was refused ("unsupported dtype >u2: expected uint8,
    uint16 ...") before 0.9.26; every byte order now reads as the native array does."""
    rng = np.random.default_rng(3)
    top = {"u2": 65535, "f4": 1, "u1": 255}[dtype[1:]]
    arr = (rng.random((40, 44, 3)) * top).astype(dtype[1:])
    native, swapped = tmp_path / "native.npy", tmp_path / "order.npy"
    np.save(native, arr)
    np.save(swapped, arr.astype(dtype))
    assert np.load(swapped).dtype == np.dtype(dtype)
    np.testing.assert_array_equal(read_image(swapped), read_image(native))
