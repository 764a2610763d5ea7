"""Chat store registry (store layer): a URL scheme names the backend class (HS-3).

Backends are imported only when chosen, so an SQLite deployment never loads asyncpg.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from core.store.base import ChatStore

# (min, max) PostgreSQL connections per process; SQLite has one connection and ignores it.
PoolSize = tuple[int, int]
T = TypeVar("T")


def _sqlite(url: str, pool: PoolSize) -> ChatStore:
    from core.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path(url))


def _postgres(url: str, pool: PoolSize) -> ChatStore:
    from core.store.postgres import PostgresStore

    return PostgresStore(url, pool)


# scheme -> factory taking the whole URL and the pool size
BACKENDS: dict[str, Callable[[str, PoolSize], ChatStore]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def sqlite_path(url: str) -> str:
    """``sqlite:///abs/chat.db`` -> ``/abs/chat.db``; ``sqlite:rel/chat.db`` -> ``rel/chat.db``."""
    scheme, _, rest = url.partition(":")
    if scheme.lower() != "sqlite" or not rest:
        raise ValueError(f"not an sqlite URL: {url!r}")
    if rest.startswith("//"):
        rest = rest[2:]
        # sqlite://host/... would silently drop the host: only an empty host is allowed.
        if not rest.startswith("/"):
            raise ValueError(f"sqlite URL needs sqlite:///absolute or sqlite:relative: {url!r}")
    if rest in ("", "/"):
        raise ValueError(f"sqlite URL without a file path: {url!r}")
    return rest


def from_scheme(
    kind: str, backends: Mapping[str, Callable[[str, PoolSize], T]], url: str, pool: PoolSize
) -> T:
    """``backends[scheme of url](url, pool)``; ``ValueError`` names ``kind`` and the known
    schemes. The chat and the compliance store registries both look up through it."""
    scheme, sep, _ = url.partition(":")
    factory = backends.get(scheme.lower()) if sep else None
    if factory is None:
        known = ", ".join(f"{name}:" for name in backends)
        # Only the scheme is echoed: the rest of a URL may hold a password.
        raise ValueError(f"unknown {kind} store scheme {scheme!r}: the schemes are {known}")
    return factory(url, pool)


def make_store(url: str, pool: PoolSize = (1, 4)) -> ChatStore:
    """The store for ``url``, not yet opened; ``ValueError`` names the known schemes."""
    return from_scheme("chat", BACKENDS, url, pool)
