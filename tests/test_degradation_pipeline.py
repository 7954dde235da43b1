"""``kgengine degrade`` with the pipeline: manifest rebuilds, resume, non-UTF-8 names, kills.

Small images (40-52 px a side) keep these fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
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
    Pipeline,
    PipelineConfig,
    degrade_folder,
    read_manifest,
    rebuild_lr,
    rebuild_pair,
)
from kgengine.degradation.folder import LOCK_FILE, lock_out_dir
from kgengine.degradation.noisebank import NOISE_FILE
from kgengine.errors import KGEngineError
from kgengine.imageio import read_image, to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import load_pool, make_pool, save_pool

SIZES = {"a.png": (48, 40), "b.png": (48, 40), "c.png": (50, 52), "d.png": (51, 47)}
#: Every stage on, shuffled, as the CLI flags below set it.
FLAGS = ("--noise-range", "0-0.03", "--noise-poisson", "--second-order", "--jpeg", "40-90",
         "--shuffle", "--set", "gray_prob=0.5")


def _write_images(folder: Path, sizes: dict[str, tuple[int, int]], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    for name, (h, w) in sizes.items():
        yy, xx = np.mgrid[0:h, 0:w]
        base = 0.5 + 0.3 * np.sin(xx / 3.0 + yy / 5.0)[..., None] * rng.random(3)
        img = np.clip(base + 0.1 * rng.random((h, w, 3)), 0, 1)
        Image.fromarray(to_uint8(img)).save(folder / name, format="PNG")


@pytest.fixture()
def hr_dir(tmp_path) -> Path:
    _write_images(tmp_path / "hr", SIZES)
    return tmp_path / "hr"


@pytest.fixture()
def pool_file(tmp_path) -> Path:
    kernels = [anisotropic_gaussian(13, v1, v2, th) for v1, v2, th in
               [(0.8, 3.0, 0.3), (2.0, 2.0, 0.0), (4.0, 1.0, 1.2)]]
    pool = make_pool(kernels, ["k0", "k1", "k2"], ["p0", "p1", "p2"], 2, seeds=[0, 1, 2])
    return save_pool(tmp_path / "pool", pool)


@pytest.fixture()
def noise_dir(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    patches = 0.02 * rng.standard_normal((5, 16, 16, 3))
    patches -= patches.mean(axis=(1, 2), keepdims=True)
    (tmp_path / "noise").mkdir()
    np.save(tmp_path / "noise" / NOISE_FILE, patches.astype(np.float32))
    return tmp_path / "noise"


def _run(*args: str):
    return CliRunner().invoke(app, ["degrade", *map(str, args)])


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_pipeline_pairs_rebuild_exactly_from_the_manifest(hr_dir, pool_file, noise_dir,
                                                           tmp_path) -> None:
    out = tmp_path / "out"
    res = _run(hr_dir, "-k", pool_file, "-o", out, "--seed", "3", "--noise-patches", noise_dir,
               *FLAGS)
    assert res.exit_code == 0, res.output
    assert "pipeline on cpu" in res.output and "4 pairs written" in res.output
    entries = read_manifest(out / MANIFEST)
    settings = json.loads((out / SETTINGS).read_text())
    pool = load_pool(pool_file)
    pipe = Pipeline(pool, PipelineConfig.from_dict(settings["pipeline"]))
    orders = set()
    for name, e in entries.items():
        assert e["pipeline"] == settings["pipeline"] and e["draws"]["key"] == name
        assert e["draws"] == pipe.draw(3, name).to_dict()  # the draws are (seed, name)'s
        orders.add(tuple(e["draws"]["order"]))
        lr = _png(out / e["lr"])
        assert lr.shape == (*e["lr_size"], 3)
        np.testing.assert_array_equal(rebuild_pair(e, pool), lr)  # bit-exact
        np.testing.assert_array_equal(to_uint8(rebuild_lr(e, pool)), lr)
    assert len(orders) > 1  # shuffled per image
    assert settings["real_noise_fingerprint"] == pipe.bank.fingerprint()
    # the pipeline really degraded: far from the kernel-only LR
    plain = Pipeline(pool).degrade_image(read_image(hr_dir / "a.png"), 3, "a.png")[0]
    assert np.abs(plain.astype(int) - _png(out / "lr" / "a.png")).mean() > 2


def test_toml_pipeline_resume_and_refusal(hr_dir, pool_file, tmp_path) -> None:
    toml = tmp_path / "deg.toml"
    toml.write_text("gaussian_prob = 1.0\ngaussian_sigma = [0.01, 0.02]\njpeg_prob = 1.0\n")
    out = tmp_path / "out"
    args = (hr_dir, "-k", pool_file, "-o", out, "--pipeline", toml)
    assert _run(*args).exit_code == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "lr").iterdir()}
    res = _run(*args)
    assert res.exit_code == 0 and "0 pairs written, 4 already there" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "lr").iterdir()} == mtimes
    e = read_manifest(out / MANIFEST)["c.png"]
    assert e["pipeline"]["jpeg_prob"] == 1.0 and e["draws"]["order"] == ["gaussian", "jpeg"]
    res = _run(*args, "--set", "jpeg_quality=10-20")
    assert res.exit_code == 1
    assert "holds pairs made with pipeline jpeg_quality=[30, 95], not jpeg_quality=[10, 20]" \
        in res.output
    res = _run(hr_dir, "-k", pool_file, "-o", out)  # no pipeline: also refused
    assert res.exit_code == 1 and "holds pairs made with pipeline" in res.output
    res = _run(hr_dir, "-k", pool_file, "-o", tmp_path / "o2", "--set", "colour=1")
    assert res.exit_code == 1 and "unknown key 'colour'" in res.output


def test_without_pipeline_options_the_onnx_job_runs(hr_dir, pool_file, tmp_path) -> None:
    res = _run(hr_dir, "-k", pool_file, "-o", tmp_path / "o", "--noise", "0.01",
               "--provider", "cpu")
    assert res.exit_code == 0 and "provider: cpu" in res.output
    assert "pipeline on" not in res.output
    e = read_manifest(tmp_path / "o" / MANIFEST)["a.png"]
    assert "draws" not in e and e["noise_sigma"] == 0.01
    settings = json.loads((tmp_path / "o" / SETTINGS).read_text())
    assert settings["pipeline"] is None
    with pytest.raises(KGEngineError, match="gaussian_sigma instead"):
        degrade_folder(hr_dir, pool_file, tmp_path / "o3", noise=0.1,
                       pipeline=PipelineConfig(jpeg_prob=1.0))


@pytest.mark.parametrize("pipeline", [False, True])
def test_non_utf8_file_name(hr_dir, pool_file, tmp_path, pipeline: bool) -> None:
    raw = b"caf\xe9_\xff.png"  # Latin-1 bytes: not UTF-8
    name = os.fsdecode(raw)
    _write_images(hr_dir, {name: (44, 42)}, seed=5)
    out = tmp_path / "out"
    extra = ("--jpeg", "50-60") if pipeline else ("--provider", "cpu")
    res = _run(hr_dir, "-k", pool_file, "-o", out, *extra)
    assert res.exit_code == 0, res.output
    assert "5 pairs written" in res.output
    text = (out / MANIFEST).read_bytes()
    text.decode("ascii")  # escaped: valid UTF-8 for any reader
    entries = read_manifest(out / MANIFEST)
    assert name in entries and entries[name]["lr"] == os.fsdecode(b"lr/caf\xe9_\xff") + ".png"
    assert os.path.isfile(os.fsencode(out / "lr") + b"/caf\xe9_\xff.png")  # the raw bytes
    if pipeline:
        np.testing.assert_array_equal(rebuild_pair(entries[name], load_pool(pool_file)),
                                      _png(out / entries[name]["lr"]))
    res = _run(hr_dir, "-k", pool_file, "-o", out, *extra)  # resume finds it by name
    assert res.exit_code == 0 and "0 pairs written, 5 already there" in res.output


KILLER = textwrap.dedent("""
    import os, signal, sys
    from PIL import Image
    from kgengine.degradation import PipelineConfig, degrade_folder
    calls = []
    save = Image.Image.save
    def save_then_die(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == int(sys.argv[4]):  # mid-write: some bytes, then SIGKILL
            with open(fp, "wb") as fh:
                fh.write(b"\\x89PNG partial")
            os.kill(os.getpid(), signal.SIGKILL)
        return save(self, fp, *args, **kwargs)
    Image.Image.save = save_then_die
    cfg = PipelineConfig(gaussian_prob=1.0) if sys.argv[5] == "1" else None
    degrade_folder(sys.argv[1], sys.argv[2], sys.argv[3], batch=1, provider="cpu",
                   pipeline=cfg)
""")


@pytest.mark.parametrize("pipeline", ["0", "1"])
def test_kill_mid_run_then_resume_leaves_no_tmp_files(hr_dir, pool_file, tmp_path,
                                                        pipeline: str) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(hr_dir), str(pool_file), str(out),
                           "3", pipeline], capture_output=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    stale = [p for p in out.rglob("*.tmp")]
    assert stale, "the kill should leave a temporary file behind"
    cfg = PipelineConfig(gaussian_prob=1.0) if pipeline == "1" else None
    report = degrade_folder(hr_dir, pool_file, out, batch=1, provider="cpu", pipeline=cfg)
    assert report.written + report.skipped == 4 and not report.failed
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))
    clean = degrade_folder(hr_dir, pool_file, tmp_path / "clean", batch=1, provider="cpu",
                           pipeline=cfg)
    assert clean.written == 4
    for name in SIZES:  # the resumed folder equals an uninterrupted run
        stem = Path(name).stem
        np.testing.assert_array_equal(_png(out / "lr" / f"{stem}.png"),
                                      _png(tmp_path / "clean" / "lr" / f"{stem}.png"))
    assert sorted(read_manifest(out / MANIFEST)) == sorted(SIZES)


def test_one_job_per_output_folder(hr_dir, pool_file, tmp_path) -> None:
    out = tmp_path / "out"
    with lock_out_dir(out):
        with pytest.raises(KGEngineError, match="another kgengine degrade is writing"):
            degrade_folder(hr_dir, pool_file, out, provider="cpu")
    assert (out / LOCK_FILE).is_file()
    assert degrade_folder(hr_dir, pool_file, out, provider="cpu").written == 4


def test_batch_equals_single_images_and_bad_files(hr_dir, pool_file, noise_dir) -> None:
    cfg = PipelineConfig(second_prob=1.0, gaussian_prob=1.0, poisson_prob=1.0, real_prob=1.0,
                         real_noise=str(noise_dir), jpeg_prob=0.5, shuffle=True)
    pipe = Pipeline(pool_file, cfg)
    hr = torch.rand(6, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    draws = [pipe.draw(0, f"im{i}.png") for i in range(6)]
    batch = pipe.degrade8(hr, draws)
    single = torch.cat([pipe.degrade8(hr[i : i + 1], draws[i : i + 1]) for i in range(6)])
    assert torch.equal(batch, single)
    with pytest.raises(ValueError, match="multiples of 2"):
        pipe.apply(hr[:, :, :39], draws)
    with pytest.raises(ValueError, match="need 3 channels"):
        pipe.apply(hr[:, :1], draws)


def test_a_pair_that_cannot_be_written_fails_alone(hr_dir, pool_file, tmp_path) -> None:
    out = tmp_path / "out"
    (out / "lr" / "b.png").mkdir(parents=True)  # a folder in the way of lr/b.png
    report = degrade_folder(hr_dir, pool_file, out, pipeline=PipelineConfig(jpeg_prob=1.0))
    assert report.written == 3 and len(report.failed) == 1 and "b.png" in report.failed[0]
    assert sorted(read_manifest(out / MANIFEST)) == ["a.png", "c.png", "d.png"]


@pytest.mark.parametrize("pipeline", [False, True])
def test_copy_hr_makes_a_paired_folder(hr_dir, pool_file, tmp_path, pipeline: bool) -> None:
    out = tmp_path / "pairs"
    extra = ("--jpeg", "60-90") if pipeline else ("--provider", "cpu")
    res = _run(hr_dir, "-k", pool_file, "-o", out, "--copy-hr", *extra)
    assert res.exit_code == 0, res.output
    stems = sorted(p.name for p in (out / "lr").iterdir())
    assert sorted(p.name for p in (out / "hr").iterdir()) == stems == [
        f"{n[0]}.png" for n in sorted(SIZES)]
    for name in SIZES:  # HR = s x LR; an uncropped PNG is copied byte for byte
        hr, lr = _png(out / "hr" / name), _png(out / "lr" / name)
        assert hr.shape[:2] == (2 * lr.shape[0], 2 * lr.shape[1])
        if SIZES[name] != (51, 47):
            assert (out / "hr" / name).read_bytes() == (hr_dir / name).read_bytes()
    e = read_manifest(out / MANIFEST)["a.png"]
    assert e["hr"] == "hr/a.png" and e["hr_source"] == str((hr_dir / "a.png").resolve())
    res = _run(hr_dir, "-k", pool_file, "-o", out, *extra)  # without --copy-hr: refused
    assert res.exit_code == 1 and "copy_hr=True, not False" in res.output
