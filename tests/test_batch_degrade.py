"""``kgengine degrade``: pairs, manifest, reproducibility, resume, bad files (CliRunner)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kgengine.cli import app
from kgengine.degradation import (
    MANIFEST,
    degrade_folder,
    kernel_row,
    noise_seed,
    read_manifest,
    rebuild_lr,
)
from kgengine.errors import KGEngineError
from kgengine.hooks import JobHooks
from kgengine.imageio import to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import load_pool, make_pool, save_pool
from kgengine.providers import cuda_device_count

SIZES = {"a.png": (48, 40), "b.png": (48, 40), "c.png": (50, 50), "d.png": (51, 47)}


@pytest.fixture()
def hr_dir(tmp_path) -> Path:
    """Four small RGB photos-ish images; d.png has odd sides (cropped for x2)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "hr"
    folder.mkdir()
    for name, (h, w) in SIZES.items():
        yy, xx = np.mgrid[0:h, 0:w]
        base = 0.5 + 0.3 * np.sin(xx / 3.0 + yy / 5.0)[..., None] * rng.random(3)
        img = np.clip(base + 0.1 * rng.random((h, w, 3)), 0, 1)
        Image.fromarray(to_uint8(img)).save(folder / name)
    return folder


@pytest.fixture()
def pool_file(tmp_path) -> Path:
    kernels = [anisotropic_gaussian(13, v1, v2, th) for v1, v2, th in
               [(0.8, 3.0, 0.3), (2.0, 2.0, 0.0), (4.0, 1.0, 1.2)]]
    kernels[2][2, 9] += 0.05  # not symmetric
    pool = make_pool(kernels, ["k0", "k1", "k2"], ["p0.png", "p1.png", "p2.png"], 2,
                     seeds=[0, 1, 2])
    return save_pool(tmp_path / "pool", pool)


def _run(*args: str):
    return CliRunner().invoke(app, ["degrade", *args])


def _lr_png(out: Path, entry: dict) -> np.ndarray:
    return np.asarray(Image.open(out / entry["lr"]), dtype=np.int32)


def test_degrade_writes_pairs_and_manifest(hr_dir, pool_file, tmp_path) -> None:
    out = tmp_path / "out"
    res = _run(str(hr_dir), "--kernels", str(pool_file), "-o", str(out), "--seed", "5",
               "--batch", "2", "--provider", "cpu")
    assert res.exit_code == 0, res.output
    assert "4 pairs written, 0 already there, 0 failed" in res.output
    assert "provider: cpu" in res.output
    entries = read_manifest(out / MANIFEST)
    assert sorted(entries) == sorted(SIZES)
    lines = (out / MANIFEST).read_text().splitlines()
    assert [json.loads(x)["name"] for x in lines] == sorted(SIZES)  # rewritten sorted
    pool = load_pool(pool_file)
    for name, (h, w) in SIZES.items():
        e = entries[name]
        ch, cw = h - h % 2, w - w % 2
        assert e["crop"] == [ch, cw] and e["hr_size"] == [h, w]
        assert e["lr_size"] == [ch // 2, cw // 2] and e["scale"] == 2
        assert e["kernel_row"] == kernel_row(5, name, 3)
        assert e["kernel_id"] == pool.ids[e["kernel_row"]]
        assert e["noise_sigma"] == 0.0 and e["noise_seed"] is None and e["provider"] == "cpu"
        assert e["hr_source"] == str((hr_dir / name).resolve())
        lr = _lr_png(out, e)
        assert lr.shape == (ch // 2, cw // 2, 3)
        # the HR of the pair: the original, or a cropped copy when a side was odd
        hr = np.asarray(Image.open(out / e["hr"] if e["hr"].startswith("hr/") else e["hr"]))
        assert hr.shape[:2] == (2 * lr.shape[0], 2 * lr.shape[1])
        if (h, w) != (ch, cw):
            assert e["hr"] == f"hr/{Path(name).stem}.png"
            np.testing.assert_array_equal(hr, np.asarray(Image.open(hr_dir / name))[:ch, :cw])
        else:
            assert e["hr"] == e["hr_source"]
        # anyone can rebuild the pair from the manifest (PyTorch reference, float64)
        ref = to_uint8(rebuild_lr(e, pool)).astype(np.int32)
        assert np.abs(lr - ref).max() <= 1  # float32 vs float64 at a rounding boundary
    assert len({entries[n]["kernel_row"] for n in SIZES}) > 1  # kernels do differ


def test_second_run_skips_and_keeps_manifest(hr_dir, pool_file, tmp_path) -> None:
    out = tmp_path / "out"
    args = (str(hr_dir), "-k", str(pool_file), "-o", str(out), "--provider", "cpu")
    assert _run(*args).exit_code == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "lr").iterdir()}
    manifest = (out / MANIFEST).read_text()
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert "0 pairs written, 4 already there, 0 failed" in res.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "lr").iterdir()} == mtimes
    assert (out / MANIFEST).read_text() == manifest
    # a lost output is made again, and only that one
    (out / "lr" / "b.png").unlink()
    res = _run(*args)
    assert "1 pairs written, 3 already there" in res.output
    assert (out / "lr" / "b.png").is_file()
    assert (out / "lr" / "a.png").stat().st_mtime_ns == mtimes["a.png"]
    # other settings into the same folder are refused
    res = _run(*args[:-2], "--seed", "1")
    assert res.exit_code == 1 and "seed=0, not 1" in res.output


