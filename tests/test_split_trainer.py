"""A CPU batch trained as parts on threads (kgengine.split_trainer) gives the whole batch's
bytes, reports progress on the caller's thread, and ends every part when one fails."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from kgengine.api import estimate_kernels
from kgengine.batch_rows import set_threads
from kgengine.config import KernelGANConfig
from kgengine.prepare import prepare_image
from kgengine.split_trainer import SplitTrainer, make_trainer, part_count
from kgengine.stopping import StopRule
from kgengine.trainer import BatchTrainer

# as tests/test_batch_invariance.py: 300 iterations pass every phase of the schedule
CFG = KernelGANConfig(iters=300, lr_decay_every=100, bic_decay_every=100,
                      bic_loss_threshold=10.0)
SEEDS = [3, 17, 29]


@pytest.fixture(scope="module")
def images(sample_hr):
    crops = [sample_hr[:100, :120], sample_hr[150:250, 40:136], sample_hr[200:, 200:]]
    return [prepare_image(c, CFG) for c in crops]


def test_part_count():
    cpu = torch.device("cpu")
    assert part_count(4, 2, cpu, "composed") == 2
    assert part_count(3, 8, cpu, "composed") == 3
    assert part_count(1, 2, cpu, "composed") == 1
    assert part_count(8, 1, cpu, "composed") == 1
    assert part_count(4, 2, cpu, "layers") == 1  # the reference trains whole
    assert part_count(4, 2, torch.device("meta"), "composed") == 1  # not the compiled CPU


def test_make_trainer_splits_only_with_threads_to_spare(images):
    whole = make_trainer(images, SEEDS, CFG, threads=1)
    assert isinstance(whole, BatchTrainer) and whole.threads == 1
    split = make_trainer(images, SEEDS, CFG, threads=2)
    assert isinstance(split, SplitTrainer)
    assert [p.b for p in split.parts] == [1, 2] and [p.threads for p in split.parts] == [1, 1]
    five = SplitTrainer(images, SEEDS, CFG, torch.device("cpu"), torch.float32, "composed", 2,
                        5)
    assert [p.threads for p in five.parts] == [3, 2]


def _whole(images, threads: int, stop: StopRule | None = None) -> BatchTrainer:
    t = BatchTrainer(images, SEEDS, CFG, threads=threads)
    t.run(CFG.iters, stop=stop)
    return t


@pytest.mark.parametrize("stop", [None, StopRule(tol=0.06, patience=1, min_iters=60, every=30)],
                         ids=["full", "stopped"])
def test_parts_give_the_whole_batch_bytes(images, stop):
    """Float32, 300 iterations (long enough for a last-bit difference to show): kernels, G,
    losses, finite flags and stopping iterations of 3 images trained as parts 1 + 2 on two
    threads equal one batch of 3 on two threads."""
    old = torch.get_num_threads()
    split = make_trainer(images, SEEDS, CFG, threads=2)
    assert isinstance(split, SplitTrainer)
    seen: list[tuple[int, str]] = []
    split.run(CFG.iters, lambda d: seen.append((d, threading.current_thread().name)), 50, stop)
    assert torch.get_num_threads() == old
    whole = _whole(images, 2, stop)
    if stop is not None:
        # the parts ended apart (which one first depends on the CPU's sample: an AVX2 and an
        # AVX-512 host train other bytes), and the one still training took the ended one's
        # thread (whether a part ended while the other still trained, and so handed its
        # thread over, depends on timing: test_a_part_that_ends_hands_its_thread_over forces
        # it; which part ends first in wall time is timing too, not its iteration count: the
        # one-image part can stop at more iterations and still end first)
        ends = [max(p.iters_used) for p in split.parts]
        assert ends[0] != ends[1]
        if split.handoffs:
            assert split.handoffs == 1 and sorted(p.threads for p in split.parts) == [1, 2]
    assert split.iters_used == whole.iters_used
    assert split.iteration == whole.iteration
    assert split.final_kernels().tobytes() == whole.final_kernels().tobytes()
    assert split.final_losses() == whole.final_losses()
    assert (split.final_finite() == whole.final_finite()).all()
    for a, b in zip(split.final_weights(), whole.final_weights(), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    # progress: on this thread, growing, ending where the whole batch ended
    done = [d for d, _ in seen]
    assert done == sorted(set(done)) and done[-1] == whole.iteration
    assert {name for _, name in seen} == {threading.current_thread().name}


def test_a_part_that_ends_hands_its_thread_over(images, monkeypatch):
    """Part 1 (images 1, 2) ends after 40 iterations; part 0 (image 0) takes its thread at its
    next report and trains on on 2 threads: image 0 gets the bytes it gets alone."""
    split = SplitTrainer(images, SEEDS, CFG, torch.device("cpu"), torch.float32, "composed", 2,
                         2)
    short = split.parts[1]
    real_run = short.run
    monkeypatch.setattr(short, "run", lambda iters, *a, **k: real_run(40, *a, **k))
    split.run(CFG.iters, None, 50)
    assert split.handoffs == 1 and split.parts[0].threads == 2
    assert split.parts[0].iteration == CFG.iters and short.iteration == 40
    alone = BatchTrainer(images[:1], SEEDS[:1], CFG, threads=1)
    alone.run(CFG.iters)
    assert split.parts[0].final_kernels().tobytes() == alone.final_kernels().tobytes()


def test_a_failing_part_ends_the_others(images, monkeypatch):
    split = SplitTrainer(images, SEEDS, CFG, torch.device("cpu"), torch.float32, "composed", 2,
                         2)
    bad = split.parts[1]
    real_step = bad.step

    def failing_step() -> None:
        if bad.iteration == 20:
            raise RuntimeError("part 1 failed")
        real_step()

    monkeypatch.setattr(bad, "step", failing_step)
    old = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="part 1 failed"):
        split.run(CFG.iters, every=10)
    assert split.parts[0].iteration < CFG.iters  # cancelled, not run to the end
    assert torch.get_num_threads() == old


def test_estimate_kernels_equal_on_one_and_two_threads(sample_hr):
    """The API's restarts: one batch of 2 images x 2 restarts on one thread (one trainer)
    against two threads (two parts): the same result bytes."""
    cfg = KernelGANConfig(iters=200)
    crops = [sample_hr[:110, :120], sample_hr[150:260, 40:150]]
    old = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out.append(estimate_kernels(crops, seeds=[5, 9], config=cfg, restarts=2,
                                        stop="full", device="cpu"))
    finally:
        torch.set_num_threads(old)
    assert [r.report["train_parts"] for r in out[0] + out[1]] == [1, 1, 2, 2]
    for a, b in zip(*out, strict=True):
        assert a.kernel_x2.tobytes() == b.kernel_x2.tobytes()
        assert a.raw_kernel.tobytes() == b.raw_kernel.tobytes()
        assert a.confidence == b.confidence
    assert not np.array_equal(out[0][0].kernel_x2, out[0][1].kernel_x2)


@pytest.mark.parametrize("which", [[0], [0, 1, 2]], ids=["B=1", "B=3"])
def test_set_threads_between_steps_keeps_the_bytes(images, which):
    """A trainer handed more threads (and fewer) between steps, as a part is when another
    ends: the same kernels, G and losses as on one thread throughout (B = 1 switches to and
    from the step that overlaps on the second thread)."""
    imgs, seeds = [images[i] for i in which], [SEEDS[i] for i in which]
    steady = BatchTrainer(imgs, seeds, CFG, threads=1)
    steady.run(CFG.iters)
    moved = BatchTrainer(imgs, seeds, CFG, threads=1)
    for n in (2, 1, 2):
        moved.run(CFG.iters // 4)
        set_threads(moved, n)
    moved.run(CFG.iters - 3 * (CFG.iters // 4))
    assert moved.threads == 2 and moved.iteration == steady.iteration
    assert moved.final_kernels().tobytes() == steady.final_kernels().tobytes()
    assert moved.final_losses() == steady.final_losses()
