"""`pchat admin compliance …`: the compliance service's backlog and a run on demand.

Whether a service runs is read from where it is, not from this command's configuration:
the active service holds a lease in Redis (shards/compliance.py), so `status` reports the
server started with `--compliance` even when `pchat admin` was given no such flag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis

from core.compliance.store.base import ComplianceStore
from core.compliance.store.registry import make_compliance_store
from core.config import Settings, redact_url
from core.store.base import ChatStore
from core.store.registry import sqlite_path
from shards.admin.command import Action, Out
from shards.redis_clients import redis_client


async def lease_holder(settings: Settings) -> str | None:
    """The active service's id ('' when none holds the lease); None: Redis does not answer."""
    # Imported here: shards.compliance loads shards.metrics, which must not be imported by
    # `pchat serve` before the supervisor sets PROMETHEUS_MULTIPROC_DIR (the parser imports
    # this package), or the supervisor's counters never reach /metrics.
    from shards.compliance import LEASE_KEY

    client = redis_client(settings, socket_timeout=1.0)
    try:
        with contextlib.suppress(OSError, aioredis.RedisError, asyncio.TimeoutError):
            holder = await asyncio.wait_for(client.get(LEASE_KEY), 2.0)
            if isinstance(holder, bytes):
                return holder.decode(errors="replace")
            return holder or ""
        return None
    finally:
        await client.aclose()


def _service_line(holder: str | None, s: Settings) -> str:
    if holder is None:
        redis = redact_url(s.effective_redis_url)
        return f"compliance service: unknown (Redis at {redis} does not answer)"
    if holder:
        return f"compliance service: running (lease held by process {holder.split('-')[0]})"
    return "compliance service: not running (pchat serve --compliance runs it)"


@contextlib.asynccontextmanager
async def _compliance_store(s: Settings) -> AsyncIterator[ComplianceStore]:
    archive = make_compliance_store(s.compliance_store_url, s.compliance_store_pool)
    await archive.open()
    try:
        yield archive
    finally:
        await archive.close()


def _missing_sqlite_store(s: Settings) -> str | None:
    """The SQLite compliance file when it does not exist yet (status must not create it)."""
    url = s.compliance_store_url
    if not url.startswith("sqlite:"):
        return None
    path = sqlite_path(url)
    return None if Path(path).exists() else path


async def _compliance_status(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Out
) -> bool:
    outbox, outbox_oldest = await store.outbox_stats()
    now = time.time()

    def age(ts_ms: int) -> str:
        return f"{now - ts_ms / 1000:.0f} s" if ts_ms else "-"

    out(_service_line(await lease_holder(s), s))
    out(f"outbox (chat store): {outbox} events, oldest {age(outbox_oldest)}")
    missing = _missing_sqlite_store(s)
    if missing is not None:
        out(f"compliance store: none yet at {missing} (the service never ran)")
        return False
    async with _compliance_store(s) as archive:
        status = await archive.status()
    out(
        f"compliance store: {status.pending_events} events not archived,"
        f" oldest {age(status.oldest_ms)}"
    )
    if status.files_to_remove:
        out(f"compliance file store: {status.files_to_remove} archived copies not yet removed")
    if status.open_batch:
        out(
            f"batch {status.open_batch} being retried: {status.attempts} failed runs,"
            f" last error: {status.last_error}"
        )
    out(
        f"last archive run that succeeded: {age(status.last_success_ms)} ago"
        if status.last_success_ms
        else "no archive run has succeeded yet"
    )
    out(f"output: {s.compliance_output_dir}")
    if status.run_requested:
        out("a run is requested and waits for the service")
    return False


async def _compliance_run_now(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Out
) -> bool:
    holder = await lease_holder(s)
    async with _compliance_store(s) as archive:
        await archive.request_run()  # kept until a service takes it (one may be restarting)
    if holder is None:
        out("run requested; Redis does not answer, so whether a service runs is unknown")
    elif holder:
        out(f"run requested; the compliance service (process {holder.split('-')[0]}) starts it")
    else:
        out(
            "run requested, but no compliance service runs now: it waits for one"
            " (pchat serve --compliance)"
        )
    return False


ACTIONS: dict[tuple[str, str], Action] = {
    ("compliance", "status"): _compliance_status,
    ("compliance", "run-now"): _compliance_run_now,
}
