"""The compliance store: a separate SQLite database holding activity until adapters
have archived it.

Rows keep the outbox id as their key, so moving the same row twice stores it once.
A run claims its events as a batch before any adapter writes; a run that crashed is
finished under the same batch (same file names), so archives never hold a row twice.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from core.store.base import OutboxRecord

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
    " payload TEXT NOT NULL, ts_ms INTEGER NOT NULL, batch INTEGER)",
    "CREATE INDEX IF NOT EXISTS events_batch ON events (batch)",
    "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " created_ms INTEGER NOT NULL, events INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT NOT NULL DEFAULT '', done_ms INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS control (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class Batch(msgspec.Struct, frozen=True):
    id: int
    created_ms: int
    attempts: int
    events: list[OutboxRecord]


class Status(msgspec.Struct, frozen=True):
    pending_events: int  # in the compliance store, not yet archived
    oldest_ms: int  # ts of the oldest of them (0: none)
    open_batch: int  # the batch being retried (0: none)
    attempts: int
    last_error: str
    last_success_ms: int
    run_requested: bool


class ComplianceStore:
    """Synchronous (the service calls it off its loop); one connection, one lock."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # an archive promise: survive power loss
        self._lock = threading.Lock()
        with self._tx() as c:
            for statement in _SCHEMA:
                c.execute(statement)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def insert(self, rows: list[OutboxRecord]) -> None:
        """Idempotent by outbox id: a relay that crashed before deleting re-inserts nothing."""
        with self._tx() as c:
            c.executemany(
                "INSERT OR IGNORE INTO events (id, kind, payload, ts_ms) VALUES (?, ?, ?, ?)",
                [(r.id, r.kind, r.payload, r.ts_ms) for r in rows],
            )

    def claim_batch(self, max_events: int) -> Batch | None:
        """The unfinished batch if there is one, else a new one of the oldest free events."""
        with self._tx() as c:
            row = c.execute(
                "SELECT id, created_ms, attempts FROM batches WHERE done_ms = 0 ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                free = c.execute(
                    "SELECT id FROM events WHERE batch IS NULL ORDER BY id LIMIT ?", (max_events,)
                ).fetchall()
                if not free:
                    return None
                now = int(time.time() * 1000)
                cur = c.execute(
                    "INSERT INTO batches (created_ms, events) VALUES (?, ?)", (now, len(free))
                )
                batch_id = int(cur.lastrowid or 0)
                c.executemany(
                    "UPDATE events SET batch = ? WHERE id = ?", [(batch_id, r[0]) for r in free]
                )
                row = (batch_id, now, 0)
            events = [
                OutboxRecord(id=r[0], kind=r[1], payload=r[2], ts_ms=r[3])
                for r in c.execute(
                    "SELECT id, kind, payload, ts_ms FROM events WHERE batch = ? ORDER BY id",
                    (row[0],),
                )
            ]
        return Batch(id=row[0], created_ms=row[1], attempts=row[2], events=events)

    def batch_failed(self, batch_id: int, error: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE batches SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:1000], batch_id),
            )

    def batch_done(self, batch_id: int) -> None:
        """Every adapter succeeded: the batch's rows go (ARCHITECTURE §5)."""
        with self._tx() as c:
            c.execute("DELETE FROM events WHERE batch = ?", (batch_id,))
            c.execute(
                "UPDATE batches SET done_ms = ?, last_error = '' WHERE id = ?",
                (int(time.time() * 1000), batch_id),
            )

    def request_run(self) -> None:
        """`pchat admin compliance run-now`: the service runs its adapters at its next look."""
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO control (key, value) VALUES ('run_now', '1')")

    def take_run_request(self) -> bool:
        with self._tx() as c:
            found = c.execute("SELECT 1 FROM control WHERE key = 'run_now'").fetchone()
            c.execute("DELETE FROM control WHERE key = 'run_now'")
        return found is not None

    def status(self) -> Status:
        with self._lock:
            c = self._conn
            pending, oldest = c.execute("SELECT count(*), min(ts_ms) FROM events").fetchone()
            open_row = c.execute(
                "SELECT id, attempts, last_error FROM batches WHERE done_ms = 0 ORDER BY id LIMIT 1"
            ).fetchone()
            last = c.execute("SELECT max(done_ms) FROM batches").fetchone()[0]
            requested = c.execute("SELECT 1 FROM control WHERE key = 'run_now'").fetchone()
        return Status(
            pending_events=int(pending),
            oldest_ms=int(oldest or 0),
            open_batch=int(open_row[0]) if open_row else 0,
            attempts=int(open_row[1]) if open_row else 0,
            last_error=str(open_row[2]) if open_row else "",
            last_success_ms=int(last or 0),
            run_requested=requested is not None,
        )
