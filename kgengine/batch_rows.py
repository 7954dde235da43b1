"""Changes to a running batch: without its stopped images (what
:class:`~kgengine.trainer.BatchTrainer` does when ``--stop auto`` stops some of its images,
:func:`drop`), and on another number of threads (:func:`set_threads`).

A stopped image keeps its kernel, G and losses of that moment (the trainer's ``_freeze``);
then :func:`drop` takes it out, so that the next iterations cost what the images still
training cost. Each image's arithmetic is its own at any batch size on one CPU
(``tests/test_batch_invariance.py``), so the others go on with the bytes they would have had
in the full batch (``tests/test_stopping.py``, on each of the trainer's steps).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kgengine import graph_step, lean_step
from kgengine.compiled import discriminator_for
from kgengine.flatbuf import leaves, take_rows

#: the trainer's per-image tensors, each (B, ...), besides its dicts of them and its buffers
PER_IMAGE = ("images", "cdf", "sizes", "seeds", "bic_counter", "similar", "insert_constraints",
             "finite")


def drop(tr: Any, gone: np.ndarray) -> None:
    """Take the images ``gone`` (B,) bool out of the batch of trainer ``tr`` (typed ``Any``:
    the trainer imports this module).

    Every per-image tensor keeps its other rows; the flat buffers (G's and D's parameters,
    Adam's moments) are laid out again; ``tr.rows`` (the images as given that the batch
    still trains) and ``tr.b`` shrink; the caches made for the old batch (the lean step's
    views and jobs, a composed kernel, the static step's buffers) are made again on first
    use. Adam's step count and learning rate are shared by the batch and stay.
    """
    keep = np.flatnonzero(~gone)
    take(tr, keep)
    tr.rows = tr.rows[keep]


def take(tr: Any, keep: np.ndarray) -> None:
    """Make ``tr``'s batch the rows ``keep`` (R,) of its current one, in that order (a row
    may come more than once: copies), with every per-image state :func:`drop` lists; ``b``
    becomes R. The caller sets :attr:`rows` (and what else its rows mean)."""
    lean_step.settle(tr)
    idx = torch.as_tensor(keep, device=tr.device)
    tr.b = len(keep)
    for name in PER_IMAGE:
        setattr(tr, name, getattr(tr, name)[idx])
    tr.lam = {k: v[idx] for k, v in tr.lam.items()}
    tr.d_state = {k: v[idx] for k, v in tr.d_state.items()}
    tr.last = {k: v[idx] for k, v in tr.last.items()}
    tr._all_similar = tr._host and bool(tr.similar.all())
    shapes = [w.shape for w in tr.g_weights]
    tr.g_flat, tr.g_weights = leaves(take_rows(tr.g_flat, shapes, idx), shapes, tr.b)
    tr.opt_g.rebind(tr.g_flat, take_rows(tr.opt_g.m, shapes, idx),
                    take_rows(tr.opt_g.v, shapes, idx))
    shapes = [w.shape for w in tr._d_leaves]
    tr.d_flat, tr._d_leaves = leaves(take_rows(tr.d_flat, shapes, idx), shapes, tr.b)
    tr.opt_d.rebind(tr.d_flat, take_rows(tr.opt_d.m, shapes, idx),
                    take_rows(tr.opt_d.v, shapes, idx))
    start, block = tr._noise_chunk
    if start >= 0:
        tr._noise_chunk = (start, block[idx])
    tr._next_kernel = (-1, None)
    tr._reset_lean()
    if tr._static is not None:
        old = tr._static
        tr._static = graph_step.StaticStep(tr, old.capture)
        tr._static.reason = old.reason


def set_threads(tr: Any, threads: int) -> None:
    """Train ``tr`` on ``threads`` host threads from its next step on (call it between steps,
    on the thread that runs the trainer). The bytes do not change: an image's arithmetic is
    the same on any thread count, and the lean step's caches are made again on first use,
    as after :func:`drop`. (:mod:`kgengine.split_trainer` hands a part that ended its
    threads to one still training.)"""
    lean_step.settle(tr)
    tr.threads = threads
    tr._d_forward = discriminator_for(tr.device, threads)
    tr._next_kernel = (-1, None)
    tr._reset_lean()
