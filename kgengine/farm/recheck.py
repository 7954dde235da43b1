"""Listed images whose files changed since they were hashed: edited in place, or unreadable
when listed.

A row records its file's SHA-256 (the seed identity) and, since 0.9.26, the file's size and
modification time when it was hashed. At the start of each run, :func:`recheck_rows`:

- hashes a ``pending`` row's file again when its size or time differs or is not recorded,
  or its hash is unknown (the file could not be read when listed). Another hash gives the
  row the file's new identity (hash, size, first seed: what a new pool would give it), said
  on one line; a file that still cannot be read fails alone, on one ``failed:`` line;
- hashes a ``done`` row's file again when its size or time differs. Another hash means the
  photo was edited in place: its old files are removed and it is queued again with the new
  identity, said on one line. The same hash only records the new time (a file touched or
  copied with its bytes), so it is not hashed again next run. A ``done`` row without a
  recorded time (listed before 0.9.26) gets the file's time now, without a hash;
- fails a row whose file now has the content that another listed file holds now (a
  duplicate, as :mod:`kgengine.farm.intake` skips one when it is listed; since 0.9.27): a
  done row's old files are removed first, and the reason names the other file. Contents
  are compared as the files are now, after every changed file is hashed: two files that
  swapped their contents are both redone, and of two changed into one content the first
  listed is trained;
- leaves a row whose file is gone as it is (a kernel that is done stays in the pool; a
  pending file fails when it is read, naming it) and ``failed`` rows (``--retry-failed``
  queues them first).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from kgengine.errors import shown
from kgengine.farm.intake import file_stat, new_image, probe
from kgengine.farm.manifest import Manifest, NewImage, Row


def recheck_rows(man: Manifest, pool_dir: Path, job_seed: int,
                 log: Callable[[str], None] = lambda m: None) -> tuple[int, int]:
    """Bring the pending and done rows up to date with their files (module docstring).

    Args:
        man: the pool's manifest. pool_dir: the pool folder (a requeued row's old files are
            removed from it). job_seed: the job's seed (first seeds of new identities).
        log: one line per row whose file changed, and a ``failed:`` line per file that
            cannot be read.
    Returns:
        (rows queued again or given a new identity, rows failed: unreadable, or now a
        duplicate of another listed file).
    """
    moved, failed = _hash_changed(man, log)
    # what each file holds now: the rows not changed keep their hash; of changed rows that
    # now hold one content, the first (by id) takes it and the others are its duplicates
    holder = {r.sha256: r.path for r in man.rows() if r.sha256 and r.id not in moved}
    changed = 0
    for row, new in sorted(moved.values(), key=lambda m: m[0].id):
        if new.sha256 in holder:
            _fail_duplicate(man, row, pool_dir, holder[new.sha256], log)
            failed += 1
            continue
        holder[new.sha256] = row.path
        _renew(man, row, pool_dir, new_image(row.name, Path(row.path), new.probe, new.stat,
                                             job_seed), log)
        changed += 1
    return changed, failed


class _Now(NamedTuple):
    """A changed file as it is now: its probe (``sha256`` first) and stat."""

    probe: tuple
    stat: tuple[int | None, int | None]

    @property
    def sha256(self) -> str:
        return self.probe[0]


def _hash_changed(man: Manifest, log: Callable[[str], None]
                  ) -> tuple[dict[int, tuple[Row, _Now]], int]:
    """Hash again the pending and done rows whose file's size or time changed (module
    docstring): ({row id: (row, its file now)} of those whose content changed, rows failed
    because their file cannot be read). Unchanged contents just record the new stat."""
    moved: dict[int, tuple[Row, _Now]] = {}
    failed = 0
    for row in man.rows("pending") + man.rows("done"):
        path = Path(row.path)
        stat = file_stat(path)
        if row.sha256 is not None and (stat[0] is None
                                       or stat == (row.file_size, row.file_mtime_ns)):
            continue  # gone (see the module docstring), or unchanged
        if row.state == "done" and row.file_size is None:
            man.set_file_stat(row.id, *stat)  # listed before 0.9.26: trusted as it is now
            continue
        pr = probe(path)  # a file never read (no hash) that is gone fails here, naming it
        if pr[0] is None:
            if row.state == "pending":
                man.mark_failed(row.id, pr[3] or f"{shown(path)}: cannot read file")
                log(f"failed: {pr[3]}")
                failed += 1
            continue
        if pr[0] == row.sha256:
            man.set_file_stat(row.id, *stat)
            continue
        moved[row.id] = (row, _Now(pr, stat))
    return moved, failed


def _fail_duplicate(man: Manifest, row: Row, pool_dir: Path, other: str,
                    log: Callable[[str], None]) -> None:
    """Fail ``row``, whose file changed into a copy of ``other``'s (a done row's old files
    go first): one kernel per content, as when a duplicate is listed."""
    for rel in (row.output_paths.values() if row.state == "done" else ()):
        (pool_dir / rel).unlink(missing_ok=True)
    reason = (f"{shown(row.path)}: same content as {shown(other)} (the file changed since it "
              "was listed); a duplicate, not trained")
    man.mark_failed(row.id, reason)
    log(f"failed: {reason}")


def _renew(man: Manifest, row: Row, pool_dir: Path, new: NewImage,
           log: Callable[[str], None]) -> None:
    """Give ``row`` its file's new identity ``new``; a done row's old files go first and it
    is queued again."""
    was = f"stored sha256 {row.sha256[:12]}" if row.sha256 else "unreadable when listed"
    detail = f"the file changed since it was listed ({was}, now {new.sha256[:12]})"
    if row.state == "done":
        for rel in row.output_paths.values():
            (pool_dir / rel).unlink(missing_ok=True)
        man.requeue([row.id], f"{detail}; redone")
        log(f"{shown(row.path)}: redone, its file changed since its kernel was made "
            f"({was}, now {new.sha256[:12]})")
    elif row.sha256 is not None:
        log(f"{shown(row.path)}: {detail}; trained as it is now")
    man.set_identity(row.id, new, detail)
