"""Host memory: how much this process may still use, and the CPU batch size it allows.

On a CPU an image's kernel is the same bytes at any batch size, so the automatic CPU batch
may follow memory without changing a pool. Without it, eight 12 MP photos (about 15 GB)
could start on a 16 GB laptop, where Linux's out-of-memory killer ends the process before
Python sees a ``MemoryError`` (and a farm then meets the same batch at every restart).

Memory model, measured with ``estimate_kernels`` on 1500² and 2500² random images, B = 1-6,
K = 1 and 4 (peak RSS over the process after imports; 0.9.28):

``need(B, P, K) = FIXED + B · P · (PER_PIXEL + (K − 1) · PER_PIXEL_RESTART)`` bytes,

``P`` the largest image's H·W. The measured peaks were 0.6-1.0× of this.
"""

from __future__ import annotations

from pathlib import Path

#: bytes: the process's training overhead that does not grow with the batch.
FIXED = 700 * 2**20
#: bytes per pixel of each image of a batch (its copy, crop maps, prepared tensors).
PER_PIXEL = 130
#: bytes per pixel of each restart after the first (``restarts = K``).
PER_PIXEL_RESTART = 35
#: fraction of the available memory a batch may plan to use.
USE = 0.8

_CGROUP = Path("/sys/fs/cgroup")


def meminfo_available(text: str) -> int | None:
    """``MemAvailable`` in bytes from the text of ``/proc/meminfo`` (None if absent)."""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            return int(parts[1]) * (1024 if parts[-1].lower() == "kb" else 1)
    return None


def cgroup_headroom(root: Path = _CGROUP) -> int | None:
    """Bytes left under this process's cgroup memory limit (a container's), or None where
    there is none: v2 ``memory.max − memory.current``, v1 ``memory.limit_in_bytes −
    memory.usage_in_bytes`` (v1 writes an unlimited limit as a huge number, read as none)."""
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes",
                                    "memory/memory.usage_in_bytes")):
        try:
            limit = (root / limit_name).read_text().strip()
            usage = int((root / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(0, int(limit) - usage)
    return None


def available_bytes() -> int | None:
    """The memory this process may still use: the smaller of the host's ``MemAvailable``
    and its cgroup's headroom; None where neither can be read (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            host = meminfo_available(fh.read())
    except OSError:
        host = None
    known = [v for v in (host, cgroup_headroom()) if v is not None]
    return min(known) if known else None


def cpu_batch_for_memory(cap: int, pixels: int, restarts: int = 1,
                         available: int | None = None) -> int:
    """The largest ``B <= cap`` with ``need(B, pixels, restarts) <= USE · available``
    (module docstring), at least 1 (an image too large even alone fails when it runs);
    ``cap`` where the memory or the image size is unknown (``available`` None, ``pixels``
    0).

    Args:
        cap: the batch size without a memory limit (``CPU_BATCH // restarts``).
        pixels: the largest H·W in the batch.
        restarts: K trainings per image.
        available: bytes (:func:`available_bytes` when None).
    """
    available = available_bytes() if available is None else available
    if available is None or pixels <= 0:
        return cap
    per_image = pixels * (PER_PIXEL + (max(1, restarts) - 1) * PER_PIXEL_RESTART)
    fits = int((USE * available - FIXED) // per_image)
    return max(1, min(cap, fits))


def memory_batches(sizes: list[int], cap: int, restarts: int = 1,
                   available: int | None = None) -> list[int]:
    """Split images, given by their H·W in the order they train (smallest first), into
    consecutive batches: each at most ``cap`` images and within memory
    (:func:`cpu_batch_for_memory` for its largest image). Returns the batch lengths.

    ``available`` is read once (:func:`available_bytes`) when None, so one job plans with
    one figure.
    """
    available = available_bytes() if available is None else available
    if available is None:  # unknown (not Linux): the cap, without asking again per batch
        return [min(cap, len(sizes) - i) for i in range(0, len(sizes), cap)]
    lengths, start = [], 0
    while start < len(sizes):
        n = 1
        while (start + n < len(sizes) and n < cap
               and n + 1 <= cpu_batch_for_memory(cap, max(sizes[start : start + n + 1]),
                                                 restarts, available)):
            n += 1
        lengths.append(n)
        start += n
    return lengths
