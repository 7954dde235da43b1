"""kgengine.host_threads: per-image host work on several threads gives the bytes of one."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from synthetic import degrade, power_law_image

import kgengine.host_threads as ht
from kgengine.api import estimate_kernels
from kgengine.kernel import anisotropic_gaussian
from kgengine.ops.backend import serial_only


def test_map_images_keeps_the_order_and_raises_the_first_error() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def fn(x: int) -> int:
        with lock:
            seen.append(x)
        if x in (2, 4):
            raise ValueError(f"item {x}")
        return x * x

    assert ht.map_images(lambda x: x * x, range(7), workers=3) == [x * x for x in range(7)]
    with pytest.raises(ValueError, match="item 2"):
        ht.map_images(fn, list(range(6)), workers=3)
    assert sorted(seen) == list(range(6))  # every item ran: nothing left behind
    with pytest.raises(ValueError, match="workers must be >= 1"):
        ht.map_images(fn, [1], workers=0)


def test_one_worker_is_the_plain_loop_and_workers_run_serial_ops() -> None:
    me = threading.get_ident()
    assert ht.map_images(lambda _: (threading.get_ident(), serial_only()), [0, 1],
                         workers=1) == [(me, False)] * 2
    got = ht.map_images(lambda _: (threading.get_ident(), serial_only()), [0, 1, 2], workers=3)
    assert all(ident != me and serial for ident, serial in got)
    assert not serial_only()  # the caller's thread is left as it was


def _images() -> list[np.ndarray]:
    """Three grey LR images of different sizes, made with different known kernels."""
    out = []
    for i, (n, v1, v2) in enumerate([(192, 3.0, 1.0), (160, 1.5, 1.5), (224, 4.0, 0.8)]):
        hr = power_law_image(2 * n, seed=i)
        k = anisotropic_gaussian(13, v1, v2, 0.4 * i)
        lr = degrade(hr, k, 2)
        out.append(np.repeat(lr[..., None], 3, axis=2).astype(np.float32))
    return out


@pytest.mark.parametrize("restarts", [1, 2])
def test_estimates_are_the_same_bytes_on_one_and_three_host_threads(monkeypatch, restarts):
    images = _images()
    runs = {}
    for workers in (1, 3):
        monkeypatch.setattr(ht, "default_workers", lambda w=workers: w)
        runs[workers] = estimate_kernels(images, seeds=[3, 4, 5], x4=True, iters=40,
                                         restarts=restarts, stop="full")
    for a, b in zip(runs[1], runs[3], strict=True):
        np.testing.assert_array_equal(a.kernel_x2, b.kernel_x2)
        np.testing.assert_array_equal(a.kernel_x4, b.kernel_x4)
        assert a.confidence == b.confidence and a.confidence is not None
        for key in ("width", "spectral", "clean_n", "kernel_x2", "kernel_x4",
                    "confidence_terms", "final_losses", "iters_used"):
            assert a.report[key] == b.report[key], key


def test_workers_are_capped_by_the_available_memory(monkeypatch) -> None:
    monkeypatch.setattr(ht, "default_workers", lambda: 8)
    monkeypatch.setattr(ht, "available_memory", lambda: 4 << 30)
    assert ht.workers_for(0) == 8  # no size given: no cap
    assert ht.workers_for(100 << 20) == 8
    assert ht.workers_for(500 << 20) == 4  # half of 4 GiB / 500 MiB
    assert ht.workers_for(3 << 30) == 1  # never below one
    assert ht.workers_for(500 << 20, workers=2) == 2
    monkeypatch.setattr(ht, "available_memory", lambda: None)  # nothing to read: no cap
    assert ht.workers_for(3 << 30) == 8
    seen = []
    monkeypatch.setattr(ht, "available_memory", lambda: 1 << 30)
    ht.map_images(lambda _: seen.append(threading.get_ident()), range(4), bytes_each=1 << 30)
    assert set(seen) == {threading.get_ident()}  # capped to 1: the plain loop on this thread


def test_available_memory_reads_proc_meminfo() -> None:
    got = ht.available_memory()
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            want = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except OSError:
        assert got is None
        return
    assert got is not None and abs(got - want * 1024) < 512 << 20  # it moves a little
