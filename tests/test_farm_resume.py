"""Farm durability: SIGKILL mid-job then resume (every image done exactly once), divergence
retry with the next seed, write failures never mark rows done, recovery, locking, settings."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kgengine.api import EstimateResult
from kgengine.cli import app
from kgengine.config import KernelGANConfig
from kgengine.errors import KGEngineError, TrainingDivergedError
from kgengine.farm import batching, records, training
from kgengine.farm.manifest import Manifest, NewImage, lock_pool_dir
from kgengine.farm.poolfiles import POOL_X2
from kgengine.farm.runner import run_farm
from kgengine.farm.seeds import content_hash, derive_seed
from kgengine.farm.settings import check_same, resolve_settings
from kgengine.kernel import gaussian_kernel
from kgengine.pool import load_pool
from kgengine.stopping import StopRule, stop_setting

DATA = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"
BOXES = [(0, 0, 96, 96), (100, 100, 196, 196), (200, 0, 296, 96), (0, 200, 96, 296)]


def make_images(folder: Path, boxes=BOXES) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(DATA) as im:
        for i, box in enumerate(boxes):
            im.crop(box).save(folder / f"p{i}.png")
    return [folder / f"p{i}.png" for i in range(len(boxes))]


def _states(db_path: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT name, state FROM images").fetchall())
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        db.close()


def test_sigkill_then_resume_finishes_every_image_exactly_once(tmp_path):
    folder = tmp_path / "photos"
    make_images(folder)
    pool = tmp_path / "pool"
    args = ["farm", str(folder), "-o", str(pool), "--iters", "25", "--batch", "2",
            "--device", "cpu", "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "kgengine", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = pool / "manifest.sqlite"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and "done" in _states(db).values():
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the farm finished or died before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = _states(db)
    done_before = sorted(n for n, s in before.items() if s == "done")
    assert 1 <= len(done_before) < 4, before
    with Manifest(pool) as man:
        reports = {r.name: pool / r.output_paths["report"] for r in man.rows("done")}
    mtimes = {n: p.stat().st_mtime_ns for n, p in reports.items()}

    res = CliRunner().invoke(app, args)  # the same command again
    assert res.exit_code == 0, res.output
    assert f"{len(done_before)} skipped" in res.output
    with Manifest(pool) as man:
        assert man.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}
        for r in man.rows():
            states = [e[2] for e in man.events(r.id)]
            assert states.count("done") == 1, (r.name, states)
            for rel in r.output_paths.values():
                assert (pool / rel).is_file()
        killed = [r for r in man.rows() if r.attempts == 2]
        for r in killed:  # claimed by the killed job, put back, then trained again
            assert [e[2] for e in man.events(r.id)] == ["pending", "running", "pending",
                                                        "running", "done"]
    for n in done_before:  # finished before the kill: not redone
        assert reports[n].stat().st_mtime_ns == mtimes[n]
    assert not [p for p in pool.rglob("*") if p.name.endswith(".tmp")]
    assert len(load_pool(pool / POOL_X2)) == 4


# ---------------------------------------------------------------------- fake training
class FakeTrainer:
    """Stands in for ``estimate_kernels``: a Gaussian kernel per image, or a divergence for
    the (name, seed) pairs in ``diverge``. Records the calls (names, seeds) and the restarts
    asked; with restarts > 1 each result's confidence is :func:`fake_confidence` of its seed,
    as ``estimate_kernels`` sets it (None for one training)."""

    def __init__(self, diverge=()):
        self.diverge = set(diverge)
        self.calls: list[tuple[list[str], list[int]]] = []
        self.restarts: list[int] = []
        self.stops: list = []

    def __call__(self, images, *, seeds, names, x4, device, config, dtype, mode, callback,
                 on_diverge, restarts, stop):
        assert on_diverge == "return" and len(images) == len(seeds) == len(names)
        self.calls.append((list(names), list(seeds)))
        self.restarts.append(restarts)
        self.stops.append(stop)
        out = []
        for name, seed in zip(names, seeds, strict=True):
            if (name, seed) in self.diverge or (name, "*") in self.diverge:
                out.append(TrainingDivergedError(f"{name}: training diverged with seed {seed}"))
                continue
            k = gaussian_kernel(13, 1.0 + (seed % 7) / 10)
            conf = fake_confidence(seed) if restarts > 1 else None
            report = {"seed": seed, "train_s": 0.01, "iters": config.iters, "confidence": conf}
            out.append(EstimateResult(name, k, None, report, [np.zeros((1, 1, 1, 1))], k, conf))
        return out


def fake_confidence(seed: int) -> float:
    """A confidence in [0.5, 1) that differs between images (their seeds differ)."""
    return 0.5 + (seed % 1000) / 2000


@pytest.fixture
def photos(tmp_path):
    return make_images(tmp_path / "photos")


def test_diverged_image_is_retried_once_with_the_next_seed(photos, tmp_path, monkeypatch):
    h0, h1 = content_hash(photos[0]), content_hash(photos[1])
    fake = FakeTrainer({("p0", derive_seed(0, h0, 0)), ("p1", "*")})
    monkeypatch.setattr(training, "estimate_kernels", fake)
    summary = run_farm(photos, tmp_path / "pool", batch=4, device="cpu")
    assert (summary.done, summary.failed, summary.retried) == (3, 1, 2)
    with Manifest(tmp_path / "pool") as man:
        rows = {r.name: r for r in man.rows()}
    assert rows["p0"].state == "done" and rows["p0"].seed_used == derive_seed(0, h0, 1)
    assert rows["p0"].attempts == 2 and rows["p0"].diverged == 1
    assert rows["p1"].state == "failed" and rows["p1"].attempts == 2
    assert "diverged" in rows["p1"].reason and "attempt 2 of 2" in rows["p1"].reason
    # second round trains only the two diverged images, with their attempt-1 seeds
    assert fake.calls[1] == (["p0", "p1"], [derive_seed(0, h0, 1), derive_seed(0, h1, 1)])
    assert len(load_pool(tmp_path / "pool" / POOL_X2)) == 3


def test_failed_write_never_marks_done(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "estimate_kernels", FakeTrainer())
    real = records.write_outputs
    calls = []

    def flaky(result, outdir):
        calls.append(result.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(result, outdir)

    monkeypatch.setattr(records, "write_outputs", flaky)
    with pytest.raises(OSError):
        run_farm(photos, tmp_path / "pool", batch=2, device="cpu")
    with Manifest(tmp_path / "pool") as man:
        states = {r.name: r.state for r in man.rows()}
    assert states == {"p0": "done", "p1": "pending", "p2": "pending", "p3": "pending"}
    monkeypatch.setattr(records, "write_outputs", real)
    summary = run_farm([], tmp_path / "pool", device="cpu")
    assert (summary.skipped, summary.done, summary.batch) == (1, 3, batching.CPU_BATCH)


def test_deleted_outputs_are_redone_and_running_rows_recovered(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "estimate_kernels", FakeTrainer())
    pool = tmp_path / "pool"
    run_farm(photos, pool, batch=4, device="cpu")
    with Manifest(pool) as man:
        rows = man.rows()
        (pool / rows[0].output_paths["report"]).unlink()
        man.requeue([rows[1].id], "test")
        man.claim([rows[1].id])  # as a killed job leaves it
    summary = run_farm(photos, pool, device="cpu")
    assert (summary.recovered, summary.done, summary.skipped) == (1, 2, 2)
    with Manifest(pool) as man:
        assert man.counts()["done"] == 4
        assert (pool / man.rows()[0].output_paths["report"]).is_file()


def test_recover_and_claim(tmp_path):
    with Manifest(tmp_path) as man:
        man.add([NewImage("a", "/a.png", "00", 10, 10, 1), NewImage("b", "/b.png", "11", 9, 9, 2)])
        ids = [r.id for r in man.rows()]
        man.claim(ids)
        with pytest.raises(KGEngineError, match="not pending"):
            man.claim(ids[:1])
    with Manifest(tmp_path) as man:  # reopened as after a kill
        assert man.counts()["running"] == 2
        assert man.recover() == 2
        assert [r.name for r in man.pending()] == ["b", "a"]  # smaller image first
        assert [e[2] for e in man.events(ids[0])] == ["pending", "running", "pending"]
        assert man.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_second_farm_on_the_same_folder_is_refused(photos, tmp_path):
    with lock_pool_dir(tmp_path / "pool"):
        with pytest.raises(KGEngineError, match="another farm process"):
            run_farm(photos, tmp_path / "pool", device="cpu")


def test_settings_are_kept_and_checked():
    new = resolve_settings(None, seed=3, iters=50, dtype="float64")
    stored = new.to_dict()
    again = resolve_settings(stored)
    assert again == new and again.config.iters == 50
    assert resolve_settings(stored, seed=3, iters=50) == new
    with pytest.raises(KGEngineError, match=r"config.iters \(pool: 50, given: 60\)"):
        resolve_settings(stored, iters=60)
    with pytest.raises(KGEngineError, match="x4"):
        resolve_settings(stored, x4=True)
    with pytest.raises(KGEngineError, match="dtype"):
        resolve_settings(None, dtype="float16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_batch_fits_gpu_memory():
    settings = resolve_settings(None)
    dev = torch.device("cuda")
    per_image, base = batching.measure_gpu_footprint(dev, settings)
    assert per_image > 0
    b = batching.auto_batch(dev, settings, 500 * 500)
    free, _ = torch.cuda.mem_get_info(dev)
    assert 1 <= b <= batching.MAX_AUTO_BATCH
    assert base + b * per_image <= free


def test_gpu_batch_size_comes_from_total_memory_unless_the_gpu_is_busy():
    """GPU kernels depend on the batch size, so the automatic B must not follow the free
    memory of the moment: one GPU model gives one B, unless other processes hold so much
    that it would not fit (then the free memory decides)."""
    gib = 2.0**30
    total, base, item = 24 * gib, 0.5 * gib, 0.1 * gib
    want = int((0.8 * total - base) // item)  # 187
    for free in (23.5 * gib, 22.0 * gib):  # idle, or a little taken by another process
        assert batching.batch_for_memory(total, free, base, item) == want
    busy = 12 * gib
    assert batching.batch_for_memory(total, busy, base, item) == int((0.8 * busy - base) // item)
    assert batching.batch_for_memory(total, 0.2 * gib, base, item) == 1
    huge = 1000 * gib
    assert batching.batch_for_memory(huge, huge, base, item) == batching.MAX_AUTO_BATCH


def test_out_of_memory_halves_the_batch(photos, tmp_path, monkeypatch):
    fake = FakeTrainer()

    def small_only(images, **kw):
        if len(images) > 1:
            fake.calls.append((list(kw["names"]), "oom"))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return fake(images, **kw)

    monkeypatch.setattr(training, "estimate_kernels", small_only)
    summary = run_farm(photos, tmp_path / "pool", batch=4, device="cpu")
    assert (summary.done, summary.failed, summary.batch) == (4, 0, 1)
    assert [len(names) for names, _ in fake.calls] == [4, 2, 1, 1, 1, 1]


# ---------------------------------------------------------------------- restarts, confidence
# the ``images`` table as manifests were created before the ``confidence`` column existed
OLD_IMAGES_TABLE = """
CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, path TEXT NOT NULL UNIQUE,
    sha256 TEXT, width INTEGER, height INTEGER, seed INTEGER,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    reason TEXT, attempts INTEGER NOT NULL DEFAULT 0, diverged INTEGER NOT NULL DEFAULT 0,
    seed_used INTEGER, added_at REAL NOT NULL, started_at REAL, finished_at REAL, train_s REAL,
    outputs TEXT
);
"""


def _columns(db_path: Path) -> list[str]:
    db = sqlite3.connect(db_path)
    try:
        return [r[1] for r in db.execute("PRAGMA table_info(images)")]
    finally:
        db.close()


def test_old_manifest_gets_the_confidence_column(tmp_path):
    db = sqlite3.connect(tmp_path / "manifest.sqlite")
    db.executescript(OLD_IMAGES_TABLE)
    db.execute("INSERT INTO images (name, path, sha256, state, seed_used, added_at, outputs)"
               " VALUES ('old', '/old.png', 'aa', 'done', 5, 1.0, '{}')")
    db.execute("INSERT INTO images (name, path, sha256, state, added_at)"
               " VALUES ('new', '/new.png', 'bb', 'pending', 2.0)")
    db.commit()
    db.close()
    assert "confidence" not in _columns(tmp_path / "manifest.sqlite")
    with Manifest(tmp_path) as man:
        assert _columns(tmp_path / "manifest.sqlite")[-3:] == [
            "confidence", "file_size", "file_mtime_ns"]  # 0.9.26's too
        old, new = man.rows()
        assert old.state == "done" and old.seed_used == 5 and old.confidence is None
        assert old.file_size is None and old.file_mtime_ns is None
        man.claim([new.id])
        man.mark_done(new.id, 7, 0.5, {}, confidence=0.75)
    with Manifest(tmp_path) as man:  # opened again: the column is not added twice
        assert [r.confidence for r in man.rows()] == [None, 0.75]
    assert [_columns(tmp_path / "manifest.sqlite").count(c)
            for c in ("confidence", "file_size", "file_mtime_ns")] == [1, 1, 1]


def test_settings_without_restarts_read_as_one():
    stored = resolve_settings(None, seed=3).to_dict()
    assert stored["restarts"] == 1
    del stored["restarts"]  # as an older pool stored its settings
    assert resolve_settings(stored).restarts == 1
    assert resolve_settings(stored, restarts=1).restarts == 1
    with pytest.raises(KGEngineError, match=r"restarts \(pool: 1, given: 3\)"):
        resolve_settings(stored, restarts=3)
    with pytest.raises(KGEngineError, match="restarts must be at least 1, got 0"):
        resolve_settings(None, restarts=0)


def test_settings_without_restart_iters_keep_full_length_restarts():
    # a pool from before 0.8 trained each restart for ``iters``; resuming it must too
    stored = resolve_settings(None, restarts=4).to_dict()
    assert stored["config"]["restart_iters"] == 1250
    assert resolve_settings(stored).config.run_iters(4) == 1250
    # a pool of 0.8-0.9.17 (restarts of 1500) resumes with its own length
    before = {**stored, "config": {**stored["config"], "restart_iters": 1500}}
    assert resolve_settings(before).config.run_iters(4) == 1500
    with pytest.raises(KGEngineError, match=r"config.restart_iters \(pool: 1500, given: 1250\)"):
        resolve_settings(before, config=KernelGANConfig())
    del stored["config"]["restart_iters"]
    old = resolve_settings(stored)
    assert old.config.run_iters(4) == 3000 and resolve_settings(stored, iters=3000) == old
    given = resolve_settings(None, restarts=4, iters=200)
    assert given.config.run_iters(4) == 200 and given.config.run_iters(1) == 200
    # one run does not depend on restart_iters: --iters 3000 resumes a default one-run pool
    one = resolve_settings(None).to_dict()
    assert resolve_settings(one, iters=3000).config.run_iters(1) == 3000
    with pytest.raises(KGEngineError, match=r"config.restart_iters \(pool: 1250, given: 3000\)"):
        resolve_settings(resolve_settings(None, restarts=4).to_dict(), iters=3000)


def test_settings_without_elongation_power_keep_the_elongation():
    # a pool from before 0.9 saved its kernels unshrunk; resuming it must too, so that one
    # pool holds one kind of kernel
    stored = resolve_settings(None).to_dict()
    assert stored["config"]["elongation_power"] == 0.4
    del stored["config"]["elongation_power"]
    assert resolve_settings(stored).config.elongation_power == 1.0


def test_settings_without_width_calibration_keep_the_width():
    # a pool from before 0.9.4 saved its kernels uncalibrated; resuming it must too, and the
    # new default is refused rather than mixed into it
    stored = resolve_settings(None).to_dict()
    assert stored["config"]["width_calibration"] is True
    del stored["config"]["width_calibration"], stored["config"]["width_prior"]
    old = resolve_settings(stored)
    assert old.config.width_calibration is False
    with pytest.raises(KGEngineError,
                       match=r"config.width_calibration \(pool: False, given: True\)"):
        check_same(old, resolve_settings(None))


def test_settings_without_elongation_choice_keep_the_shrink():
    # a pool from 0.9.4 saved the shrunk kernels: resuming it must too, and the new default
    # is refused rather than mixed into it
    stored = resolve_settings(None).to_dict()
    assert stored["config"]["elongation_choice"] is True
    del stored["config"]["elongation_choice"]
    old = resolve_settings(stored)
    assert old.config.width_calibration and not old.config.chooses_elongation()
    with pytest.raises(KGEngineError,
                       match=r"config.elongation_choice \(pool: False, given: True\)"):
        check_same(old, resolve_settings(None))


@pytest.mark.parametrize(("key", "legacy", "now"), [
    ("spectral_mix", 0.0, 0.5),  # a pool from 0.9.5 saved unmixed kernels
    ("spectral_confidence", False, True),  # a pool from 0.9.6: the restarts' agreement
    ("width_refine", False, True),  # a pool from 0.9.7: the calibration's grid point
    ("width_release", False, True),  # a pool from 0.9.9: the calibration's full pull
    ("clean_release", False, True),  # a pool from 0.9.10: the clean-up's fixed n
])
def test_settings_without_a_later_key_keep_the_old_behaviour(key, legacy, now):
    # resuming an older pool keeps its behaviour, and the new default is refused rather than
    # mixed into it
    stored = resolve_settings(None).to_dict()
    assert stored["config"][key] == now
    del stored["config"][key]
    old = resolve_settings(stored)
    assert getattr(old.config, key) == legacy
    with pytest.raises(KGEngineError, match=rf"config.{key} \(pool: {legacy}, given: {now}\)"):
        check_same(old, resolve_settings(None))


def test_settings_without_restart_n_filtering_keep_the_restarts_clean_up():
    # a restarts pool from before 0.9.3 cleaned each restart with n_filtering: resuming it
    # must too (or be refused when asked for the new default); a one-run pool does not care
    stored = resolve_settings(None, restarts=4).to_dict()
    assert stored["config"]["restart_n_filtering"] == 70
    del stored["config"]["restart_n_filtering"]
    old = resolve_settings(stored)
    assert old.config.clean_n(4) == old.config.n_filtering == 50
    with pytest.raises(KGEngineError,
                       match=r"config.restart_n_filtering \(pool: 50, given: 70\)"):
        check_same(old, resolve_settings(None, restarts=4))
    one = resolve_settings(None).to_dict()
    del one["config"]["restart_n_filtering"]
    check_same(resolve_settings(one), resolve_settings(None))


def test_farm_stop_is_a_stored_setting_passed_to_training(photos, tmp_path, monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(training, "estimate_kernels", fake)
    pool = tmp_path / "pool"
    run_farm(photos[:2], pool, batch=4, device="cpu", stop="auto")
    auto = stop_setting(StopRule())
    assert fake.stops == [auto]
    with Manifest(pool) as man:
        assert man.settings()["stop"] == auto
    with pytest.raises(KGEngineError, match=r"stop \(pool: \{"):
        run_farm(photos, pool, device="cpu", stop="full")
    res = CliRunner().invoke(app, ["farm", *map(str, photos), "-o", str(pool), "--batch", "4"])
    assert res.exit_code == 0, res.output
    assert fake.stops == [auto, auto]  # the pool's setting, not the default
    res = CliRunner().invoke(app, ["farm", "-o", str(tmp_path / "p2"), "--stop", "soon"])
    assert res.exit_code == 1 and "stop: expected full or auto, got 'soon'" in res.output


def test_settings_without_stop_read_as_full():
    stored = resolve_settings(None).to_dict()
    assert stored["stop"] == stop_setting(StopRule())  # a new pool stops by auto (0.9.12)
    del stored["stop"]  # as a pool made before --stop stored its settings
    assert resolve_settings(stored).stop == "full"
    with pytest.raises(KGEngineError, match=r"stop \(pool: full, given: \{"):
        resolve_settings(stored, stop="auto")


def test_farm_stores_restarts_and_refuses_another_value(photos, tmp_path, monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(training, "estimate_kernels", fake)
    pool = tmp_path / "pool"
    run_farm(photos[:2], pool, batch=4, device="cpu", restarts=3)
    with Manifest(pool) as man:
        assert man.settings()["restarts"] == 3
    assert fake.restarts == [3]
    with pytest.raises(KGEngineError, match=r"restarts \(pool: 3, given: 2\)"):
        run_farm(photos[2:], pool, device="cpu", restarts=2)
    run_farm(photos[2:], pool, batch=4, device="cpu")  # left out: the pool's 3
    assert fake.restarts == [3, 3] and fake.calls[1][0] == ["p2", "p3"]
    runner = CliRunner()
    res = runner.invoke(app, ["farm", "-o", str(pool), "--restarts", "1"])
    assert res.exit_code == 1 and "error: " in res.output
    assert "restarts (pool: 3, given: 1)" in res.output
    res = runner.invoke(app, ["farm", "-o", str(tmp_path / "new"), "--restarts", "0"])
    assert res.exit_code == 1
    assert "error: --restarts must be at least 1, got 0" in res.output


def test_farm_writes_the_confidence_to_manifest_reports_and_pool(photos, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(training, "estimate_kernels", FakeTrainer())
    pool = tmp_path / "pool"
    run_farm(photos, pool, batch=4, device="cpu", restarts=2)
    with Manifest(pool) as man:
        rows = man.rows("done")
    assert len(rows) == 4
    want = {r.name: fake_confidence(r.seed_used) for r in rows}
    assert len(set(want.values())) == 4  # the check below tells the images apart
    kernels = load_pool(pool / POOL_X2)
    for r in rows:
        assert r.confidence == pytest.approx(want[r.name], abs=0, rel=1e-15)
        report = json.loads((pool / r.output_paths["report"]).read_text())
        assert report["confidence"] == r.confidence and report["farm"]["restarts"] == 2
        assert kernels.confidences[kernels.ids.index(r.name)] == r.confidence
    with np.load(pool / POOL_X2, allow_pickle=False) as z:
        index = json.loads(str(z["index"]))
    assert {e["id"]: e["confidence"] for e in index} == want
    threshold = sorted(want.values())[2]
    assert load_pool(pool, min_confidence=threshold).ids == [
        r.name for r in rows if want[r.name] >= threshold]


def test_farm_without_restarts_has_unknown_confidence(photos, tmp_path, monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(training, "estimate_kernels", fake)
    run_farm(photos[:2], tmp_path / "pool", batch=4, device="cpu")
    assert fake.restarts == [1]
    with Manifest(tmp_path / "pool") as man:
        assert [r.confidence for r in man.rows()] == [None, None]
    assert np.isnan(load_pool(tmp_path / "pool" / POOL_X2).confidences).all()


def test_ray_results_carry_the_confidence():
    from kgengine.farm import ray_runner  # Ray itself is imported only with --ray

    k = gaussian_kernel(13, 1.0)
    res = EstimateResult("a", k, None, {"seed": 1}, [np.zeros((1, 1, 1, 1))], k, 0.625)
    plain = ray_runner._plain("a", res)
    assert plain["confidence"] == 0.625

    class _Row:
        name = "a"

    back = ray_runner._outcome(_Row(), plain)
    assert isinstance(back, EstimateResult) and back.confidence == 0.625


def test_default_batch_divides_by_restarts():
    cpu = torch.device("cpu")
    assert batching.auto_batch(cpu, resolve_settings(None)) == batching.CPU_BATCH
    assert batching.auto_batch(cpu, resolve_settings(None, restarts=3)) == batching.CPU_BATCH // 3
    assert batching.auto_batch(cpu, resolve_settings(None, restarts=64)) == 1
