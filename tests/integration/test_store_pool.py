"""The chat store's PostgreSQL pool is sized by the config (issue #14, point 4)."""

from __future__ import annotations

from typing import Any

import pytest

from core.config import load_settings
from core.store.registry import make_store


async def test_pool_size_from_settings_reaches_the_pool(store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has one connection per process; no pool to size")
    env = {"PCHAT_STORE": store_url, "PCHAT_STORE_POOL_MIN": "2", "PCHAT_STORE_POOL_MAX": "3"}
    settings = load_settings(env=env)
    store = make_store(settings.store_url, settings.store_pool)
    await store.open()
    try:
        pool: Any = store._pool  # type: ignore[attr-defined]
        assert (pool.get_min_size(), pool.get_max_size()) == (2, 3)
        assert pool.get_size() >= 2  # the minimum is opened at start
    finally:
        await store.close()
