"""The farm: a batched farm equals single runs with the derived seeds; bad files fail alone;
the pool file feeds ``degrade``; inputs, names, seeds, pool statistics; no Ray without --ray."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kgengine.api import estimate_kernels
from kgengine.cli import app
from kgengine.config import KernelGANConfig
from kgengine.errors import KGEngineError
from kgengine.farm.inputs import expand_inputs, unique_names
from kgengine.farm.manifest import Manifest
from kgengine.farm.poolfiles import POOL_X2
from kgengine.farm.poolview import kernel_shape, pool_info, text_histogram
from kgengine.farm.runner import run_farm
from kgengine.farm.seeds import content_hash, derive_seed
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import load_pool

DATA = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"
# as in tests/test_trainer.py: 8 float64 iterations that pass lr decay, bicubic decay and the
# switch-on of the sparse/centre priors; GAN training amplifies rounding ~5x per iteration
# early on, so exactness is checked on short runs only
EXACT = KernelGANConfig(iters=8, lr_decay_every=3, bic_decay_every=2, bic_loss_threshold=10.0)
# five LR images of different sizes (left, top, right, bottom) cut from the bundled sample
BOXES = [(0, 0, 100, 96), (100, 100, 210, 200), (180, 0, 320, 120), (0, 190, 124, 320),
         (200, 200, 320, 316)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """torch on 1 thread: on this shared 2-core machine 2 threads are ~10x slower when busy."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _assert_same_kernel(a: np.ndarray, b: np.ndarray, rtol: float = 1e-6) -> None:
    """Equal up to ``rtol`` of the kernel's largest entry (as tests/test_trainer.py)."""
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.abs(b).max())


