"""Per-image seeds for the farm: a pure function of (job seed, image identity, attempt).

``seed = int.from_bytes(sha256("kgengine-farm|<job_seed>|<identity>|<attempt>")[:8], "little")
& (2**63 - 1)``, a non-negative signed 64-bit integer (what the trainer's counter-based random
stream and ``torch.Generator.manual_seed`` take).

The identity is the SHA-256 of the image file's *content* (:func:`content_hash`), not its
path: moving, renaming or re-listing a photo, or running on another machine whose storage is
mounted elsewhere, keeps its seed, hence its kernel. Because the seed depends on nothing
else, results do not depend on the batch an image lands in, the order of the inputs, or the
worker that trains it. ``attempt`` is 0 for the first training and 1 for the retry after a
diverged run (another seed, still reproducible).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Bytes read at a time when hashing files.
_CHUNK = 1 << 20
#: Seeds are kept below 2**63 (non-negative int64).
SEED_MASK = 2**63 - 1


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of the file's bytes. Raises ``OSError`` if it cannot be read."""
    h = hashlib.sha256()
    with open(Path(path), "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def content_hash_or_none(path: str | os.PathLike) -> str | None:
    """:func:`content_hash`, or None where the file cannot be read (whoever reads it next
    fails, naming it)."""
    try:
        return content_hash(path)
    except OSError:
        return None


def derive_seed(job_seed: int, identity: str, attempt: int = 0) -> int:
    """The training seed of one image: ``sha256(job_seed, identity, attempt)`` -> [0, 2**63).

    Args:
        job_seed: the farm's ``--seed``.
        identity: the image's content hash (:func:`content_hash`).
        attempt: 0 first, 1 for the retry after divergence, ...
    """
    text = f"kgengine-farm|{int(job_seed)}|{identity}|{int(attempt)}"
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & SEED_MASK
