"""The farm's durable job manifest: ``POOL_DIR/manifest.sqlite``, the single source of truth.

One row per image (table ``images``)::

    id, name (unique output name), path (absolute, unique), sha256 (content hash, the seed
    identity), width, height, seed (first-attempt seed), state, reason, attempts (trainings
    started, a killed one included), diverged (trainings that diverged; picks the next seed),
    seed_used (the seed of the kept kernel), added_at, started_at, finished_at, train_s,
    outputs (JSON: output kind -> path relative to POOL_DIR), confidence (the kernel's
    :attr:`~kgengine.api.EstimateResult.confidence` in [0, 1]; NULL where unknown),
    file_size, file_mtime_ns (the file's size and modification time when its hash was last
    taken, since 0.9.26: a change means the file is hashed again,
    :mod:`kgengine.farm.recheck`; NULL where unknown)

A manifest written before a column existed gets it (``ALTER TABLE ... ADD COLUMN``, NULL in
every row) when it is opened, so old pools keep working.

``state`` is one of ``pending``, ``running``, ``done``, ``failed``. Every state change is
committed at once (SQLite WAL journal, ``synchronous=FULL``) and appended to the ``events``
table (image_id, at, state, detail), so a job killed at any instant (SIGKILL included) leaves
a consistent manifest: rows it had claimed are still ``running`` and :meth:`Manifest.recover`
puts them back to ``pending``. The farm writes an image's files (atomically) *before* marking
it ``done``, so a ``done`` row always has its files. Table ``meta`` holds the job settings
(JSON), which a resumed job must match.

Only one farm process may work on a POOL_DIR at a time: :func:`lock_pool_dir` takes an
exclusive ``flock`` on ``POOL_DIR/farm.lock`` (released by the OS even on SIGKILL; POSIX only,
elsewhere no lock is taken).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgengine.atomic import exclusive_lock
from kgengine.errors import KGEngineError, OutputError

MANIFEST_FILE = "manifest.sqlite"
LOCK_FILE = "farm.lock"
STATES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL UNIQUE,
    sha256 TEXT,
    width INTEGER,
    height INTEGER,
    seed INTEGER,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    diverged INTEGER NOT NULL DEFAULT 0,
    seed_used INTEGER,
    added_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    train_s REAL,
    outputs TEXT,
    confidence REAL,
    file_size INTEGER,
    file_mtime_ns INTEGER
);
CREATE INDEX IF NOT EXISTS images_state ON images (state);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images (id),
    at REAL NOT NULL,
    state TEXT NOT NULL,
    detail TEXT
);
"""
#: Columns added to ``images`` after the first release: name -> SQL type. A manifest without
#: one gets it when opened (:meth:`Manifest._add_missing_columns`).
_ADDED_COLUMNS = {"confidence": "REAL", "file_size": "INTEGER", "file_mtime_ns": "INTEGER"}


@dataclass(frozen=True)
class NewImage:
    """An image to add: its identity, first seed and (for unreadable files) failure."""

    name: str
    path: str
    sha256: str | None
    width: int | None
    height: int | None
    seed: int | None
    state: str = "pending"
    reason: str | None = None
    file_size: int | None = None
    file_mtime_ns: int | None = None


@dataclass(frozen=True)
class Row:
    """One ``images`` row (see the module docstring for the columns)."""

    id: int
    name: str
    path: str
    sha256: str | None
    width: int | None
    height: int | None
    seed: int | None
    state: str
    reason: str | None
    attempts: int
    diverged: int
    seed_used: int | None
    added_at: float
    started_at: float | None
    finished_at: float | None
    train_s: float | None
    outputs: str | None
    confidence: float | None = None
    file_size: int | None = None
    file_mtime_ns: int | None = None

    @property
    def output_paths(self) -> dict[str, str]:
        """Output kind -> path relative to the pool folder (empty unless done)."""
        return json.loads(self.outputs) if self.outputs else {}


