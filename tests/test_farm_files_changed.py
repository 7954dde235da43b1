"""The farm when listed files change between runs (0.9.26): a file unreadable when listed
and readable later, a queued photo renamed, a photo edited in place (done or queued), a file
only touched; and ``--set`` on a pool started with ``--iters``. Each kernel is compared with
the kernel a fresh pool gives the file as it is now."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_farm import _one_thread  # noqa: F401 (an autouse fixture: torch on 1 thread)
from typer.testing import CliRunner

import kgengine.farm.intake as intake
from kgengine.cli import app
from kgengine.config import KernelGANConfig
from kgengine.errors import KGEngineError
from kgengine.farm.manifest import Manifest
from kgengine.farm.runner import run_farm
from kgengine.farm.seeds import content_hash, derive_seed
from kgengine.hooks import JobHooks

DATA = Path(__file__).resolve().parents[1] / "kgengine" / "data" / "sample_hr.png"
CFG = KernelGANConfig(iters=8, lr_decay_every=3, bic_decay_every=2, bic_loss_threshold=10.0)
BOXES = {"a": (0, 0, 100, 96), "b": (100, 100, 210, 200), "c": (180, 0, 320, 120),
         "edited": (0, 190, 124, 320)}


def photo(path: Path, box: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(DATA) as im:
        im.crop(BOXES[box]).save(path)
    return path


def farm(inputs: list[Path], pool: Path, **kw):
    """One float32 farm run; returns (summary, log lines)."""
    logs: list[str] = []
    summary = run_farm(inputs, pool, batch=2, config=CFG, device="cpu",
                       hooks=JobHooks(log=logs.append), **kw)
    return summary, logs


def kernel(pool: Path, name: str) -> bytes:
    return (pool / "kernels" / f"{name}_kernel_x2.npy").read_bytes()


def alone(tmp_path: Path, path: Path) -> bytes:
    """The kernel a fresh pool gives ``path`` as it is now."""
    pool = tmp_path / f"alone_{path.stem}_{content_hash(path)[:8]}"
    farm([path], pool)
    return kernel(pool, path.stem)


def rows(pool: Path) -> dict[str, object]:
    with Manifest(pool) as man:
        return {Path(r.path).name: r for r in man.rows()}


def test_a_file_unreadable_when_listed_is_trained_once_it_can_be_read(tmp_path):
    """Before 0.9.26 ``--retry-failed`` queued the row without a hash and every later run
    stopped on an AssertionError (a traceback), other queued images included."""
    photos = tmp_path / "photos"
    photo(photos / "a.png", "a")
    listing = tmp_path / "list.txt"
    listing.write_text("photos/a.png\nphotos/late.png\n")
    pool = tmp_path / "pool"
    summary, logs = farm([listing], pool)
    assert summary.failed == 1 and f"failed: {photos / 'late.png'}: no such file" in logs
    # still missing: retried, it fails alone again, with one line
    summary, logs = farm([listing], pool, retry_failed=True)
    assert summary.failed == 1 and f"failed: {photos / 'late.png'}: no such file" in logs
    photo(photos / "late.png", "b")
    photo(photos / "c.png", "c")  # another image queued in the same run
    summary, logs = farm([listing, photos / "c.png"], pool, retry_failed=True)
    assert summary.failed == 0 and summary.total["done"] == 3, logs
    late = rows(pool)["late.png"]
    assert late.sha256 == content_hash(photos / "late.png")
    assert late.seed_used == derive_seed(0, late.sha256, 0)
    assert kernel(pool, "late") == alone(tmp_path, photos / "late.png")


def _stop_after_first(pool: Path, inputs: list[Path]) -> None:
    """A farm run stopped (Ctrl-C) once its first image is done: the others stay queued."""
    def finished(name: str, state: str, _detail: str) -> None:
        if state == "done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_farm(inputs, pool, batch=1, config=CFG, device="cpu",
                 hooks=JobHooks(item_finished=finished))


def test_a_queued_photo_renamed_or_edited_is_trained_as_it_is_now(tmp_path):
    """Before 0.9.26 a queued photo renamed was skipped as a duplicate of its old path, which
    then failed ('no such file') at every run; one edited while queued was trained with the
    old file's seed."""
    photos = tmp_path / "photos"
    for name in ("a", "b", "c"):
        photo(photos / f"{name}.png", name)
    pool = tmp_path / "pool"
    _stop_after_first(pool, [photos])
    assert {n: r.state for n, r in rows(pool).items()} == {
        "a.png": "done", "b.png": "pending", "c.png": "pending"}
    old_b, old_c = content_hash(photos / "b.png"), content_hash(photos / "c.png")
    (photos / "b.png").rename(photos / "b_renamed.png")
    photo(photos / "c.png", "edited")  # edited in place while queued
    new_c = content_hash(photos / "c.png")
    summary, logs = farm([photos], pool)
    assert summary.failed == 0 and summary.duplicates == 0, logs
    assert (f"{photos / 'b_renamed.png'}: takes the place of {photos / 'b.png'}, which is "
            "gone (same content; not trained yet)") in logs
    assert (f"{photos / 'c.png'}: the file changed since it was listed (stored sha256 "
            f"{old_c[:12]}, now {new_c[:12]}); trained as it is now") in logs
    after = rows(pool)
    assert set(after) == {"a.png", "b_renamed.png", "c.png"}
    assert after["b_renamed.png"].name == "b_renamed" and after["b_renamed.png"].sha256 == old_b
    assert after["c.png"].seed_used == derive_seed(0, new_c, 0)
    assert kernel(pool, "b_renamed") == alone(tmp_path, photos / "b_renamed.png")
    assert kernel(pool, "c") == alone(tmp_path, photos / "c.png")
    summary, logs = farm([photos], pool)  # and the next run has nothing to do
    assert summary.total["done"] == 3 and summary.skipped == 3 and not logs