def make_images(folder: Path, boxes=BOXES, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with Image.open(DATA) as im:
        for i, box in enumerate(boxes):
            p = folder / f"{prefix}{i}.png"
            im.crop(box).save(p)
            paths.append(p)
    return paths


@pytest.fixture(scope="module")
def farm_run(tmp_path_factory):
    """One float64 farm run, B = 2: five good images, a truncated PNG, a tiny image and a
    byte-identical copy of a good image (in a sub-folder listed by a .txt list)."""
    root = tmp_path_factory.mktemp("farm")
    good = make_images(root / "photos")
    with Image.open(DATA) as im:
        im.crop((0, 0, 40, 40)).save(root / "photos" / "tiny.png")
        im.crop((10, 10, 110, 108)).save(root / "photos" / "corrupt.png")
    data = (root / "photos" / "corrupt.png").read_bytes()
    (root / "photos" / "corrupt.png").write_bytes(data[: len(data) // 2])  # truncated
    (root / "more").mkdir()
    shutil.copy(good[0], root / "more" / "copy_of_img0.png")
    (root / "list.txt").write_text("# extra images\nmore/copy_of_img0.png\n\n")
    pool_dir = root / "pool"
    summary = run_farm([root / "photos", root / "list.txt"], pool_dir, batch=2, config=EXACT,
                       dtype="float64", device="cpu")
    return root, good, pool_dir, summary


def test_farm_equals_single_runs_with_derived_seeds(farm_run):
    _, good, pool_dir, summary = farm_run
    assert summary.done == 5 and summary.batch == 2
    pool = load_pool(pool_dir / POOL_X2)
    with Manifest(pool_dir) as man:
        rows = {Path(r.path).name: r for r in man.rows("done")}
    assert sorted(rows) == [p.name for p in good]
    for p in good:
        row = rows[p.name]
        seed = derive_seed(0, content_hash(p), 0)
        assert row.seed == row.seed_used == seed
        single = estimate_kernels([p], seeds=[seed], config=EXACT, dtype=torch.float64,
                                  device="cpu")[0]
        farm_k = np.load(pool_dir / row.output_paths["x2_npy"])
        _assert_same_kernel(farm_k, single.kernel_x2)
        _assert_same_kernel(pool.kernels[pool.ids.index(row.name)], single.kernel_x2, 1e-5)
        report = json.loads((pool_dir / row.output_paths["report"]).read_text())
        assert report["seed"] == seed and report["image"] == str(p.resolve())


def test_bad_files_fail_with_reasons_and_do_not_block_their_batch(farm_run):
    root, _, pool_dir, summary = farm_run
    assert summary.failed == 2 and summary.duplicates == 1
    with Manifest(pool_dir) as man:
        failed = {Path(r.path).name: r for r in man.rows("failed")}
        assert set(failed) == {"tiny.png", "corrupt.png"}
        assert "truncated" in failed["corrupt.png"].reason
        assert "too small" in failed["tiny.png"].reason
        for r in failed.values():
            assert r.reason.startswith(str(root / "photos"))
        # each bad image was claimed together with a good one, which then finished
        claimed = {}
        for image_id, at, state, _ in man.events():
            if state == "running":
                claimed.setdefault(at, []).append(image_id)
        done_ids = {r.id for r in man.rows("done")}
        for r in failed.values():
            mates = next(ids for ids in claimed.values() if r.id in ids)
            assert set(mates) & done_ids, f"{r.path} shared no batch with a finished image"
        assert man.counts() == {"pending": 0, "running": 0, "done": 5, "failed": 2}


def test_done_rows_have_their_files_and_pool_index(farm_run):
    _, _, pool_dir, _ = farm_run
    with Manifest(pool_dir) as man:
        rows = man.rows("done")
    for r in rows:
        for rel in r.output_paths.values():
            assert (pool_dir / rel).is_file()
    with np.load(pool_dir / POOL_X2, allow_pickle=False) as z:
        index = json.loads(str(z["index"]))
    assert [e["id"] for e in index] == [r.name for r in rows]
    assert [e["source"] for e in index] == [r.path for r in rows]
    assert [e["seed"] for e in index] == [r.seed_used for r in rows]
    assert all(e["report"]["iters"] == EXACT.iters for e in index)
    assert not list(pool_dir.rglob(".*.tmp"))


def test_pool_file_feeds_degrade(farm_run, tmp_path):
    _, _, pool_dir, _ = farm_run
    hr = tmp_path / "hr"
    make_images(hr, [(0, 0, 48, 40), (60, 60, 100, 110)], prefix="hr")
    out = tmp_path / "pairs"
    res = CliRunner().invoke(app, ["degrade", str(hr), "--kernels", str(pool_dir / POOL_X2),
                                   "-o", str(out), "--provider", "cpu"])
    assert res.exit_code == 0, res.output
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    pool = load_pool(pool_dir / POOL_X2)
    assert len(entries) == 2
    for e in entries:
        assert e["kernel_id"] in pool.ids
        with Image.open(out / e["lr"]) as lr:
            assert lr.size == (e["crop"][1] // 2, e["crop"][0] // 2)


def test_pool_info_and_plot_commands(farm_run, tmp_path):
    _, _, pool_dir, _ = farm_run
    runner = CliRunner()
    res = runner.invoke(app, ["pool", "info", str(pool_dir)])
    assert res.exit_code == 0, res.output
    assert "kernels: 5" in res.output and "13x13" in res.output and "anisotropy" in res.output
    mosaic, hist = tmp_path / "mosaic.png", tmp_path / "hist.png"
    res = runner.invoke(app, ["pool", "plot", str(pool_dir / POOL_X2), "-o", str(mosaic),
                              "--hist", str(hist), "--columns", "3"])
    assert res.exit_code == 0, res.output
    with Image.open(mosaic) as m, Image.open(hist) as h:
        assert m.width > m.height > 0 and h.width > 0  # 2 rows of 3 cells
    res = runner.invoke(app, ["pool", "info", str(tmp_path / "nope.npz")])
    assert res.exit_code == 1 and "no such kernel pool" in res.output


def test_kernel_shape_of_known_gaussian():
    k = anisotropic_gaussian(41, 4.0, 1.0, 0.6)  # std 2 along 0.6 rad, 1 across
    major, minor, angle = kernel_shape(k)
    assert major == pytest.approx(2.0, abs=1e-4)
    assert minor == pytest.approx(1.0, abs=1e-4)
    assert angle == pytest.approx(0.6, abs=1e-4)
    lines = text_histogram(np.array([1.0, 1.0, 1.5, 3.0]), bins=2, width=10)
    assert lines[0].endswith("| ########## 3") and lines[1].endswith("| ### 1")


def test_pool_info_counts(tmp_path):
    from kgengine.pool import make_pool, save_pool

    ks = [anisotropic_gaussian(13, v, v, 0.0) for v in (1.0, 1.0, 2.25)]
    save_pool(tmp_path, make_pool(ks, ["a", "b", "c"], ["a", "b", "c"], 2))
    text = pool_info(tmp_path)
    assert "kernels: 3" in text and "median 1.0" in text


def test_seeds_depend_on_content_not_location(tmp_path):
    a = make_images(tmp_path / "x", BOXES[:1])[0]
    b = tmp_path / "y" / "renamed.png"
    b.parent.mkdir()
    shutil.copy(a, b)
    assert content_hash(a) == content_hash(b)
    h = content_hash(a)
    seeds = {derive_seed(0, h, 0), derive_seed(0, h, 1), derive_seed(1, h, 0),
             derive_seed(0, "0" * 64, 0)}
    assert len(seeds) == 4 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, h, 0) == derive_seed(0, h, 0)


def test_expand_inputs(tmp_path):
    make_images(tmp_path / "f", BOXES[:2])  # img0.png, img1.png
    (tmp_path / "f" / "notes.md").write_text("x")
    (tmp_path / "f" / ".hidden.png").write_bytes(b"")
    make_images(tmp_path / "f" / "sub", BOXES[:1], prefix="deep")
    (tmp_path / "l.txt").write_text("# list\nf/img1.png\n\n/nowhere/x.png\nf/sub\n")
    flat = expand_inputs([tmp_path / "f"])
    assert [p.name for p in flat] == ["img0.png", "img1.png"]
    rec = expand_inputs([tmp_path / "f"], recursive=True)
    assert [p.name for p in rec] == ["img0.png", "img1.png", "deep0.png"]
    listed = expand_inputs([tmp_path / "l.txt", tmp_path / "f"])
    f = tmp_path / "f"
    assert [str(p) for p in listed] == [
        str(f / "img1.png"), "/nowhere/x.png", str(f / "sub" / "deep0.png"), str(f / "img0.png")]
    with pytest.raises(KGEngineError, match="no such file or folder"):
        expand_inputs([tmp_path / "missing"])


def test_unique_names():
    paths = [Path("/a/x.png"), Path("/b/x.png"), Path("/c/y.png"), Path("/d/z.png")]
    names = unique_names(paths, ["aa" * 32, "bb" * 32, "cc" * 32, None], taken={"z"})
    assert names[0] == "x-aaaaaaaa" and names[1] == "x-bbbbbbbb" and names[2] == "y"
    assert names[3].startswith("z-") and len(set(names)) == 4


def test_cli_farm_runs_without_importing_ray(tmp_path):
    imgs = make_images(tmp_path / "in", BOXES[:1])
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('RAY_IMPORTED', 'ray' in sys.modules))\n"
        f"sys.argv = ['kgengine', 'farm', {str(imgs[0])!r}, '-o', {str(tmp_path / 'pool')!r},"
        " '--iters', '2', '--device', 'cpu', '--seed', '7', '--x4']\n"
        "runpy.run_module('kgengine', run_name='__main__')\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert "RAY_IMPORTED False" in res.stdout
    assert "1 done, 0 failed" in res.stdout
    x4 = load_pool(tmp_path / "pool" / "kernel_pool_x4.npz")
    assert x4.scale == 4 and x4.kernel_size == 37 and len(x4) == 1
    # options left out on a rerun take the pool's settings; a different one is refused
    res = CliRunner().invoke(app, ["farm", "-o", str(tmp_path / "pool"), "--seed", "8"])
    assert res.exit_code == 1 and "seed (pool: 7, given: 8)" in res.output
    res = CliRunner().invoke(app, ["farm", "-o", str(tmp_path / "pool")])
    assert res.exit_code == 0 and "1 skipped" in res.output


def test_farm_with_restarts_matches_estimate_kernels_and_stores_confidence(tmp_path):
    """The real estimator (4 iterations): the farm's kernel and confidence are those of
    ``estimate_kernels(restarts=2)`` with the derived seed."""
    img = make_images(tmp_path / "in", BOXES[:1])[0]
    cfg = EXACT.replace(iters=4)
    summary = run_farm([img], tmp_path / "pool", batch=1, config=cfg, dtype="float64",
                       device="cpu", restarts=2)
    assert summary.done == 1
    seed = derive_seed(0, content_hash(img), 0)
    single = estimate_kernels([img], seeds=[seed], config=cfg, dtype=torch.float64,
                              device="cpu", restarts=2)[0]
    assert single.confidence is not None and 0.0 <= single.confidence <= 1.0
    with Manifest(tmp_path / "pool") as man:
        (row,) = man.rows("done")
    assert row.confidence == pytest.approx(single.confidence, rel=1e-9)
    report = json.loads((tmp_path / "pool" / row.output_paths["report"]).read_text())
    assert report["restarts"]["k"] == 2 and report["confidence"] == row.confidence
    _assert_same_kernel(np.load(tmp_path / "pool" / row.output_paths["x2_npy"]),
                        single.kernel_x2)
    pool = load_pool(tmp_path / "pool")
    assert pool.confidences.tolist() == [row.confidence]
