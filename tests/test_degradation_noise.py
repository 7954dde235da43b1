"""Real-noise patches: ``kgengine noise collect`` (RealSR's recipe) and the ``real`` stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.degradation import Pipeline, PipelineConfig, load_noise_bank
from kgengine.degradation.noisebank import INDEX_FILE, NOISE_FILE, flat_patches
from kgengine.errors import KGEngineError
from kgengine.pool import make_pool


def _photo(seed: int = 0) -> np.ndarray:
    """96x128: left half flat grey + N(0, 2/255) noise; right half textured; one dark and
    one clipped-white flat 32x32 block in the left half."""
    rng = np.random.default_rng(seed)
    img = 0.5 + (2 / 255) * rng.standard_normal((96, 128, 3))
    img[:, 64:] = rng.random((96, 64, 3))
    img[64:, :32] = 0.05 + (2 / 255) * rng.standard_normal((32, 32, 3))
    img[:32, 32:64] = 1.0
    return np.clip(img, 0, 1).astype(np.float32)


def test_flat_patches_follow_the_recipe() -> None:
    img = _photo()
    patches, recs = flat_patches(img, 32, 32, max_var=20.0)
    # independent reference: every 32x32 cell's luma statistics with plain NumPy loops
    luma = 255 * (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2])
    want = [(y, x) for y in range(0, 65, 32) for x in range(0, 97, 32)
            if luma[y : y + 32, x : x + 32].astype(np.float64).var() < 20]
    assert [(r["y"], r["x"]) for r in recs] == want
    assert {(r["y"], r["x"]) for r in recs} == {(0, 0), (32, 0), (32, 32), (64, 32), (64, 0),
                                                (0, 32)}
    for p, r in zip(patches, recs, strict=True):
        src = img[r["y"] : r["y"] + 32, r["x"] : r["x"] + 32].astype(np.float64)
        np.testing.assert_allclose(p, src - src.mean(axis=(0, 1)), atol=1e-6)
        np.testing.assert_allclose(p.mean(axis=(0, 1)), 0, atol=1e-6)
    # the mean thresholds drop the dark block and the clipped one
    grey, recs = flat_patches(img, 32, 32, max_var=20.0, min_mean=30, max_mean=250)
    assert {(r["y"], r["x"]) for r in recs} == {(0, 0), (32, 0), (32, 32), (64, 32)}
    # the kept noise has the photo's noise level (2/255 per channel; 12,288 values a patch)
    assert abs(grey.std() - 2 / 255) < 0.05 * 2 / 255


def test_noise_collect_cli_and_bank(tmp_path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.round(_photo(i) * 255).astype(np.uint8)).save(photos / f"p{i}.png")
    (photos / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "noise"
    res = CliRunner().invoke(app, ["noise", "collect", str(photos), "-o", str(out),
                                   "--patch", "32", "--min-mean", "30", "--max-mean", "250"])
    assert res.exit_code == 1, res.output  # the broken photo, reported
    assert "8 noise patches (32x32) from 2 photos, 1 failed" in res.output
    assert "broken.png" in res.output
    index = json.loads((out / INDEX_FILE).read_text())
    assert index["count"] == 8 and index["patch_size"] == 32 and index["max_var"] == 20.0
    assert {r["source"] for r in index["patches"]} == {str((photos / f"p{i}.png").resolve())
                                                       for i in range(2)}
    bank = load_noise_bank(out)
    assert bank.patches.shape == (8, 32, 32, 3) and bank.patches.dtype == np.float32
    assert np.abs(bank.patches.mean(axis=(1, 2))).max() < 1e-6
    assert load_noise_bank(out / NOISE_FILE).fingerprint() == bank.fingerprint()
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 5)))
    with pytest.raises(KGEngineError, match="expected finite"):
        load_noise_bank(tmp_path / "bad.npy")
    res = CliRunner().invoke(app, ["noise", "collect", str(photos / "p0.png"), "-o",
                                   str(tmp_path / "n2"), "--max-var", "0.001"])
    assert res.exit_code == 1 and "no flat patch found" in res.output
    (tmp_path / "afile").write_text("x")
    res = CliRunner().invoke(app, ["noise", "collect", str(photos / "broken.png"), "-o",
                                   str(tmp_path / "afile")])
    assert res.exit_code == 1 and "afile: is a file, not a folder" in res.output
    assert "broken.png" not in res.output  # refused before any photo was read


def test_real_stage_adds_a_bank_patch(tmp_path) -> None:
    rng = np.random.default_rng(4)
    patches = (0.03 * rng.standard_normal((3, 8, 8, 3))).astype(np.float32)
    np.save(tmp_path / "n.npy", patches)
    pool = make_pool([np.pad(np.ones((1, 1)), 6)], ["delta"], ["d"], 2, seeds=[0])
    cfg = PipelineConfig(real_prob=1.0, real_noise=str(tmp_path / "n.npy"),
                         real_scale=(0.5, 2.0))
    pipe = Pipeline(pool, cfg)
    hr = torch.full((1, 3, 40, 40), 0.5)
    d = pipe.draw(0, "z.png")
    p = d.stages["real"]
    lr = pipe.apply(hr, [d])[0].numpy()  # delta kernel: LR = 0.5 + a * tiled patch
    tiled = np.tile(patches[p["patch"]].transpose(2, 0, 1), (1, 4, 4))
    oy, ox = p["offset"]
    np.testing.assert_allclose(lr, 0.5 + p["scale"] * tiled[:, oy : oy + 20, ox : ox + 20],
                               atol=1e-6)


@pytest.mark.parametrize(("shape", "patch", "stride"), [((37, 53), 8, 1), ((64, 64), 16, 3),
                                                        ((20, 9), 9, 2), ((9, 9), 9, 1)])
def test_window_stats_in_bands_equal_the_whole_view(shape, patch, stride) -> None:
    """0.9.28: the windows' statistics are taken a band of rows at a time (``--stride 1`` took
    2.0 GB on a 300 px photo); any band size gives the one-shot NumPy result."""
    from kgengine.degradation.noisebank import window_stats

    luma = np.random.default_rng(1).random(shape) * 255
    win = np.lib.stride_tricks.sliding_window_view(luma, (patch, patch))[::stride, ::stride]
    var_ref, mean_ref = win.var(axis=(-2, -1)), win.mean(axis=(-2, -1))
    for budget in (1, patch * patch * 3, 10**9):
        var, mean = window_stats(luma, patch, stride, budget)
        np.testing.assert_allclose(var, var_ref, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(mean, mean_ref, rtol=1e-12, atol=1e-9)