class Manifest:
    """The SQLite manifest of one pool folder. Every method commits before returning."""

    def __init__(self, pool_dir: str | os.PathLike) -> None:
        self.pool_dir = Path(pool_dir)
        self.pool_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.pool_dir / MANIFEST_FILE
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60.0)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(_SCHEMA)
            self._add_missing_columns()
        except sqlite3.DatabaseError as exc:
            raise KGEngineError(f"{self.path}: not a usable farm manifest ({exc})") from None

    def _add_missing_columns(self) -> None:
        """Add the :data:`_ADDED_COLUMNS` an older manifest lacks (NULL in existing rows)."""
        have = {r["name"] for r in self.db.execute("PRAGMA table_info(images)")}
        for name, sql_type in _ADDED_COLUMNS.items():
            if name in have:
                continue
            try:
                self.db.execute(f"ALTER TABLE images ADD COLUMN {name} {sql_type}")
            except sqlite3.OperationalError as exc:  # added meanwhile by another process
                if "duplicate column" not in str(exc):
                    raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``).

        Raises:
            OutputError: SQLite cannot write (full disk, read-only folder, ...): one line
                naming the manifest; the transaction is rolled back.
        """
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self.db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
            raise OutputError(self.path, f"cannot update the manifest ({exc})") from exc

    def _event(self, db: sqlite3.Connection, ids: Sequence[int], state: str,
               detail: str | None, now: float) -> None:
        db.executemany("INSERT INTO events (image_id, at, state, detail) VALUES (?, ?, ?, ?)",
                       [(i, now, state, detail) for i in ids])

    # ------------------------------------------------------------------ settings
    def settings(self) -> dict[str, Any] | None:
        """The stored job settings, or None for a new manifest."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        return None if row is None else json.loads(row["value"])

    def set_settings(self, settings: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('settings', ?)",
                       (json.dumps(settings, sort_keys=True),))

    # ------------------------------------------------------------------ adding
    def known(self) -> tuple[set[str], set[str], dict[str, str]]:
        """(paths, names, sha256 -> path) of the rows already there."""
        rows = self.db.execute("SELECT path, name, sha256 FROM images").fetchall()
        return ({r["path"] for r in rows}, {r["name"] for r in rows},
                {r["sha256"]: r["path"] for r in rows if r["sha256"]})

    def add(self, images: Sequence[NewImage]) -> int:
        """Insert new rows (one transaction); returns how many."""
        now = time.time()
        with self._tx() as db:
            for im in images:
                if im.state not in ("pending", "failed"):
                    raise ValueError(f"new rows are pending or failed, not {im.state!r}")
                cur = db.execute(
                    "INSERT INTO images (name, path, sha256, width, height, seed, state, reason,"
                    " added_at, finished_at, file_size, file_mtime_ns)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (im.name, im.path, im.sha256, im.width, im.height, im.seed, im.state,
                     im.reason, now, now if im.state == "failed" else None, im.file_size,
                     im.file_mtime_ns),
                )
                self._event(db, [int(cur.lastrowid)], im.state, im.reason, now)
        return len(images)

    def set_identity(self, image_id: int, new: NewImage, detail: str | None = None) -> None:
        """Give a row the identity of ``new`` (path, name, sha256, size, first seed and file
        stat; not its state): its file was renamed, edited or first read. Another sha256
        starts its divergence count again (its seeds are a new file's). With ``detail``, an
        event (in the row's state) says why."""
        with self._tx() as db:
            db.execute("UPDATE images SET name = ?, path = ?, width = ?, height = ?, seed = ?,"
                       " file_size = ?, file_mtime_ns = ?, diverged = CASE WHEN sha256 IS ?"
                       " THEN diverged ELSE 0 END, sha256 = ? WHERE id = ?",
                       (new.name, new.path, new.width, new.height, new.seed, new.file_size,
                        new.file_mtime_ns, new.sha256, new.sha256, image_id))
            if detail is not None:
                state = db.execute("SELECT state FROM images WHERE id = ?",
                                   (image_id,)).fetchone()[0]
                self._event(db, [image_id], state, _one_line(detail), time.time())

    def set_path(self, image_id: int, path: str, detail: str) -> None:
        """Record a row's file under another path to the same file (a link), with an event."""
        with self._tx() as db:
            db.execute("UPDATE images SET path = ? WHERE id = ?", (path, image_id))
            state = db.execute("SELECT state FROM images WHERE id = ?", (image_id,)).fetchone()[0]
            self._event(db, [image_id], state, _one_line(detail), time.time())

    def set_file_stat(self, image_id: int, size: int, mtime_ns: int) -> None:
        """Record a row's file size and modification time (its content is unchanged)."""
        with self._tx() as db:
            db.execute("UPDATE images SET file_size = ?, file_mtime_ns = ? WHERE id = ?",
                       (size, mtime_ns, image_id))

    # ------------------------------------------------------------------ transitions
    def recover(self) -> int:
        """Rows left ``running`` by a killed job -> ``pending``; returns how many."""
        now = time.time()
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM images WHERE state = 'running'")]
            db.execute("UPDATE images SET state = 'pending', reason = 'interrupted; redone'"
                       " WHERE state = 'running'")
            self._event(db, ids, "pending", "interrupted (job killed or stopped)", now)
        return len(ids)

    def retry_failed(self) -> int:
        """``failed`` rows -> ``pending`` with their divergence count reset; returns how many."""
        now = time.time()
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM images WHERE state = 'failed'")]
            db.execute("UPDATE images SET state = 'pending', reason = NULL, diverged = 0"
                       " WHERE state = 'failed'")
            self._event(db, ids, "pending", "retry of a failed image", now)
        return len(ids)

    def claim(self, ids: Sequence[int]) -> None:
        """``pending`` -> ``running`` (attempts + 1) for a batch about to be trained."""
        now = time.time()
        with self._tx() as db:
            for i in ids:
                cur = db.execute("UPDATE images SET state = 'running', attempts = attempts + 1,"
                                 " started_at = ? WHERE id = ? AND state = 'pending'", (now, i))
                if cur.rowcount != 1:
                    raise KGEngineError(f"{self.path}: image {i} is not pending")
            self._event(db, ids, "running", None, now)

    def mark_done(self, image_id: int, seed_used: int, train_s: float,
                  outputs: dict[str, str], confidence: float | None = None) -> None:
        """``running`` -> ``done``: call only once the outputs are on disk.

        ``confidence``: the restarts' agreement (None with one training per image).
        """
        now = time.time()
        conf = None if confidence is None else float(confidence)
        with self._tx() as db:
            db.execute("UPDATE images SET state = 'done', reason = NULL, seed_used = ?,"
                       " train_s = ?, finished_at = ?, outputs = ?, confidence = ? WHERE id = ?",
                       (int(seed_used), float(train_s), now, json.dumps(outputs), conf,
                        image_id))
            self._event(db, [image_id], "done", None, now)

    def mark_failed(self, image_id: int, reason: str) -> None:
        """-> ``failed`` with a one-line reason."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE images SET state = 'failed', reason = ?, finished_at = ?,"
                       " confidence = NULL WHERE id = ?", (_one_line(reason), now, image_id))
            self._event(db, [image_id], "failed", _one_line(reason), now)

    def requeue(self, ids: Sequence[int], reason: str, diverged: bool = False) -> None:
        """-> ``pending`` again (to retry), counting a divergence if ``diverged``."""
        now = time.time()
        with self._tx() as db:
            db.executemany("UPDATE images SET state = 'pending', reason = ?,"
                           " diverged = diverged + ? WHERE id = ?",
                           [(_one_line(reason), int(diverged), i) for i in ids])
            self._event(db, ids, "pending", _one_line(reason), now)

    # ------------------------------------------------------------------ queries
    def rows(self, state: str | None = None) -> list[Row]:
        """Rows (of one state), in id order."""
        if state is None:
            cur = self.db.execute("SELECT * FROM images ORDER BY id")
        else:
            cur = self.db.execute("SELECT * FROM images WHERE state = ? ORDER BY id", (state,))
        return [Row(**dict(r)) for r in cur.fetchall()]

    def pending(self) -> list[Row]:
        """``pending`` rows grouped by size (height, width, then id): similar sizes share a
        batch, which keeps the zero-padding of a batch small."""
        cur = self.db.execute(
            "SELECT * FROM images WHERE state = 'pending'"
            " ORDER BY COALESCE(height, 0), COALESCE(width, 0), id")
        return [Row(**dict(r)) for r in cur.fetchall()]

    def counts(self) -> dict[str, int]:
        """Rows per state (every state present, 0 when none)."""
        out = dict.fromkeys(STATES, 0)
        for r in self.db.execute("SELECT state, COUNT(*) AS n FROM images GROUP BY state"):
            out[r["state"]] = r["n"]
        return out

    def events(self, image_id: int | None = None) -> list[tuple[int, float, str, str | None]]:
        """(image_id, time, state, detail) transitions, oldest first."""
        sql = "SELECT image_id, at, state, detail FROM events"
        cur = (self.db.execute(sql + " ORDER BY id") if image_id is None
               else self.db.execute(sql + " WHERE image_id = ? ORDER BY id", (image_id,)))
        return [tuple(r) for r in cur.fetchall()]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def lock_pool_dir(pool_dir: str | os.PathLike) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on ``pool_dir`` (``farm.lock``) or raise if another farm has it."""
    return exclusive_lock(pool_dir, LOCK_FILE,
                          "another farm process is working on this pool folder")
