"""New input files -> manifest rows: content hash, size probe, duplicates, first seed.

Each path not yet in the manifest is hashed (SHA-256 of its content, the seed identity:
:mod:`kgengine.farm.seeds`) and its size read from the header without decoding (to group
batches by size and to size GPU batches). It is added as a ``pending`` row, or ``failed``
with the reason if it cannot be read. A file with the same content as an image already
listed is skipped as a duplicate (same seed, hence the same kernel), unless that image is not
done yet and its file is gone: then the new file takes its place (a photo renamed or moved
while queued). A file whose name is not
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
from kgengine.farm.manifest import Manifest, NewImage, Row
from kgengine.farm.seeds import content_hash, derive_seed
from kgengine.farm.settings import FarmSettings
from kgengine.imageio import BROKEN_LINK, image_size

#: (sha256, width, height, failure reason) of a file; None where unknown.
Probe = tuple[str | None, int | None, int | None, str | None]


def file_stat(path: Path) -> tuple[int | None, int | None]:
    """(size in bytes, modification time in ns) of a file; (None, None) if it has none."""
    try:
        st = path.stat()
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def new_image(name: str, path: Path, pr: Probe, stat: tuple[int | None, int | None],
              job_seed: int) -> NewImage:
    """The manifest row of ``path`` probed as ``pr`` (its stat taken before the hash):
    pending with its first seed, or failed with the reason."""
    sha, w, h, reason = pr
    return NewImage(name, str(path), sha, w, h,
                    None if sha is None else derive_seed(job_seed, sha, 0),
                    "failed" if reason else "pending", reason, *stat)


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
    new = _relink(man, [p for p in usable if str(p) not in known_paths], known_paths)
    stats = [file_stat(p) for p in new]  # before the hash: an edit meanwhile shows next run
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as ex:
        probes = list(ex.map(probe, new))
    keep: list[tuple[Path, Probe, tuple[int | None, int | None]]] = []
    duplicates = 0
    queued = {r.sha256: r for r in man.rows() if r.state != "done" and r.sha256}
    for p, pr, st in zip(new, probes, stats, strict=True):
        sha = pr[0]
        if sha is not None and sha in queued and not Path(queued[sha].path).exists():
            _take_place(man, queued.pop(sha), p, pr, st, names, settings.seed, log)
        elif sha is not None and sha in by_hash:
            log(f"skip {shown(p)}: same content as {shown(by_hash[sha])}")
            duplicates += 1
            continue
        else:
            keep.append((p, pr, st))
        if sha is not None:
            by_hash[sha] = str(p)
    out_names = unique_names([p for p, _, _ in keep], [pr[0] for _, pr, _ in keep], names)
    rows = [new_image(name, p, pr, st, settings.seed)
            for name, (p, pr, st) in zip(out_names, keep, strict=True)]
    for r in rows:
        if r.state == "failed":
            log(f"failed: {r.reason}")
    return man.add(rows), duplicates, len(paths) - len(usable)


def _relink(man: Manifest, unknown: list[Path], known_paths: set[str]) -> list[Path]:
    """A path listed through a link whose target is a row's path takes that row's place, its
    file not read again (before 0.9.29 rows were stored under the link's target, and a pool
    made then hashed every such photo again at each run, one ``skip`` line each); the row
    keeps its name and outputs. Returns the paths of ``unknown`` still new (``known_paths``
    gains the others)."""
    if not unknown:
        return []
    rows = {r.path: r for r in man.rows()}
    new = []
    for p in unknown:
        row = rows.get(os.path.realpath(p))
        if row is None or row.path == str(p):
            new.append(p)
            continue
        man.set_path(row.id, str(p), f"listed as {p}, a link to {row.path}")
        known_paths.discard(row.path)
        known_paths.add(str(p))
    return new


def _take_place(man: Manifest, row: Row, path: Path, pr: Probe,
                stat: tuple[int | None, int | None], names: set[str], job_seed: int,
                log: Callable[[str], None]) -> None:
    """Move the ``row`` not done yet, whose file is gone, to ``path`` (the same content): it
    is trained from there (a failed row is tried again), named by the new file
    (:func:`unique_names`), with the same seed."""
    names.discard(row.name)
    name = unique_names([path], [pr[0]], names)[0]
    names.add(name)
    man.set_identity(row.id, new_image(name, path, pr, stat, job_seed),
                     f"file moved from {row.path}")
    if row.state == "failed":  # it may have failed for the file that was gone
        man.requeue([row.id], f"file moved from {row.path}; tried again")
    log(f"{shown(path)}: takes the place of {shown(row.path)}, which is gone (same content; "
        f"not trained yet)")


def _utf8_name(path: Path) -> bool:
    """Whether ``path`` is valid UTF-8 text (what the SQLite manifest stores)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
