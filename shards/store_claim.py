"""The chat store a command may use: it exists (or is created on purpose), and it belongs
to the configured domain (issue 11 point 5). `pchat serve` and `pchat admin` both open the
store through `open_store`, so they agree on both."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings, redact_url
from core.errors import StoreError, StoreMissing
from core.store.base import ChatStore
from core.store.registry import make_store, sqlite_path


class StoreRefused(StoreError):
    """The store is missing, or was created for another domain; the message says what to do."""


def store_place(settings: Settings) -> str:
    """Where the store is, as an operator reads it: an absolute path or a redacted URL."""
    url = settings.store_url
    if url.partition(":")[0].lower() == "sqlite":
        return str(Path(sqlite_path(url)).resolve())
    return redact_url(url)


async def open_store(settings: Settings, *, create: bool) -> ChatStore:
    """The opened store; ``create=False`` refuses one that does not exist. A store opened
    with ``create`` (`pchat serve`, `pchat admin init`) records ``settings.domain`` when it
    has none: a new one, or one made before stores recorded their domain, which only the
    server's configuration can name for sure. A store recorded for another domain is
    refused (its HA1 hashes are keyed by that realm: every sign-in would fail with 401)."""
    store = make_store(settings.store_url, settings.store_pool)
    try:
        await store.open(create=create)
    except StoreMissing:
        raise StoreRefused(
            f"no chat store at {store_place(settings)}: give the server's --data-dir, --store "
            f"or --config, or create it with: pchat admin init --domain {settings.domain}"
        ) from None
    try:
        recorded = await store.claim_domain(settings.domain, record=create)
    except BaseException:
        await store.close()
        raise
    if recorded and recorded != settings.domain:
        await store.close()
        raise StoreRefused(
            f"the chat store at {store_place(settings)} belongs to domain {recorded}, not "
            f'{settings.domain}: use --domain {recorded} (or domain = "{recorded}" in the '
            "config file, or PCHAT_DOMAIN)"
        )
    return store
