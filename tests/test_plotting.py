"""Kernel heat maps and the PNG kernel grid (Pillow/NumPy only)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kgengine.kernel import gaussian_kernel
from kgengine.plotting import _LUT, kernel_grid_png, kernel_to_rgb


def test_colour_ramp_is_monotonic_from_black():
    assert tuple(_LUT[0]) == (0, 0, 0)
    lightness = _LUT.astype(int).sum(axis=1)
    assert (np.diff(lightness) >= 0).all()
    assert lightness[-1] > 600


def test_kernel_to_rgb_blocks_and_values():
    k = np.array([[0.0, 0.5], [1.0, -0.2]])
    img = kernel_to_rgb(k, 3)
    assert img.shape == (6, 6, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[3:, :3], np.broadcast_to(_LUT[255], (3, 3, 3)))  # max
    np.testing.assert_array_equal(img[:3, :3], 0)  # zero -> black
    np.testing.assert_array_equal(img[3:, 3:], 0)  # negative -> black
    np.testing.assert_array_equal(img[0, 3], _LUT[128])  # 0.5 -> round(127.5) = 128
    # an explicit vmax saturates larger entries and dims the rest
    img2 = kernel_to_rgb(k, 1, vmax=0.5)
    np.testing.assert_array_equal(img2[0, 1], _LUT[255])
    np.testing.assert_array_equal(img2[1, 0], _LUT[255])


def test_kernel_to_rgb_degenerate_inputs():
    assert kernel_to_rgb(np.zeros((3, 3)), 2).max() == 0
    with pytest.raises(ValueError):
        kernel_to_rgb(np.zeros(3), 2)
    with pytest.raises(ValueError):
        kernel_to_rgb(np.zeros((3, 3)), 0)


def test_kernel_grid_png(tmp_path):
    delta = np.zeros((13, 13))
    delta[6, 6] = 1.0
    small = np.zeros((11, 11))
    small[5, 5] = 1.0
    rows = [[delta, gaussian_kernel(13, 1.3)], [small]]
    titles = [["true", "seed 0\n45.1 dB"], ["only one"]]
    path = kernel_grid_png(tmp_path / "g.png", rows, titles, cell_px=130)
    im = np.asarray(Image.open(path).convert("RGB"))
    # 13x13 kernels at 10 px per entry; 2 columns, 2 rows
    cell, pad = 130, 6
    assert im.shape[1] == pad + 2 * (cell + pad)
    # centre entry of the delta (row 0, col 0) and of the 11x11 delta padded to 13 (row 1)
    y0, x0 = pad + 6 * 10 + 5, pad + 6 * 10 + 5
    np.testing.assert_array_equal(im[y0, x0], _LUT[255])
    np.testing.assert_array_equal(im[y0, x0 - 10], 0)
    cap_h = 2 * 12 + 4
    y1 = pad + (cell + cap_h + pad) + 6 * 10 + 5
    np.testing.assert_array_equal(im[y1, x0], _LUT[255])
    # the missing cell of the short row stays white
    np.testing.assert_array_equal(im[y1, pad + cell + pad + 5], 255)
    assert not list(tmp_path.glob("*.tmp"))


def test_kernel_grid_rejects_mismatched_titles(tmp_path):
    with pytest.raises(ValueError, match="titles"):
        kernel_grid_png(tmp_path / "g.png", [[np.ones((3, 3))]], [["a", "b"]])
