"""New input files -> manifest rows: content hash, size probe, duplicates, first seed.

Each path not yet in the manifest is hashed (SHA-256 of its content, the seed identity:
:mod:`kgengine.farm.seeds`) and its size read from the header without decoding (to group
batches by size and to size GPU batches). It is added as a ``pending`` row, or ``failed``
with the reason if it cannot be read. A file with the same content as an image already
listed is skipped as a duplicate (same seed, hence the same kernel). A file whose name is not
valid UTF-8 cannot be stored in the manifest: like an unreadable file it is a failure of
this run, reported on one ``failed:`` line (its name shown with ``\\xNN`` escapes) and
counted with the failed images, and the others are added.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kgengine.errors import BadImageError, shown
from kgengine.farm.inputs import unique_names
from kgengine.farm.manifest import Manifest, NewImage
from kgengine.farm.seeds import content_hash, derive_seed
from kgengine.farm.settings import FarmSettings
from kgengine.imageio import BROKEN_LINK, image_size

#: (sha256, width, height, failure reason) of a file; None where unknown.
Probe = tuple[str | None, int | None, int | None, str | None]


def probe(path: Path) -> Probe:
    """(sha256, width, height, failure reason) of a file, without decoding it.

    A file that cannot be read has no hash and a reason; one whose header cannot be parsed
    has no size (it fails later, when it is read, with the reason).
    """
    try:
        sha = content_hash(path)
    except FileNotFoundError:
        what = BROKEN_LINK if path.is_symlink() else "no such file"
        return None, None, None, f"{shown(path)}: {what}"
    except OSError as exc:
        return None, None, None, f"{shown(path)}: cannot read file ({exc.strerror or exc})"
    try:
        w, h = image_size(path)
    except BadImageError:  # a bad file fails later, when it is read, with the reason
        return sha, None, None, None
    return sha, w, h, None


def add_inputs(man: Manifest, paths: Sequence[Path], settings: FarmSettings,
               log: Callable[[str], None] = lambda m: None) -> tuple[int, int, int]:
    """Add the paths not yet in the manifest (see the module docstring).

    Args:
        man: the pool's manifest. paths: expanded INPUTs (:func:`~kgengine.farm.inputs.
            expand_inputs`). settings: the job settings (its seed derives the first seeds).
        log: one ``skip`` line per duplicate, one ``failed:`` line per unreadable file and
            per file whose name is not valid UTF-8 (shown with ``\\xNN`` escapes; it cannot
            be listed in the manifest: rename it).
    Returns:
        (rows added, duplicates skipped, files failed for their name: not in the manifest,
        the caller counts them with the failed rows).
    """
    known_paths, names, by_hash = man.known()
    usable = [p for p in paths if _utf8_name(p)]
    for p in paths:
        if not _utf8_name(p):
            log(f"failed: {shown(p)}: the file name is not valid UTF-8; rename the file")
    new = [p for p in usable if str(p) not in known_paths]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as ex:
        probes = list(ex.map(probe, new))
    keep: list[tuple[Path, Probe]] = []
    duplicates = 0
    for p, pr in zip(new, probes, strict=True):
        sha = pr[0]
        if sha is not None and sha in by_hash:
            log(f"skip {shown(p)}: same content as {shown(by_hash[sha])}")
            duplicates += 1
            continue
        if sha is not None:
            by_hash[sha] = str(p)
        keep.append((p, pr))
    out_names = unique_names([p for p, _ in keep], [pr[0] for _, pr in keep], names)
    rows = [
        NewImage(name, str(p), sha, w, h,
                 None if sha is None else derive_seed(settings.seed, sha, 0),
                 "failed" if reason else "pending", reason)
        for name, (p, (sha, w, h, reason)) in zip(out_names, keep, strict=True)
    ]
    for r in rows:
        if r.state == "failed":
            log(f"failed: {r.reason}")
    return man.add(rows), duplicates, len(paths) - len(usable)


def _utf8_name(path: Path) -> bool:
    """Whether ``path`` is valid UTF-8 text (what the SQLite manifest stores)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
