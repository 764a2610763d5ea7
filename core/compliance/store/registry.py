"""Compliance store registry (store layer): a URL scheme names the backend class (HS-3).

Backends are imported only when chosen, so an SQLite deployment never loads asyncpg.
"""

from __future__ import annotations

from collections.abc import Callable

from core.compliance.store.base import ComplianceStore
from core.store.registry import PoolSize, from_scheme, sqlite_path


def _sqlite(url: str, pool: PoolSize) -> ComplianceStore:
    from core.compliance.store.sqlite import SqliteComplianceStore

    return SqliteComplianceStore(sqlite_path(url))


def _postgres(url: str, pool: PoolSize) -> ComplianceStore:
    from core.compliance.store.postgres import PostgresComplianceStore

    return PostgresComplianceStore(url, pool)


# scheme -> factory taking the whole URL and the pool size
BACKENDS: dict[str, Callable[[str, PoolSize], ComplianceStore]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def make_compliance_store(url: str, pool: PoolSize = (1, 2)) -> ComplianceStore:
    """The store for ``url``, not yet opened; ``ValueError`` names the known schemes."""
    return from_scheme("compliance", BACKENDS, url, pool)
