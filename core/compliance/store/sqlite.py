"""The compliance store on SQLite (store layer): a separate database file on one host.

The default. Calls run on a worker thread (``asyncio.to_thread``) behind one lock, each
change in one ``BEGIN IMMEDIATE`` transaction (base.py lists the invariants).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from core.compliance.store.base import Batch, Fenced, Status
from core.errors import StoreError
from core.store.base import OutboxRecord

_T = TypeVar("_T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
    " payload TEXT NOT NULL, ts_ms INTEGER NOT NULL, batch INTEGER)",
    "CREATE INDEX IF NOT EXISTS events_batch ON events (batch)",
    "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " created_ms INTEGER NOT NULL, events INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT NOT NULL DEFAULT '', done_ms INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS control (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS file_gc (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE)",
    # The uploads among the pending events, for the copies' sweep (``files_referred``):
    # a few rows however many posts wait, so a name is looked for among those alone.
    "CREATE INDEX IF NOT EXISTS events_uploads ON events (id) WHERE kind = 'FILEUPLOAD'",
)
ERROR_CHARS = 1000  # an adapter's error text kept for `pchat admin compliance status`


def now_ms() -> int:
    return int(time.time() * 1000)


class SqliteComplianceStore:
    """``ComplianceStore`` in one SQLite file; one connection, one lock."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._epoch = 0  # 0: never took over, so it may not change events or batches

    async def open(self) -> None:
        if self._conn is None:
            await asyncio.to_thread(self._open)

    def _open(self) -> None:
        try:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=5
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # an archive promise: survive power loss
        except sqlite3.Error as exc:
            raise StoreError(f"compliance store {self._path}: {exc}") from exc
        self._conn = conn
        with self._tx() as c:
            for statement in _SCHEMA:
                c.execute(statement)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], _T], *, fenced: bool = False) -> _T:
        def call() -> _T:
            with self._tx() as c:
                if fenced:
                    self._check_epoch(c)
                return fn(c)

        return await asyncio.to_thread(call)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            raise StoreError("the compliance store is not open")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"compliance store {self._path}: {exc}") from exc
            try:
                yield self._conn
            except BaseException as exc:
                self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"compliance store {self._path}: {exc}") from exc
                raise
            self._conn.execute("COMMIT")

    def _check_epoch(self, c: sqlite3.Connection) -> None:
        row = c.execute("SELECT value FROM control WHERE key = 'epoch'").fetchone()
        if self._epoch == 0 or row is None or int(row[0]) != self._epoch:
            raise Fenced(
                f"compliance store taken over (epoch {row and row[0]}, ours {self._epoch})"
            )

    async def take_over(self) -> int:
        def bump(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT value FROM control WHERE key = 'epoch'").fetchone()
            epoch = (int(row[0]) if row else 0) + 1
            c.execute("INSERT OR REPLACE INTO control (key, value) VALUES ('epoch', ?)", (epoch,))
            return epoch

        self._epoch = await self._run(bump)
        return self._epoch

    async def insert(self, rows: list[OutboxRecord]) -> None:
        await self._run(
            lambda c: c.executemany(
                "INSERT OR IGNORE INTO events (id, kind, payload, ts_ms) VALUES (?, ?, ?, ?)",
                [(r.id, r.kind, r.payload, r.ts_ms) for r in rows],
            ),
            fenced=True,
        )

    async def claim_batch(self, max_events: int) -> Batch | None:
        return await self._run(lambda c: _claim(c, max_events), fenced=True)

    async def batch_failed(self, batch_id: int, error: str) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE batches SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:ERROR_CHARS], batch_id),
            ),
            fenced=True,
        )

    async def batch_done(self, batch_id: int, files: list[str]) -> None:
        def done(c: sqlite3.Connection) -> None:
            c.executemany("INSERT OR IGNORE INTO file_gc (name) VALUES (?)", [(f,) for f in files])
            c.execute("DELETE FROM events WHERE batch = ?", (batch_id,))
            c.execute(
                "UPDATE batches SET done_ms = ?, last_error = '' WHERE id = ?", (now_ms(), batch_id)
            )

        await self._run(done, fenced=True)

    async def files_to_remove(self, limit: int) -> list[str]:
        sql = "SELECT name FROM file_gc ORDER BY seq LIMIT ?"
        return await self._run(lambda c: [r[0] for r in c.execute(sql, (limit,))])

    async def files_removed(self, names: list[str]) -> None:
        await self._run(
            lambda c: c.executemany("DELETE FROM file_gc WHERE name = ?", [(n,) for n in names])
        )

    async def files_referred(self, names: list[str]) -> set[str]:
        def referred(c: sqlite3.Connection) -> set[str]:
            return {n for n in names if _queued(c, n) or _uploaded(c, n)}

        return await self._run(referred) if names else set()

    async def request_run(self) -> None:
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO control (key, value) VALUES ('run_now', '1')"
            )
        )

    async def take_run_request(self) -> bool:
        def take(c: sqlite3.Connection) -> bool:
            found = c.execute("SELECT 1 FROM control WHERE key = 'run_now'").fetchone()
            c.execute("DELETE FROM control WHERE key = 'run_now'")
            return found is not None

        return await self._run(take)

    async def status(self) -> Status:
        return await self._run(_status)


def _queued(c: sqlite3.Connection, name: str) -> bool:
    return c.execute("SELECT 1 FROM file_gc WHERE name = ?", (name,)).fetchone() is not None


# instr, not LIKE: a stored name may hold "_", which LIKE reads as a wildcard
UPLOADED = "SELECT 1 FROM events WHERE kind = 'FILEUPLOAD' AND instr(payload, ?) > 0 LIMIT 1"


def _uploaded(c: sqlite3.Connection, name: str) -> bool:
    return c.execute(UPLOADED, (name,)).fetchone() is not None


def _claim(c: sqlite3.Connection, max_events: int) -> Batch | None:
    row = c.execute(
        "SELECT id, created_ms, attempts FROM batches WHERE done_ms = 0 ORDER BY id LIMIT 1"
    ).fetchone()
    if row is None:
        free = c.execute(
            "SELECT id FROM events WHERE batch IS NULL ORDER BY id LIMIT ?", (max_events,)
        ).fetchall()
        if not free:
            return None
        now = now_ms()
        cur = c.execute("INSERT INTO batches (created_ms, events) VALUES (?, ?)", (now, len(free)))
        batch_id = int(cur.lastrowid or 0)
        c.executemany("UPDATE events SET batch = ? WHERE id = ?", [(batch_id, r[0]) for r in free])
        row = (batch_id, now, 0)
    events = [
        OutboxRecord(id=r[0], kind=r[1], payload=r[2], ts_ms=r[3])
        for r in c.execute(
            "SELECT id, kind, payload, ts_ms FROM events WHERE batch = ? ORDER BY id", (row[0],)
        )
    ]
    return Batch(id=row[0], created_ms=row[1], attempts=row[2], events=events)


def _status(c: sqlite3.Connection) -> Status:
    pending, oldest = c.execute("SELECT count(*), min(ts_ms) FROM events").fetchone()
    open_row = c.execute(
        "SELECT id, attempts, last_error FROM batches WHERE done_ms = 0 ORDER BY id LIMIT 1"
    ).fetchone()
    last = c.execute("SELECT max(done_ms) FROM batches").fetchone()[0]
    requested = c.execute("SELECT 1 FROM control WHERE key = 'run_now'").fetchone()
    gc = c.execute("SELECT count(*) FROM file_gc").fetchone()[0]
    return Status.of(pending, oldest, open_row, last, requested, gc)
