"""A CPU batch trained as parts, one part per host thread: :func:`make_trainer`.

On CPU each image's arithmetic is its own at any batch size and thread count
(``tests/test_batch_invariance.py``), so a batch of B images can be cut into contiguous
parts, each a :class:`~kgengine.trainer.BatchTrainer` on one thread, trained side by side:
the kernels are the same bytes as the whole batch's (tested). What changes is the time. A
whole batch splits every pass of every step over the threads and meets them again after
it (tens of joins per step), and the step's serial parts (priors, Adam, crop sampling) run
on one thread while the other waits. Parts meet only at the end. Measured on 2 cores
(``bench/data/thread_split.md``): B = 4, 17.2 against 11.5 ms per iteration (1.49x); B = 2
1.38x, B = 8 1.29x; ``--restarts 4`` end to end 1.34-1.46x; a farm of 8 images with
``--stop auto`` 1.26x, with the threads of a part that ended handed to one still training
(``bench/data/thread_split_farm.md``; 1.15x without).

The compiled passes release the GIL; the Python glue of a step does not. Two parts as threads
against two processes (``bench/data/thread_split_gil.md``): 1.15x slower at one image a
part, no slower at 2 and 4. Many parts of one image on a many-core host may wait on it (more
than 2 parts not measured: ``GPU_CHECK_HOST=1 bench/gpu_check.sh`` times them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from kgengine.batch_rows import set_threads
from kgengine.compiled import compiled_on
from kgengine.config import KernelGANConfig
from kgengine.host_threads import torch_single_threaded, torch_threads
from kgengine.prepare import PreparedImage
from kgengine.stopping import StopRule
from kgengine.trainer import BatchTrainer


def part_count(b: int, threads: int, device: torch.device, mode: str) -> int:
    """How many parts a batch of ``b`` images trains as: ``min(b, threads)`` for the compiled
    CPU trainer (``mode`` "composed" where :func:`~kgengine.compiled.compiled_on`), else 1
    (one :class:`BatchTrainer`: a GPU batch is one launch per op; the PyTorch references
    were not measured split)."""
    if mode != "composed" or not compiled_on(device):
        return 1
    return max(1, min(b, threads))


def make_trainer(images: list[PreparedImage], seeds: list[int], cfg: KernelGANConfig,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 mode: str = "composed", threads: int | None = None
                 ) -> BatchTrainer | SplitTrainer:
    """The trainer of ``images`` with ``seeds``: a :class:`SplitTrainer` of
    :func:`part_count` parts where that is more than one, else a :class:`BatchTrainer`.
    ``threads``: the host threads to use (default: torch's thread count)."""
    device = torch.device(device)
    threads = threads or torch_threads()
    parts = part_count(len(images), threads, device, mode)
    if parts == 1:
        return BatchTrainer(images, seeds, cfg, device, dtype, mode, threads=threads)
    return SplitTrainer(images, seeds, cfg, device, dtype, mode, parts, threads)


class _Cancelled(Exception):
    """Raised in a part's progress callback to end it: another part failed, or the caller
    was interrupted."""


class SplitTrainer:
    """B images trained as ``parts`` contiguous :class:`BatchTrainer` parts, each on its own
    thread with ``threads // parts`` threads (the first ``threads % parts`` parts one more).
    The methods the API reads (:meth:`run`, ``final_*``, :attr:`iters_used`,
    :attr:`iteration`, :attr:`graph_status`) give what one trainer of the whole batch gives,
    images in the order given."""

    def __init__(self, images: list[PreparedImage], seeds: list[int], cfg: KernelGANConfig,
                 device: torch.device, dtype: torch.dtype, mode: str, parts: int,
                 threads: int) -> None:
        if len(images) != len(seeds) or not 1 <= parts <= len(images):
            raise ValueError(f"need one seed per image and 1..{len(images)} parts, got "
                             f"{len(seeds)} seeds and {parts} parts")
        edges = [len(images) * i // parts for i in range(parts + 1)]
        self.parts = [BatchTrainer(images[lo:hi], seeds[lo:hi], cfg, device, dtype, mode,
                                   threads=threads // parts + (i < threads % parts))
                      for i, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False))]
        self.b = self.n_images = len(images)
        self.handoffs = 0  # threads handed to a part from one that ended (see run)

    def run(self, iters: int, callback: Callable[[int], None] | None = None,
            every: int = 50, stop: StopRule | None = None) -> float:
        """:meth:`BatchTrainer.run` of every part on its own thread; returns wall seconds.

        ``callback(done)`` is called on this thread (see :func:`_wait`). An error in a part,
        or an interrupt here, ends the others within ``every`` iterations and is raised.
        When a part ends (``stop`` stopped all its images), its threads go to the part
        still training with the most images, which takes them at its next ``every``
        (:func:`kgengine.batch_rows.set_threads`: the same bytes)."""
        start = [p.iteration for p in self.parts]
        cancel, progress = threading.Event(), [0] * len(self.parts)
        ended = [False] * len(self.parts)
        changed = threading.Condition()
        grant = [p.threads for p in self.parts]  # threads each part should train on

        def report(i: int, done: int) -> None:  # on part i's thread, between its steps
            if cancel.is_set():
                raise _Cancelled
            with changed:
                progress[i] = done
                threads = grant[i]
                changed.notify()
            if threads != self.parts[i].threads:
                set_threads(self.parts[i], threads)
                self.handoffs += 1

        def train(i: int) -> float:
            try:
                return self.parts[i].run(iters, lambda done: report(i, done), every, stop)
            finally:
                with changed:
                    progress[i], ended[i] = self.parts[i].iteration - start[i], True
                    _hand_over(i, grant, ended, self.parts)
                    changed.notify()

        t0 = time.perf_counter()
        with torch_single_threaded():  # the parts' runs nest theirs in it: all see 1
            pool = ThreadPoolExecutor(len(self.parts), thread_name_prefix="kgengine-part")
            futures = [pool.submit(train, i) for i in range(len(self.parts))]
            try:
                _wait(futures, progress, ended, changed, callback)
                for f in futures:
                    f.result()
                return time.perf_counter() - t0
            except BaseException:
                cancel.set()
                raise
            finally:
                pool.shutdown(wait=True)

    @property
    def n_parts(self) -> int:
        """How many parts (threads) the batch trains as (the report's ``train_parts``)."""
        return len(self.parts)

    @property
    def iteration(self) -> int:
        """The most iterations any part ran."""
        return max(p.iteration for p in self.parts)

    @property
    def graph_status(self) -> str:
        """"off": CPU parts capture no CUDA graph."""
        return self.parts[0].graph_status

    @property
    def iters_used(self) -> list[int]:
        """Per image: the iteration its result comes from."""
        return [n for p in self.parts for n in p.iters_used]

    def final_kernels(self) -> np.ndarray:
        """The parts' :meth:`BatchTrainer.final_kernels`, (B, K, K) float64."""
        return np.concatenate([p.final_kernels() for p in self.parts])

    def final_weights(self) -> list[list[torch.Tensor]]:
        """Per image, G's weights of its result."""
        return [w for p in self.parts for w in p.final_weights()]

    def final_losses(self) -> list[dict[str, float]]:
        """Per image, the loss terms of its last (or stopping) iteration."""
        return [loss for p in self.parts for loss in p.final_losses()]

    def final_finite(self) -> np.ndarray:
        """Per image (B,) bool: its losses stayed finite up to its result."""
        return np.concatenate([p.final_finite() for p in self.parts])


def _hand_over(i: int, grant: list[int], ended: list[bool], parts: list[BatchTrainer]
               ) -> None:
    """Part ``i`` ended: its ``grant[i]`` threads go to the running part with the most
    images (the first of those), if any."""
    running = [j for j in range(len(parts)) if not ended[j]]
    if running:
        j = max(running, key=lambda r: parts[r].b)
        grant[j], grant[i] = grant[j] + grant[i], 0


def _wait(futures: list, progress: list[int], ended: list[bool],
          changed: threading.Condition, callback: Callable[[int], None] | None) -> None:
    """Until every part ended, ``callback(done)`` each time ``done`` grows: the least number
    of iterations done by the parts still training, and at the end the most a part ran
    (where one trainer of the whole batch would have ended). Raises a part's error as soon
    as one fails (the caller cancels the others)."""
    told = 0
    while True:
        with changed:
            changed.wait(0.5)
            running = [n for n, e in zip(progress, ended, strict=True) if not e]
            done = min(running) if running else max(progress)
        for f in futures:
            if f.done() and f.exception() is not None:
                f.result()
        if callback is not None and done > told:
            told = done
            callback(done)
        if not running:
            return
