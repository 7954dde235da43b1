"""Per-image host work of a batch on the host's threads: reading images, their crop maps and
the post-processing of their kernels, one image whole on one thread.

A batch's training uses every thread, but before it each image is read and given its crop
maps, and after it each kernel is finished (clean-up, width calibration, spectral fit,
confidence), one image after the other. On a large photo that is seconds per image (a
2040×1356 LR image: about 1.2 s of crop maps and 2.4 s of post-processing on one core of
the development machine, ``bench/bench_host_work.py``), while the training of a batch of 8
takes about 8 s per image. :func:`map_images` runs these per-image steps ``workers`` at a
time.

Same bytes: each image's arithmetic is its own, whichever thread runs it. Inside a worker
the compiled ops run their serial twins (:func:`kgengine.ops.backend.serial_ops`: the same
bits as the parallel kernels, tested), since Numba's ``workqueue`` threading layer must not
be entered from two threads at once. ``tests/test_host_threads.py`` compares the results of
1 and several workers byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from kgengine.ops.backend import serial_ops

T = TypeVar("T")
R = TypeVar("R")


#: [calls inside :func:`torch_single_threaded`, torch's thread count saved by the first]
_SINGLE: list = [0, None]
_SINGLE_LOCK = threading.Lock()


@contextlib.contextmanager
def torch_single_threaded() -> Iterator[None]:
    """torch on one thread inside (the compiled trainer's tasks take the host threads).

    Calls that overlap, on several threads of one process (a service calling the API from
    a thread pool), share one save: the first in saves torch's thread count and the last
    out restores it. Before 0.9.27 each saved what it found, so a call that began during
    another's saved 1 and restored it last, and every thread made afterwards ran torch on
    one thread. A call that ends while another is inside gives its thread the saved count
    too. (A thread *made* while a call is inside starts with torch's count of that moment,
    1: torch's rule; kgengine's trainers take their thread budget from
    :func:`torch_threads`, not from it.)
    """
    with _SINGLE_LOCK:
        if _SINGLE[0] == 0:
            _SINGLE[1] = torch.get_num_threads()
        own = _SINGLE[1]  # not this thread's count: it may be the 1 of another call
        _SINGLE[0] += 1
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _SINGLE_LOCK:
            _SINGLE[0] -= 1
            torch.set_num_threads(_SINGLE[1] if _SINGLE[0] == 0 else own)


def _forget_calls() -> None:
    """In a forked child: no call of the parent's is inside, and its lock may be held."""
    global _SINGLE_LOCK
    _SINGLE_LOCK = threading.Lock()
    if _SINGLE[0]:
        _SINGLE[0] = 0
        torch.set_num_threads(_SINGLE[1])


os.register_at_fork(after_in_child=_forget_calls)


def torch_threads() -> int:
    """torch's thread count as the caller left it: the count saved by
    :func:`torch_single_threaded` while a call is inside it (where torch reads 1), else
    ``torch.get_num_threads()``; at least 1."""
    with _SINGLE_LOCK:
        saved = _SINGLE[1] if _SINGLE[0] else None
    return max(1, saved if saved is not None else torch.get_num_threads())


def default_workers() -> int:
    """The threads per-image host work may use: torch's thread count (which ``estimate`` and
    ``farm`` cap at the idle cores; :func:`torch_threads`), at least 1."""
    return torch_threads()


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable`` of ``/proc/meminfo``;
    None where there is none to read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def workers_for(bytes_each: int, workers: int | None = None) -> int:
    """``workers`` (default :func:`default_workers`), fewer where items of ``bytes_each``
    peak bytes each would take more than half the available memory; at least 1."""
    n = default_workers() if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    free = available_memory()
    if free is not None and bytes_each > 0:
        n = min(n, max(1, free // 2 // bytes_each))
    return n


def map_images(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None,
               bytes_each: int = 0) -> list[R]:
    """``[fn(x) for x in items]``, in order, ``workers`` items at a time (default
    :func:`default_workers`; fewer where ``bytes_each``, the peak memory of one item, would
    take more than half the available memory: :func:`workers_for`).

    With one worker, or one item, it is exactly that loop on this thread (the compiled ops
    may then use every thread themselves). Otherwise each item runs whole on one worker
    thread, inside :func:`~kgengine.ops.backend.serial_ops`. If ``fn`` raises, the first
    exception in ``items`` order is raised here once every item has finished (nothing is
    left running).
    """
    n = workers_for(bytes_each, workers)
    if n == 1 or len(items) <= 1:
        return [fn(x) for x in items]

    def serial(x: T) -> R:
        with serial_ops():
            return fn(x)

    with ThreadPoolExecutor(max_workers=min(n, len(items))) as pool:
        futures = [pool.submit(serial, x) for x in items]
        return [f.result() for f in futures]
