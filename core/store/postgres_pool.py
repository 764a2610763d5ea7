"""PostgreSQL connections shared by the chat and the compliance stores: the pool, the
driver's failures as ``StoreError``, and the query helpers every store class uses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg

from core.errors import StoreError

# Defaults of Settings.store_pool_min/max (core/config.py says why these values).
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
CONNECT_TIMEOUT_S = 10.0
# A process paused (SIGSTOP, a VM stall) inside a transaction keeps its locks; a fenced
# write holds FOR SHARE on its shard's epoch row, which would block the claim of the
# worker taking over. The server ends such a transaction after this long instead.
IDLE_IN_TRANSACTION_MS = 5000
# What the driver raises for a failed connection or statement: surfaced as StoreError.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


async def connect_pool(
    dsn: str, size: tuple[int, int], what: str, server_settings: dict[str, str] | None = None
) -> Any:
    """A pool of ``size`` (min, max) connections; ``StoreError`` names ``what`` and the
    cause. The chat and the compliance stores both connect through it."""
    try:
        return await asyncpg.create_pool(
            dsn, min_size=size[0], max_size=size[1], timeout=CONNECT_TIMEOUT_S,
            server_settings=server_settings,
        )  # fmt: skip
    except DRIVER_ERRORS as exc:
        raise StoreError(f"{what}cannot connect: {exc}") from exc


@asynccontextmanager
async def pooled(pool: Any, not_open: str, what: str) -> AsyncIterator[Any]:
    """A connection of ``pool``: ``StoreError(not_open)`` while there is no pool, driver
    and network failures as ``StoreError`` naming ``what``."""
    if pool is None:
        raise StoreError(not_open)
    try:
        async with pool.acquire() as conn:
            yield conn
    except DRIVER_ERRORS as exc:
        raise StoreError(f"{what}{exc}") from exc


INSERT_OUTBOX = "INSERT INTO compliance_outbox (kind, payload, ts_ms) VALUES ($1, $2, $3)"


class PgQueries:
    """One pooled connection per statement (``_fetch``, ``_fetchval``, ``_execute``) or per
    transaction (``_conn``); the store classes build on it."""

    _pool: Any = None  # asyncpg.Pool once open

    def _conn(self) -> AbstractAsyncContextManager[Any]:
        """A pooled connection; driver and network failures leave as ``StoreError``."""
        return pooled(self._pool, "the PostgreSQL store is not open", "postgres: ")

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        async with self._conn() as conn:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

    async def _fetchval(self, sql: str, *args: object) -> Any:
        async with self._conn() as conn:
            return await conn.fetchval(sql, *args)

    async def _execute(self, sql: str, *args: object) -> int:
        """Runs one statement; returns the affected row count from its status tag."""
        async with self._conn() as conn:
            status: str = await conn.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0