def test_corrupt_file_is_reported_and_others_finish(hr_dir, pool_file, tmp_path) -> None:
    (hr_dir / "broken.png").write_bytes((hr_dir / "a.png").read_bytes()[:60])  # truncated
    Image.new("RGB", (12, 30)).save(hr_dir / "tiny.png")  # side 12 <= kernel size 13
    out = tmp_path / "out"
    res = _run(str(hr_dir), "-k", str(pool_file), "-o", str(out), "--batch", "8")
    assert res.exit_code == 1
    assert "4 pairs written, 0 already there, 2 failed" in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert any("broken.png" in e for e in errors)
    assert any("tiny.png" in e and "must exceed the kernel size 13" in e for e in errors)
    assert sorted(read_manifest(out / MANIFEST)) == sorted(SIZES)


def test_noise_is_reproducible_by_seed(hr_dir, pool_file, tmp_path) -> None:
    outs = [tmp_path / "n1", tmp_path / "n2"]
    for out, batch in zip(outs, ("1", "3"), strict=True):  # the batch size changes nothing
        res = _run(str(hr_dir), "-k", str(pool_file), "-o", str(out), "--noise", "0.03",
                   "--seed", "2", "--batch", batch)
        assert res.exit_code == 0, res.output
    pool = load_pool(pool_file)
    e1, e2 = read_manifest(outs[0] / MANIFEST), read_manifest(outs[1] / MANIFEST)
    for name in SIZES:
        assert e1[name]["noise_seed"] == noise_seed(2, name) == e2[name]["noise_seed"]
        lr1, lr2 = _lr_png(outs[0], e1[name]), _lr_png(outs[1], e2[name])
        assert np.abs(lr1 - lr2).max() <= 1
        ref = to_uint8(rebuild_lr(e1[name], pool)).astype(np.int32)
        assert np.abs(lr1 - ref).max() <= 1
    # noise was really added: differs from the noiseless rebuild
    e = dict(e1["a.png"], noise_sigma=0.0)
    clean = to_uint8(rebuild_lr(e, pool)).astype(np.int32)
    assert np.abs(_lr_png(outs[0], e1["a.png"]) - clean).mean() > 3


def test_kernel_assignment_is_stable_when_files_are_added(hr_dir, pool_file, tmp_path) -> None:
    small = tmp_path / "hr_small"
    small.mkdir()
    for name in ("a.png", "c.png"):
        shutil.copy(hr_dir / name, small / name)
    pool = load_pool(pool_file)
    r_small = degrade_folder(small, pool, tmp_path / "o1", seed=9, provider="cpu")
    r_all = degrade_folder(hr_dir, pool, tmp_path / "o2", seed=9, provider="cpu")
    assert (r_small.written, r_all.written, r_all.failed) == (2, 4, [])
    m1, m2 = read_manifest(r_small.manifest), read_manifest(r_all.manifest)
    for name in ("a.png", "c.png"):
        assert m1[name]["kernel_row"] == m2[name]["kernel_row"]
        np.testing.assert_array_equal(_lr_png(tmp_path / "o1", m1[name]),
                                      _lr_png(tmp_path / "o2", m2[name]))