def test_a_done_photo_edited_in_place_is_redone_and_a_touched_one_kept(tmp_path, monkeypatch):
    """Before 0.9.26 the pool kept the old photo's kernel under the edited file's name."""
    photos = tmp_path / "photos"
    for name in ("a", "b", "c"):
        photo(photos / f"{name}.png", name)
    pool = tmp_path / "pool"
    farm([photos], pool)
    before = {n: kernel(pool, n) for n in "abc"}
    old_a = content_hash(photos / "a.png")
    photo(photos / "a.png", "edited")
    os.utime(photos / "b.png", ns=(5, 5))  # touched: the same bytes
    new_a = content_hash(photos / "a.png")
    summary, logs = farm([photos], pool)
    assert logs == [f"{photos / 'a.png'}: redone, its file changed since its kernel was made "
                    f"(stored sha256 {old_a[:12]}, now {new_a[:12]})"]
    assert summary.total["done"] == 3 and summary.skipped == 2 and summary.failed == 0
    assert kernel(pool, "a") == alone(tmp_path, photos / "a.png") != before["a"]
    assert (kernel(pool, "b"), kernel(pool, "c")) == (before["b"], before["c"])
    after = rows(pool)
    assert after["a.png"].sha256 == new_a and after["a.png"].seed_used == derive_seed(0, new_a, 0)
    assert after["b.png"].file_mtime_ns == 5  # the touch is recorded, not hashed again
    pooled = np.load(pool / "kernel_pool.npz")
    assert list(pooled["ids"]) == ["a", "b", "c"]
    np.testing.assert_allclose(pooled["kernels"][0],  # the pool stores float32
                               np.load(pool / "kernels" / "a_kernel_x2.npy"), rtol=1e-6)
    # the next run reads no file to hash it, and does nothing
    monkeypatch.setattr(intake, "content_hash", lambda p: pytest.fail(f"{p} hashed"))
    summary, logs = farm([photos], pool)
    assert summary.skipped == 3 and not logs


