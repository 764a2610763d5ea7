"""Integration fixtures: chat stores on both backends (SQLite in tmp_path, a throwaway
PostgreSQL database per test, skipped with the reason when no server answers)."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from core.store.base import ChatStore
from core.store.registry import make_store, sqlite_path

# Trust auth on the local server; PCHAT_TEST_POSTGRES names another admin DSN.
PG_ADMIN_DSNS = (
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/postgres",
)
PG_CONNECT_TIMEOUT_S = 3.0

RawQuery = Callable[[str], Awaitable[list[tuple[Any, ...]]]]

# The first probe's outcome, so an absent server costs one timeout per session.
_pg_probe: dict[str, str] = {}


async def _pg_admin() -> tuple[Any, str]:
    """An admin connection (asyncpg.Connection) and its DSN, or skip the test."""
    if "unreachable" in _pg_probe:
        pytest.skip(_pg_probe["unreachable"])
    env_dsn = os.environ.get("PCHAT_TEST_POSTGRES")
    dsns = (env_dsn,) if env_dsn else PG_ADMIN_DSNS
    errors: list[str] = []
    for dsn in dsns:
        try:
            return await asyncpg.connect(dsn, timeout=PG_CONNECT_TIMEOUT_S), dsn
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            errors.append(f"{dsn}: {exc!r}")
    reason = "PostgreSQL unreachable, postgres store tests skipped: " + "; ".join(errors)
    _pg_probe["unreachable"] = reason
    pytest.skip(reason)


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL for an empty chat store of each backend, removed after the test."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'chat.db'}"
        return
    admin, admin_dsn = await _pg_admin()
    name = f"pchat_test_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        # the admin user owns the new database, so it connects the same way
        yield urlsplit(admin_dsn)._replace(path=f"/{name}").geturl()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[ChatStore]:
    """An opened store on ``store_url``; closed after the test."""
    chat_store = make_store(store_url)
    await chat_store.open()
    try:
        yield chat_store
    finally:
        await chat_store.close()


@pytest.fixture
def raw_query(store_url: str) -> RawQuery:
    """Runs SQL straight on the store's database, beside the store under test."""

    async def run(sql: str) -> list[tuple[Any, ...]]:
        if store_url.startswith("sqlite:"):
            conn = sqlite3.connect(sqlite_path(store_url))
            try:
                with conn:
                    return [tuple(row) for row in conn.execute(sql)]
            finally:
                conn.close()
        pg = await asyncpg.connect(store_url)
        try:
            return [tuple(row) for row in await pg.fetch(sql)]
        finally:
            await pg.close()

    return run


# The file store's fixtures, shared by its test modules (tests/integration/files_fixtures.py).
from tests.integration.files_fixtures import files_server, http  # noqa: E402, F401