def test_hooks_report_each_file(hr_dir, pool_file, tmp_path) -> None:
    (hr_dir / "broken.png").write_bytes(b"not a png")
    calls: list[tuple] = []
    hooks = JobHooks(log=lambda m: calls.append(("log", m)),
                     total=lambda n: calls.append(("total", n)),
                     item_finished=lambda *a: calls.append(("item", *a)))
    report = degrade_folder(hr_dir, pool_file, tmp_path / "o", provider="cpu", hooks=hooks)
    assert calls[:2] == [("total", 5), ("log", "provider: cpu")]  # named: no notes
    items = {c[1]: c[2:] for c in calls if c[0] == "item"}
    assert {n: s for n, (s, _) in items.items()} == {**dict.fromkeys(SIZES, "done"),
                                                     "broken.png": "failed"}
    assert items["broken.png"][1] == report.failed[0] and "broken.png" in report.failed[0]
    calls.clear()
    (hr_dir / "broken.png").unlink()
    degrade_folder(hr_dir, pool_file, tmp_path / "o", provider="cpu", hooks=hooks)
    assert calls == [("total", 4)] + [("item", n, "skipped", "") for n in sorted(SIZES)]


def test_kernel_row_spreads_over_the_pool() -> None:
    rows = [kernel_row(0, f"img_{i:04d}.png", 7) for i in range(700)]
    counts = np.bincount(rows, minlength=7)
    assert counts.min() > 60  # ~100 each for a uniform hash
    assert kernel_row(0, "x.png", 7) == kernel_row(0, "x.png", 7)
    assert [kernel_row(s, "x.png", 1000) for s in range(5)] != [kernel_row(0, "x.png", 1000)] * 5


def test_folder_of_kernels_and_errors(hr_dir, tmp_path) -> None:
    kdir = tmp_path / "kernels"
    kdir.mkdir()
    np.save(kdir / "g.npy", anisotropic_gaussian(11, 1.0, 2.0, 0.5))
    report = degrade_folder(hr_dir, kdir, tmp_path / "o", scale=2, provider="cpu")
    assert report.written == 4 and report.provider == "cpu"
    assert {e["kernel_id"] for e in read_manifest(report.manifest).values()} == {"g"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(KGEngineError, match="no images"):
        degrade_folder(tmp_path / "empty", kdir, tmp_path / "o3")
    with pytest.raises(KGEngineError, match="batch must be >= 1"):
        degrade_folder(hr_dir, kdir, tmp_path / "o4", batch=0)
    (hr_dir / "a.jpg").write_bytes(b"")
    with pytest.raises(KGEngineError, match="same stem"):
        degrade_folder(hr_dir, kdir, tmp_path / "o5")


@pytest.mark.skipif(cuda_device_count()[0] > 0, reason="checks the no-GPU error path")
def test_named_gpu_provider_without_gpu_is_a_clear_error(hr_dir, pool_file, tmp_path) -> None:
    res = _run(str(hr_dir), "-k", str(pool_file), "-o", str(tmp_path / "o"), "--provider", "cuda")
    assert res.exit_code == 1
    assert "provider 'cuda' cannot run here" in res.output


def test_help_lists_the_options() -> None:
    res = CliRunner().invoke(app, ["degrade", "--help"])
    assert res.exit_code == 0
    for opt in ("--kernels", "--out", "--scale", "--noise", "--provider", "--batch", "--seed",
                "--pipeline", "--noise-range", "--noise-poisson", "--noise-patches",
                "--second-order", "--jpeg", "--shuffle", "--set"):
        assert opt in res.output
    res = CliRunner().invoke(app, ["export", "--help"])
    assert res.exit_code == 0
    assert all(kind in res.output for kind in ("fixed", "pool", "generator"))