def test_set_without_iters_takes_the_pools_iterations(tmp_path):
    """Before 0.9.26 ``--set`` was applied to the default config, so a pool started with
    ``--iters 8 --set lr_d=0.0002`` refused the same ``--set`` without ``--iters``."""
    photos = tmp_path / "photos"
    photo(photos / "a.png", "a")
    base = ["farm", str(photos), "-o", str(tmp_path / "pool"), "--device", "cpu",
            "--threads", "1"]
    runner = CliRunner()
    res = runner.invoke(app, [*base, "--iters", "8", "--set", "lr_d=0.0002"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--set", "lr_d=0.0002"])
    assert res.exit_code == 0 and "1 skipped" in res.output, res.output
    res = runner.invoke(app, [*base, "--set", "lr_d=0.0003"])
    assert res.exit_code == 1
    assert "config.lr_d (pool: 0.0002, given: 0.0003)" in res.output
    assert "config.iters" not in res.output


def test_the_only_photo_edited_into_a_bad_one_leaves_no_stale_pool(tmp_path):
    """Before 0.9.26 a pool whose every image was queued again kept its old pool file."""
    photos = tmp_path / "photos"
    photo(photos / "a.png", "a")
    pool = tmp_path / "pool"
    farm([photos], pool)
    assert (pool / "kernel_pool.npz").is_file()
    with Image.open(DATA) as im:
        im.crop((0, 0, 20, 20)).save(photos / "a.png")  # now too small to train
    summary, logs = farm([photos], pool)
    assert summary.failed == 1 and any(x.startswith(f"{photos / 'a.png'}: redone") for x in logs)
    assert not (pool / "kernel_pool.npz").exists()
    assert not (pool / "kernels" / "a_kernel_x2.npy").exists()


def test_a_damaged_mat_kernel_is_redone(tmp_path):
    photos = tmp_path / "photos"
    photo(photos / "a.png", "a")
    pool = tmp_path / "pool"
    farm([photos], pool)
    mat = pool / "kernels" / "a_kernel_x2.mat"
    good = mat.read_bytes()
    mat.write_bytes(good[:200])  # truncated
    farm([photos], pool)
    assert mat.read_bytes() == good  # trained again: the same seed, the same bytes
    with Manifest(pool) as man:
        (row,) = man.rows()
        assert any("a_kernel_x2.mat is unreadable" in (e[3] or "") for e in man.events(row.id))


def test_inputs_that_give_nothing_create_nothing(tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("empty\n")
    pool = tmp_path / "pool"
    res = runner.invoke(app, ["farm", str(listing), "-o", str(pool)])
    assert res.exit_code == 1 and f"error: {listing}: lists no image files" in res.output
    assert not pool.exists()
    listing.write_bytes(b"\xff\xfe\x00bad")  # not UTF-8
    res = runner.invoke(app, ["farm", str(listing), "-o", str(pool)])
    assert res.exit_code == 1 and f"{listing}: cannot read the list of paths" in res.output
    assert not pool.exists()
    with pytest.raises(KGEngineError, match="cannot read the list of paths"):
        run_farm([listing], pool)  # the API too: before the folder is made
    assert not pool.exists()


def test_an_emptied_manifest_is_refused_over_a_pools_kernels(tmp_path):
    photos = tmp_path / "photos"
    photo(photos / "a.png", "a")
    pool = tmp_path / "pool"
    farm([photos], pool)
    for extra in ("-wal", "-shm"):
        (pool / f"manifest.sqlite{extra}").unlink(missing_ok=True)
    (pool / "manifest.sqlite").write_bytes(b"")
    before = (pool / "kernel_pool.npz").read_bytes()
    with pytest.raises(KGEngineError, match=r"manifest.sqlite: empty \(0 bytes\), but the "
                                            r"folder holds a pool's kernels"):
        farm([photos], pool)
    assert (pool / "kernel_pool.npz").read_bytes() == before
