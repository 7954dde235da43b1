"""Fault injection for the reliability tests: random write failures and simulated kills."""

from __future__ import annotations

import errno
import random
from pathlib import Path

from kgengine import atomic


class Killed(BaseException):
    """A simulated SIGKILL: nothing of the job's clean-up runs and a ``.tmp`` is left."""


def inject_write_faults(monkeypatch, seed: int, kill_below: float,
                        fail_below: float) -> dict[str, int]:
    """Make every atomic write, by a seeded uniform draw, be killed mid-way (draw below
    ``kill_below``: a ``.tmp`` stays, :class:`Killed` is raised), fail with ENOSPC/EFBIG
    (below ``fail_below``) or succeed. Returns the live counts ``{"kill": n, "fail": n}``."""
    real, rng, injected = atomic._commit, random.Random(seed), {"fail": 0, "kill": 0}

    def faulty(tmp: str, path: Path) -> None:
        draw = rng.random()
        if draw < kill_below:
            injected["kill"] += 1
            # named as atomic_write's mkstemp names them (8 random characters)
            (path.parent / f".{path.name}.killed00.tmp").write_bytes(b"partial")
            raise Killed
        if draw < fail_below:
            injected["fail"] += 1
            raise OSError(rng.choice([errno.ENOSPC, errno.EFBIG]), "injected write failure")
        real(tmp, path)

    monkeypatch.setattr(atomic, "_commit", faulty)
    return injected
