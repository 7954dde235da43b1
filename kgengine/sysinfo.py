"""What machine this is: one :func:`machine_info` for reports, benches and ``kgengine info``."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from kgengine._version import __version__


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` "model name"), else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def simd_level(flags: str | None = None) -> str:
    """The widest x86 vector extension of this CPU: ``AVX-512``, ``AVX2``, ``AVX``, ``SSE4.2``,
    or ``""`` (another architecture, or unknown).

    Compiled code (Numba, oneDNN, BLAS) picks its vector paths by it, so float32 results,
    and hence KernelGAN's chaotic training, are byte-reproducible only on one level.

    Args:
        flags: the ``flags`` line of ``/proc/cpuinfo`` (read from this machine when None).
    """
    if flags is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                flags = next((line for line in fh if line.startswith("flags")), "")
        except OSError:
            flags = ""
    have = set(flags.split(":", 1)[-1].split())
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                       ("sse4_2", "SSE4.2")):
        if flag in have:
            return name
    return ""


def _gpu_name() -> str | None:
    """The first CUDA device's name; None without one, or where it cannot be read (a GPU
    listed but not usable: the report must not stop a finished run, 0.9.27)."""
    import torch

    try:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - any failure: no name to report
        return None


def machine_info(device: str = "auto") -> dict[str, Any]:
    """The machine and software a result was measured on, for reports and benches.

    Keys: ``cpu``, ``simd`` (:func:`simd_level`), ``cores``, ``gpu`` (CUDA device name or
    ``None``), ``device`` (as asked), ``torch``, ``torch_threads``, ``numpy``, ``python``,
    ``kgengine``, ``machine`` (arch).
    """
    import numpy as np
    import torch

    return {
        "cpu": cpu_name(),
        "simd": simd_level(),
        "cores": os.cpu_count(),
        "gpu": _gpu_name(),
        "device": device,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "kgengine": __version__,
        "machine": platform.machine(),
    }


def machine_line(device: str = "auto") -> str:
    """:func:`machine_info` as one line: ``CPU (SIMD), N cores, no GPU; torch X; device D``."""
    m = machine_info(device)
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    simd = f" ({m['simd']})" if m["simd"] else ""
    return f"{m['cpu']}{simd}, {m['cores']} cores{gpu}; torch {m['torch']}; device {device}"


def busy_from_stat(before: str, after: str) -> float:
    """Cores busy between two readings of ``/proc/stat``: ``n · (1 − Δidle / Δtotal)``.

    Uses the aggregate ``cpu`` line (user nice system idle iowait irq softirq steal, in
    ticks; idle = idle + iowait) and ``n`` = the number of ``cpuN`` lines.
    """
    def ticks(text: str) -> tuple[int, int, int]:
        lines = text.splitlines()
        fields = [int(v) for v in lines[0].split()[1:9]]
        n = sum(1 for line in lines[1:] if line.startswith("cpu"))
        return sum(fields), fields[3] + fields[4], n

    total0, idle0, n = ticks(before)
    total1, idle1, _ = ticks(after)
    if total1 <= total0:
        return 0.0
    return n * (1.0 - (idle1 - idle0) / (total1 - total0))


def _read_proc_stat() -> str:
    with open("/proc/stat", encoding="ascii") as fh:
        return fh.read()


def busy_cores(window: float = 0.2) -> float | None:
    """Cores busy right now, from ``/proc/stat`` sampled ``window`` seconds apart (Linux);
    ``None`` where it cannot be read."""
    try:
        before = _read_proc_stat()
        time.sleep(window)
        return busy_from_stat(before, _read_proc_stat())
    except (OSError, ValueError, IndexError):
        return None


def idle_cores() -> int:
    """Cores not busy with other work: ``cpu_count − busy``, at least 1.

    ``busy`` is measured now (:func:`busy_cores`, 0.2 s) where ``/proc/stat`` exists, else the
    1-minute load average (macOS), else all cores are idle. Not the load average first: it
    decays over minutes, so it still counts a job that has just ended (a second ``kgengine
    estimate`` right after a first one would get fewer threads).
    """
    n = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            return n
    return max(1, min(n, round(n - busy)))


def auto_threads(default: int) -> int:
    """Training threads when the user did not choose: torch's ``default``, but no more than
    the idle cores. Small per-iteration work on oversubscribed cores is far slower than on
    fewer threads (measured: 200 vs 45 ms/iteration with 2 threads vs 1 on 2 busy cores)."""
    return max(1, min(default, idle_cores()))
