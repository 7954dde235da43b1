"""The automatic CPU batch follows the host's memory (kgengine.host_memory, 0.9.28)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kgengine import host_memory as hm
from kgengine.cli import app
from kgengine.farm.batching import CPU_BATCH, auto_batch
from kgengine.farm.settings import FarmSettings

GIB = 2**30


def test_meminfo_available_reads_kib() -> None:
    text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   16000000 kB\n"
    assert hm.meminfo_available(text) == 16000000 * 1024
    assert hm.meminfo_available("MemTotal: 5 kB\n") is None


def test_cgroup_v2_headroom_and_unlimited(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text(f"{4 * GIB}\n")
    (tmp_path / "memory.current").write_text(f"{GIB}\n")
    assert hm.cgroup_headroom(tmp_path) == 3 * GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert hm.cgroup_headroom(tmp_path) is None


def test_cgroup_v1_headroom_and_its_huge_unlimited(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{2 * GIB}\n")
    (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{3 * GIB}\n")
    assert hm.cgroup_headroom(tmp_path) == 0  # over its limit: nothing left
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert hm.cgroup_headroom(tmp_path) is None
    assert hm.cgroup_headroom(tmp_path / "absent") is None


def test_cpu_batch_is_the_closed_form() -> None:
    px = 12_000_000  # a 12 MP photo: 130 B/px = 1.56 GB an image
    avail = 8 * GIB
    want = int((hm.USE * avail - hm.FIXED) // (px * hm.PER_PIXEL))
    assert 1 < want < CPU_BATCH
    assert hm.cpu_batch_for_memory(CPU_BATCH, px, 1, avail) == want
    # restarts cost more per image; a huge image still gets 1 (it fails alone if it must)
    per = px * (hm.PER_PIXEL + 3 * hm.PER_PIXEL_RESTART)
    assert hm.cpu_batch_for_memory(2, px, 4, avail) == min(
        2, int((hm.USE * avail - hm.FIXED) // per))
    assert hm.cpu_batch_for_memory(CPU_BATCH, 10**11, 1, avail) == 1
    # plenty of memory, or an unknown size: the cap
    assert hm.cpu_batch_for_memory(CPU_BATCH, px, 1, 10**15) == CPU_BATCH
    assert hm.cpu_batch_for_memory(CPU_BATCH, 0, 1, avail) == CPU_BATCH


def test_unknown_memory_keeps_the_cap(monkeypatch) -> None:
    monkeypatch.setattr(hm, "available_bytes", lambda: None)
    assert hm.cpu_batch_for_memory(CPU_BATCH, 10**9) == CPU_BATCH


def test_memory_batches_split_by_the_largest_image() -> None:
    avail = 8 * GIB
    small, large = 500 * 400, 24_000_000
    one_large = hm.cpu_batch_for_memory(CPU_BATCH, large, 1, avail)
    assert one_large < CPU_BATCH
    sizes = [small] * 10 + [large] * 5
    lengths = hm.memory_batches(sizes, CPU_BATCH, 1, avail)
    assert sum(lengths) == len(sizes)
    start = 0
    for n in lengths:  # every batch fits and is at most the cap
        assert n <= hm.cpu_batch_for_memory(CPU_BATCH, max(sizes[start:start + n]), 1, avail)
        start += n
    assert lengths[0] == CPU_BATCH and max(lengths[-2:]) <= one_large
    assert hm.memory_batches([], CPU_BATCH, 1, avail) == []
    assert hm.memory_batches([small] * 3, 2, 1, 10**15) == [2, 1]


def test_farm_auto_batch_on_cpu_follows_memory(monkeypatch) -> None:
    monkeypatch.setattr(hm, "available_bytes", lambda: 4 * GIB)
    settings = FarmSettings()
    px = 20_000_000
    want = hm.cpu_batch_for_memory(CPU_BATCH, px, 1, 4 * GIB)
    assert want < CPU_BATCH
    assert auto_batch(torch.device("cpu"), settings, px) == want
    assert auto_batch(torch.device("cpu"), settings, 0) == CPU_BATCH


def _photo(path: Path, side: int) -> Path:
    rng = np.random.default_rng(side)
    Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("given", [0, 5])
def test_estimate_batches_by_memory_only_when_automatic(tmp_path: Path, monkeypatch,
                                                        given: int) -> None:
    """Five images, memory for two of the largest (three of the small) at a time: the
    automatic CPU batch trains the small ones together and the large ones as a pair;
    ``--batch 5`` is kept."""
    import kgengine.commands.estimate as est

    small = [_photo(tmp_path / f"s{i}.png", 70) for i in range(3)]
    large = [_photo(tmp_path / f"l{i}.png", 90) for i in range(2)]
    avail = int((hm.FIXED + 2 * 90 * 90 * hm.PER_PIXEL) / hm.USE) + 1
    assert hm.cpu_batch_for_memory(CPU_BATCH, 70 * 70, 1, avail) == 3
    monkeypatch.setattr(hm, "available_bytes", lambda: avail)
    seen: list[list[str]] = []
    monkeypatch.setattr(est, "_train", lambda paths, *a, **k: seen.append(
        [p.name for p in paths]) or [])
    res = CliRunner().invoke(app, ["estimate", *map(str, small + large), "-o",
                                   str(tmp_path / "out"), "--iters", "2"]
                             + (["--batch", str(given)] if given else []))
    assert res.exit_code == 0, res.output
    if given:
        assert [len(b) for b in seen] == [5]
    else:
        assert seen == [["s0.png", "s1.png", "s2.png"], ["l0.png", "l1.png"]]
