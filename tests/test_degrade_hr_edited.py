"""``degrade`` resuming over an HR file edited in place (0.9.26): the old pair is removed and
made again from the new file, saying so; a file only touched (same bytes) is kept; a redo
that fails leaves no pair of the old HR; manifests from before 0.9.26 are kept as they are."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kgengine.farm.seeds as seeds
from kgengine.degradation import degrade_folder
from kgengine.farm.seeds import content_hash
from kgengine.hooks import JobHooks
from kgengine.imageio import to_uint8
from kgengine.kernel import anisotropic_gaussian
from kgengine.pool import make_pool, save_pool


def _photo(path: Path, seed: int, shape: tuple[int, int] = (40, 44)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(to_uint8(rng.random((*shape, 3)))).save(path)


@pytest.fixture()
def inputs(tmp_path) -> tuple[Path, Path]:
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(4):
        _photo(hr / f"im{i}.png", i)
    kernels = [anisotropic_gaussian(13, v1, v2, t) for v1, v2, t in
               [(0.8, 3.0, 0.3), (2.0, 2.0, 0.0), (4.0, 1.0, 1.2)]]
    pool = make_pool(kernels, ["k0", "k1", "k2"], ["a", "b", "c"], 2, seeds=[0, 1, 2])
    return hr, save_pool(tmp_path / "pool", pool)


def _run(hr: Path, pool: Path, out: Path, copy_hr: bool):
    logs: list[str] = []
    states: dict[str, str] = {}
    hooks = JobHooks(log=logs.append,
                     item_finished=lambda name, state, _d: states.__setitem__(name, state))
    report = degrade_folder(hr, pool, out, seed=3, provider="cpu", copy_hr=copy_hr,
                            hooks=hooks)
    return report, logs, states


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("[lh]r/*.png"))}


def _entries(out: Path) -> dict[str, dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    return {e["name"]: e for e in map(json.loads, filter(str.strip, lines))}


@pytest.mark.parametrize("copy_hr", [False, True])
def test_an_hr_file_edited_in_place_is_made_again(inputs, tmp_path, copy_hr,
                                                   monkeypatch):
    hr, pool = inputs
    out = tmp_path / "out"
    assert _run(hr, pool, out, copy_hr)[0].written == 4
    before = _files(out)
    old_sha = content_hash(hr / "im1.png")
    assert _entries(out)["im1.png"]["hr_sha256"] == old_sha
    _photo(hr / "im1.png", 11)  # edited: other bytes, same size
    os.utime(hr / "im2.png", ns=(1, 1))  # touched: same bytes, another mtime
    fresh = tmp_path / "fresh"  # the edited folder, degraded from scratch
    _run(hr, pool, fresh, copy_hr)
    report, logs, states = _run(hr, pool, out, copy_hr)
    new_sha = content_hash(hr / "im1.png")
    assert logs.count(f"{hr / 'im1.png'}: redone, its HR file changed since its pair was made "
                      f"(stored sha256 {old_sha[:12]}, now {new_sha[:12]})") == 1
    assert [line for line in logs if "redone" in line and "im1" not in line] == []
    assert (report.written, report.skipped) == (1, 3)
    assert states == {"im0.png": "skipped", "im1.png": "done", "im2.png": "skipped",
                      "im3.png": "skipped"}
    after = _files(out)
    assert after == _files(fresh)  # the redo is the pair a fresh run makes
    assert {k for k in after if after[k] != before.get(k)} == {
        k for k in after if "im1" in k}
    assert after["lr/im1.png"] != before["lr/im1.png"]
    assert _entries(out)["im1.png"]["hr_sha256"] == new_sha
    assert _entries(out)["im2.png"]["hr_mtime_ns"] == 1  # touched: its new time recorded
    # and a third run does nothing, reading no HR file to hash it
    monkeypatch.setattr(seeds, "content_hash", lambda p: pytest.fail(f"{p} hashed"))
    report, logs, _ = _run(hr, pool, out, copy_hr)
    assert (report.written, report.skipped) == (0, 4) and not [x for x in logs if "redone" in x]


def test_a_redo_that_fails_leaves_no_pair_of_the_old_hr(inputs, tmp_path):
    hr, pool = inputs
    out = tmp_path / "out"
    _run(hr, pool, out, True)
    _photo(hr / "im3.png", 3, shape=(8, 8))  # now too small for a 13x13 kernel
    report, _, states = _run(hr, pool, out, True)
    assert states["im3.png"] == "failed" and len(report.failed) == 1
    assert "im3.png" in report.failed[0]
    assert not (out / "lr" / "im3.png").exists() and not (out / "hr" / "im3.png").exists()
    assert sorted(_entries(out)) == ["im0.png", "im1.png", "im2.png"]


def test_a_manifest_from_before_the_hash_is_kept(inputs, tmp_path):
    hr, pool = inputs
    out = tmp_path / "out"
    _run(hr, pool, out, False)
    entries = _entries(out)
    for e in entries.values():
        for key in ("hr_bytes", "hr_mtime_ns", "hr_sha256"):
            del e[key]
    (out / "manifest.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries.values()))
    before = _files(out)
    _photo(hr / "im1.png", 11)
    report, logs, _ = _run(hr, pool, out, False)
    assert (report.written, report.skipped) == (0, 4) and not [x for x in logs if "redone" in x]
    assert _files(out) == before
