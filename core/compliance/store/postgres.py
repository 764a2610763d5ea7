"""The compliance store on PostgreSQL (store layer), on asyncpg: for a pool of hosts.

Any host's compliance service may be the active one, so the store is shared. Its tables
carry a ``compliance_`` prefix and may live in the chat store's database. Every change
runs in one transaction that first takes a transaction-scoped advisory lock, so two
services (one paused past its lease, one new) never interleave a claim, and then checks
the caller's epoch under that lock (base.py lists the invariants).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from core.compliance.store.base import Batch, Fenced, Status
from core.compliance.store.sqlite import ERROR_CHARS, now_ms
from core.errors import StoreError
from core.store.base import OutboxRecord
from core.store.postgres_pool import connect_pool, pooled

_T = TypeVar("_T")
SCHEMA_VERSION = 1
# Any constant (differs from the chat store's migration lock): serialises every change.
_LOCK_KEY = 0x70636F6D

SCHEMA = """
CREATE TABLE IF NOT EXISTS compliance_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS compliance_events (
    id bigint PRIMARY KEY, kind text NOT NULL, payload text NOT NULL, ts_ms bigint NOT NULL,
    batch bigint);
CREATE INDEX IF NOT EXISTS compliance_events_batch ON compliance_events (batch);
CREATE TABLE IF NOT EXISTS compliance_batches (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, created_ms bigint NOT NULL,
    events integer NOT NULL, attempts integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '', done_ms bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS compliance_file_gc (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS compliance_events_uploads ON compliance_events (id)
    WHERE kind = 'FILEUPLOAD';
"""


class PostgresComplianceStore:
    """``ComplianceStore`` on a PostgreSQL database shared by the pool's hosts."""

    def __init__(self, dsn: str, pool: tuple[int, int] = (1, 2)) -> None:
        self._dsn = dsn
        self._pool_size = pool  # (min, max) connections of this process
        self._pool: Any = None  # asyncpg.Pool once open
        self._epoch = 0  # 0: never took over, so it may not change events or batches

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = await connect_pool(self._dsn, self._pool_size, "compliance store: postgres: ")
        try:
            await self._tx(_migrate)
        except BaseException:
            pool, self._pool = self._pool, None
            pool.terminate()  # not awaited: we may be here on cancellation
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _conn(self) -> AbstractAsyncContextManager[Any]:
        return pooled(
            self._pool, "the compliance store is not open", "compliance store: postgres: "
        )

    async def _tx(self, fn: Callable[[Any], Awaitable[_T]], *, fenced: bool = False) -> _T:
        """``fn(conn)`` in one transaction, serialised with every other change."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            if fenced:
                stored = await conn.fetchval(
                    "SELECT value FROM compliance_meta WHERE key = 'epoch'"
                )
                if self._epoch == 0 or stored is None or int(stored) != self._epoch:
                    raise Fenced(
                        f"compliance store taken over (epoch {stored}, ours {self._epoch})"
                    )
            return await fn(conn)

    async def take_over(self) -> int:
        async def bump(conn: Any) -> int:
            return int(
                await conn.fetchval(
                    "INSERT INTO compliance_meta VALUES ('epoch', '1') ON CONFLICT (key)"
                    " DO UPDATE SET value = (compliance_meta.value::bigint + 1)::text"
                    " RETURNING value"
                )
            )

        self._epoch = await self._tx(bump)
        return self._epoch

    async def insert(self, rows: list[OutboxRecord]) -> None:
        async def put(conn: Any) -> None:
            await conn.executemany(
                "INSERT INTO compliance_events (id, kind, payload, ts_ms) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (id) DO NOTHING",
                [(r.id, r.kind, r.payload, r.ts_ms) for r in rows],
            )

        if rows:
            await self._tx(put, fenced=True)

    async def claim_batch(self, max_events: int) -> Batch | None:
        return await self._tx(lambda conn: _claim(conn, max_events), fenced=True)

    async def batch_failed(self, batch_id: int, error: str) -> None:
        async def failed(conn: Any) -> None:
            await conn.execute(
                "UPDATE compliance_batches SET attempts = attempts + 1, last_error = $1"
                " WHERE id = $2",
                error[:ERROR_CHARS],
                batch_id,
            )

        await self._tx(failed, fenced=True)

    async def batch_done(self, batch_id: int, files: list[str]) -> None:
        async def done(conn: Any) -> None:
            if files:
                await conn.executemany(
                    "INSERT INTO compliance_file_gc (name) VALUES ($1) ON CONFLICT DO NOTHING",
                    [(f,) for f in files],
                )
            await conn.execute("DELETE FROM compliance_events WHERE batch = $1", batch_id)
            await conn.execute(
                "UPDATE compliance_batches SET done_ms = $1, last_error = '' WHERE id = $2",
                now_ms(),
                batch_id,
            )

        await self._tx(done, fenced=True)

    async def files_to_remove(self, limit: int) -> list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT name FROM compliance_file_gc ORDER BY seq LIMIT $1", limit
            )
        return [r[0] for r in rows]

    async def files_removed(self, names: list[str]) -> None:
        async with self._conn() as conn:
            await conn.execute("DELETE FROM compliance_file_gc WHERE name = ANY($1::text[])", names)

    async def files_referred(self, names: list[str]) -> set[str]:
        """The uploads among the pending events are few (a partial index holds them), so
        each name is looked for among those alone; the queue is looked up by its key."""
        if not names:
            return set()
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT n FROM unnest($1::text[]) AS n WHERE"
                " EXISTS (SELECT 1 FROM compliance_file_gc WHERE name = n) OR"
                " EXISTS (SELECT 1 FROM compliance_events WHERE kind = 'FILEUPLOAD'"
                " AND strpos(payload, n) > 0)",
                names,
            )
        return {r[0] for r in rows}

    async def request_run(self) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO compliance_meta VALUES ('run_now', '1') ON CONFLICT DO NOTHING"
            )

    async def take_run_request(self) -> bool:
        async with self._conn() as conn:
            found = await conn.fetchval(
                "DELETE FROM compliance_meta WHERE key = 'run_now' RETURNING 1"
            )
        return found is not None

    async def status(self) -> Status:
        async with self._conn() as conn, conn.transaction(isolation="repeatable_read"):
            pending, oldest = await conn.fetchrow(
                "SELECT count(*), min(ts_ms) FROM compliance_events"
            )
            open_row = await conn.fetchrow(
                "SELECT id, attempts, last_error FROM compliance_batches WHERE done_ms = 0"
                " ORDER BY id LIMIT 1"
            )
            last = await conn.fetchval("SELECT max(done_ms) FROM compliance_batches")
            requested = await conn.fetchval("SELECT 1 FROM compliance_meta WHERE key = 'run_now'")
            gc = await conn.fetchval("SELECT count(*) FROM compliance_file_gc")
        return Status.of(pending, oldest, open_row, last, requested, gc)


async def _migrate(conn: Any) -> None:
    # Under the advisory lock: several hosts' services may start at once.
    exists = await conn.fetchval("SELECT to_regclass('compliance_meta') IS NOT NULL")
    version = 0
    if exists:
        row = await conn.fetchval("SELECT value FROM compliance_meta WHERE key = 'schema_version'")
        version = int(row or 0)
    if version > SCHEMA_VERSION:
        raise StoreError(f"compliance store schema {version} is newer than this pchat's")
    await conn.execute(SCHEMA)
    await conn.execute(
        "INSERT INTO compliance_meta VALUES ('schema_version', $1) ON CONFLICT (key)"
        " DO UPDATE SET value = excluded.value",
        str(SCHEMA_VERSION),
    )


async def _claim(conn: Any, max_events: int) -> Batch | None:
    row = await conn.fetchrow(
        "SELECT id, created_ms, attempts FROM compliance_batches WHERE done_ms = 0"
        " ORDER BY id LIMIT 1"
    )
    if row is None:
        free = await conn.fetch(
            "SELECT id FROM compliance_events WHERE batch IS NULL ORDER BY id LIMIT $1",
            max_events,
        )
        if not free:
            return None
        now = now_ms()
        batch_id = await conn.fetchval(
            "INSERT INTO compliance_batches (created_ms, events) VALUES ($1, $2) RETURNING id",
            now,
            len(free),
        )
        await conn.execute(
            "UPDATE compliance_events SET batch = $1 WHERE id = ANY($2::bigint[])",
            batch_id,
            [r[0] for r in free],
        )
        row = (batch_id, now, 0)
    events = [
        OutboxRecord(id=r[0], kind=r[1], payload=r[2], ts_ms=r[3])
        for r in await conn.fetch(
            "SELECT id, kind, payload, ts_ms FROM compliance_events WHERE batch = $1 ORDER BY id",
            row[0],
        )
    ]
    return Batch(id=int(row[0]), created_ms=int(row[1]), attempts=int(row[2]), events=events)
