"""What a farm of real photos meets (0.9.26): a photo too large for memory, a file name too
long for its output files, a folder path too long for the system, and an error line whose
reason comes after a long path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from test_farm import _one_thread  # noqa: F401 (an autouse fixture: torch on 1 thread)
from typer.testing import CliRunner

import kgengine.api as api
import kgengine.farm.local as local
from kgengine.cli import app
from kgengine.commands._common import one_line
from kgengine.config import KernelGANConfig
from kgengine.farm.manifest import Manifest
from kgengine.farm.runner import run_farm
from kgengine.farm.seeds import content_hash
from kgengine.hooks import JobHooks

SAMPLE = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_lr.png"
CFG = KernelGANConfig(iters=8, lr_decay_every=3, bic_decay_every=2, bic_loss_threshold=10.0)
QUICK = ["--iters", "8", "--device", "cpu", "--threads", "1"]


def photos(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i, name in enumerate(names):
        arr = np.asarray(Image.open(SAMPLE))[i * 8 : i * 8 + 96, :96]
        Image.fromarray(np.roll(arr, int(rng.integers(1, 50)), axis=1)).save(folder / name)
        out.append(folder / name)
    return out


def test_a_photo_too_large_for_memory_fails_alone_in_the_farm(tmp_path, monkeypatch):
    """Before 0.9.26 its MemoryError stopped the run with a traceback and put its whole
    batch back, so every run failed the same way."""
    imgs = photos(tmp_path / "in", ["a.png", "big.png", "c.png"])
    real = local.train_batch

    def train_batch(images, seeds, names, *args, **kw):
        if "big" in names:
            raise MemoryError("Unable to allocate 364. MiB")
        return real(images, seeds, names, *args, **kw)

    monkeypatch.setattr(local, "train_batch", train_batch)
    logs: list[str] = []
    summary = run_farm([tmp_path / "in"], tmp_path / "pool", batch=4, config=CFG,
                       device="cpu", hooks=JobHooks(log=logs.append))
    assert summary.failed == 1 and summary.total["done"] == 2, logs
    assert "out of memory: batch size lowered to 2" in logs
    with Manifest(tmp_path / "pool") as man:
        rows = {r.name: r for r in man.rows()}
    assert rows["big"].state == "failed"
    assert rows["big"].reason == f"{imgs[1]}: out of memory even in a batch of 1"


def test_a_photo_too_large_for_memory_fails_alone_in_estimate(tmp_path, monkeypatch):
    photos(tmp_path / "in", ["a.png", "big.png"])
    real = api.estimate_kernels

    def estimate_kernels(images, *args, names, **kw):
        if any("big" in n for n in names):
            raise MemoryError
        return real(images, *args, names=names, **kw)

    monkeypatch.setattr(api, "estimate_kernels", estimate_kernels)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["estimate", str(tmp_path / "in"), "-o", str(out), *QUICK])
    assert res.exit_code == 1
    assert (f"error: {tmp_path / 'in' / 'big.png'}: not enough memory to estimate its kernel "
            "(96x96 px); downscale it or use a machine with more memory") in res.output
    assert (out / "a_kernel_x2.npy").is_file() and not (out / "big_kernel_x2.npy").exists()


def test_a_file_name_too_long_for_its_outputs_is_shortened(tmp_path):
    """Before 0.9.26 such an image was trained, could not be written, and (farm) was left
    pending to be trained again at every run."""
    name = "a" * 246 + ".png"
    (img,) = photos(tmp_path / "in", [name])
    short = "a" * 160 + "~" + content_hash(img)[:8]
    summary = run_farm([tmp_path / "in"], tmp_path / "pool", config=CFG, device="cpu")
    assert summary.failed == 0 and summary.total["done"] == 1
    assert (tmp_path / "pool" / "kernels" / f"{short}_kernel_x2.npy").is_file()
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["estimate", str(img), "-o", str(out), *QUICK])
    assert res.exit_code == 0, res.output
    assert (f"{img}: its name is too long for its output files; its outputs are named "
            f"'{short}'") in res.output
    assert (out / f"{short}_report.json").is_file()
    res = runner.invoke(app, ["estimate", str(img), "-o", str(out), *QUICK])
    assert res.exit_code == 0 and "(done)" in res.output


def test_a_folder_path_too_long_is_skipped_and_the_others_go_on(tmp_path):
    root = tmp_path / "deep"
    (top,) = photos(root, ["top.png"])
    here = os.getcwd()
    try:
        os.chdir(root)
        for i in range(25):  # a path of about 4700 characters, over PATH_MAX
            os.mkdir(f"d{i:02d}_" + "x" * 180)
            os.chdir(f"d{i:02d}_" + "x" * 180)
    finally:
        os.chdir(here)
    res = CliRunner().invoke(app, ["estimate", str(root), "-r", "-o", str(tmp_path / "out"),
                                   *QUICK])
    assert res.exit_code == 0, res.output
    assert "done" in res.output and (tmp_path / "out" / "top_kernel_x2.npy").is_file()
    assert "cannot read this folder (File name too long)" in res.output


def test_a_long_error_line_keeps_its_reason():
    line = one_line("/".join(["d" * 180] * 10) + ": cannot read file (No such file)", 200)
    assert len(line) == 200 and line.endswith(": cannot read file (No such file)")
    assert "…" in line and line.startswith("d" * 99)
