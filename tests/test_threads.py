"""Default training threads: torch's, capped at the cores other work leaves idle."""

from __future__ import annotations

import os

import pytest

from kgengine import sysinfo


@pytest.mark.parametrize("cores, load, default, expected", [
    (2, 0.1, 2, 2),   # idle: torch's default
    (2, 1.9, 2, 1),   # another job on one core: one thread
    (2, 6.0, 2, 1),   # overloaded: never below one
    (16, 3.2, 16, 13),
    (16, 0.0, 4, 4),  # never above torch's default
])
def test_auto_threads_caps_at_idle_cores(monkeypatch, cores, load, default, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert sysinfo.auto_threads(default) == expected


def test_no_load_average_means_all_cores(monkeypatch):
    def missing():
        raise OSError("no load average")

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", missing)
    assert sysinfo.idle_cores() == 8
