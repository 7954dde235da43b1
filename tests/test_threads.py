"""Default training threads: torch's, capped at the cores other work leaves idle."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kgengine import sysinfo


def _stat(user: int, idle: int, n: int = 2) -> str:
    """A /proc/stat text with the given aggregate user and idle ticks on ``n`` cores."""
    cpus = "".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(n))
    return f"cpu  {user} 5 0 {idle} 0 0 0 0 0 0\n{cpus}intr 1 2 3\n"


@pytest.mark.parametrize("d_user, d_idle, n, busy", [
    (0, 200, 2, 0.0),     # both idle
    (100, 100, 2, 1.0),   # one of two cores busy
    (200, 0, 2, 2.0),
    (300, 500, 8, 3.0),
])
def test_busy_cores_from_two_proc_stat_readings(d_user, d_idle, n, busy):
    before, after = _stat(1000, 5000, n), _stat(1000 + d_user, 5000 + d_idle, n)
    assert sysinfo.busy_from_stat(before, after) == pytest.approx(busy)


@pytest.mark.parametrize("cores, busy, default, expected", [
    (2, 0.1, 2, 2),   # idle: torch's default
    (2, 0.9, 2, 1),   # another job on one core: one thread
    (2, 6.0, 2, 1),   # overloaded: never below one
    (16, 3.2, 16, 13),
    (16, 0.0, 4, 4),  # never above torch's default
])
def test_auto_threads_caps_at_idle_cores(monkeypatch, cores, busy, default, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(sysinfo, "busy_cores", lambda: busy)
    assert sysinfo.auto_threads(default) == expected


def test_without_proc_stat_the_load_average_decides(monkeypatch):
    def unreadable() -> str:
        raise OSError("no /proc/stat")

    monkeypatch.setattr(sysinfo, "_read_proc_stat", unreadable)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    assert sysinfo.busy_cores() is None
    assert sysinfo.idle_cores() == 1

    def missing():
        raise OSError("no load average")

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", missing)
    assert sysinfo.idle_cores() == 8


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat (not Linux)")
def test_a_spinning_process_counts_as_one_busy_core():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start
        busy = sysinfo.busy_cores(window=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and 0.8 <= busy <= (os.cpu_count() or 1)


@pytest.mark.parametrize("flags, level", [
    ("flags\t\t: fpu sse4_1 sse4_2 avx f16c avx2 bmi2", "AVX2"),
    ("flags\t\t: fpu sse4_2 avx avx2 avx512f avx512bw", "AVX-512"),
    ("flags\t\t: fpu sse4_1 sse4_2", "SSE4.2"),
    ("flags\t\t: fp asimd evtstrm", ""),  # not x86
    ("", ""),
])
def test_simd_level_names_the_widest_extension(flags, level):
    # the widest wins: a CPU with avx512f also lists avx2 and avx
    assert sysinfo.simd_level(flags) == level
