"""The compliance service: moves the outbox into the compliance store, runs the adapters.

One process per host under the supervisor; exactly one of them is active per pool, by a
lease in Redis. Every step can be repeated after a crash without loss or duplicates:
rows are copied before they are deleted (copies keyed by outbox id), and adapter runs
work on claimed batches with stable file names (core/compliance/store.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

from core.compliance.adapters import AdapterOptions, conversations
from core.compliance.registry import load_adapters
from core.compliance.store import ComplianceStore
from core.config import Settings
from core.store.base import ChatStore
from core.store.registry import make_store
from shards import metrics
from shards.lifetime import die_with_parent
from shards.logs import setup_logging
from shards.redis_clients import AnyRedis, redis_client

log = logging.getLogger(__name__)

LEASE_KEY = "pchat:compliance:lease"
RELAY_PAGE = 1000  # outbox rows moved per transaction pair
BATCH_EVENTS = 50_000  # events per adapter batch (one archive file, or one per room)
IDLE_S = 0.5  # pause between relay rounds when the outbox is empty
RETRY_BASE_S = 5.0  # after a failed adapter run: 5 s, 10 s, 20 s … up to run_interval_s
# Renews the lease only while it is still ours (a paused process must not steal it back).
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then"
    " return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)


class ComplianceService:
    def __init__(self, settings: Settings, chat: ChatStore, archive: ComplianceStore) -> None:
        self._settings = settings
        c = settings.compliance
        self._chat = chat
        self._archive = archive
        self._out = Path(settings.compliance_output_dir)
        self._interval = c.run_interval_s
        self._ttl_ms = int(c.lease_ttl_s * 1000)
        self._me = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._next_run = time.monotonic() + self._interval
        self._failures = 0
        self.options = AdapterOptions(
            domain=settings.domain,
            file_per_room=c.xml_file_per_room,
            room_details=c.xml_room_details,
            user_details=c.xml_user_details,
        )
        self._adapters = load_adapters(c.adapters, self.options)
        self._failed = {a.name: metrics.COMPLIANCE_FAILURES.labels(a.name) for a in self._adapters}

    async def run(self, redis: AnyRedis, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self._hold_lease(redis):
                    moved = await self.relay_once()
                    await self._observe()
                    if (
                        await asyncio.to_thread(self._archive.take_run_request)
                        or time.monotonic() >= self._next_run
                    ):
                        await self.run_adapters()
                    if moved == RELAY_PAGE:
                        continue  # more waiting: no pause
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("compliance round failed; retrying")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), IDLE_S)
        with contextlib.suppress(Exception):
            await redis.eval(_RENEW, 1, LEASE_KEY, self._me, 1)  # hand the lease back fast

    async def _hold_lease(self, redis: AnyRedis) -> bool:
        try:
            if await redis.set(LEASE_KEY, self._me, nx=True, px=self._ttl_ms):
                log.info("compliance service %s is the active one", self._me)
                return True
            return bool(await redis.eval(_RENEW, 1, LEASE_KEY, self._me, self._ttl_ms))
        except (OSError, aioredis.RedisError) as exc:
            log.warning("cannot hold the compliance lease (%s): paused until Redis answers", exc)
            return False

    async def relay_once(self) -> int:
        """Outbox -> compliance store -> outbox rows deleted, in that order."""
        rows = await self._chat.outbox_head(RELAY_PAGE)
        if rows:
            await asyncio.to_thread(self._archive.insert, rows)
            await self._chat.delete_outbox([r.id for r in rows])
            metrics.COMPLIANCE_RELAYED.inc(len(rows))
        return len(rows)

    async def _observe(self) -> None:
        outbox, outbox_oldest = await self._chat.outbox_stats()
        status = await asyncio.to_thread(self._archive.status)
        oldest = (
            min(t for t in (outbox_oldest, status.oldest_ms) if t)
            if outbox or status.pending_events
            else 0
        )
        metrics.COMPLIANCE_BACKLOG.set(outbox + status.pending_events)
        metrics.COMPLIANCE_OUTBOX.set(outbox)
        metrics.COMPLIANCE_BACKLOG_AGE.set(max(0.0, time.time() - oldest / 1000) if oldest else 0.0)

    async def run_adapters(self) -> bool:
        """Archives every pending batch; stops at the first failure (rows stay, retried)."""
        while batch := await asyncio.to_thread(self._archive.claim_batch, BATCH_EVENTS):
            groups = conversations(batch.events)
            for adapter in self._adapters:
                try:
                    await asyncio.to_thread(self._out.mkdir, parents=True, exist_ok=True)
                    await asyncio.to_thread(adapter.write, batch.id, groups, self._out)
                except Exception as exc:
                    self._failures += 1
                    self._failed[adapter.name].inc()
                    await asyncio.to_thread(
                        self._archive.batch_failed, batch.id, f"{adapter.name}: {exc}"
                    )
                    delay = min(float(self._interval), RETRY_BASE_S * 2 ** (self._failures - 1))
                    self._next_run = time.monotonic() + delay
                    log.error(
                        "compliance adapter %s failed on batch %d (%d events): %s;"
                        " its rows stay, retry in %.0f s",
                        adapter.name, batch.id, len(batch.events), exc, delay,
                    )  # fmt: skip
                    return False
            await asyncio.to_thread(self._archive.batch_done, batch.id)
            metrics.COMPLIANCE_ARCHIVED.inc(len(batch.events))
            log.info("compliance batch %d archived: %d events", batch.id, len(batch.events))
        self._failures = 0
        self._next_run = time.monotonic() + self._interval
        return True


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    chat = make_store(settings.store_url, settings.store_pool)
    await chat.open()
    archive = ComplianceStore(settings.compliance_store_path)
    redis = redis_client(settings, socket_timeout=2)  # Redis, or RedisCluster for a pool
    try:
        await ComplianceService(settings, chat, archive).run(redis, stop)
    finally:
        await redis.aclose()
        archive.close()
        await chat.close()


def main() -> None:
    """Entry of the compliance process started by the supervisor."""
    argparse.ArgumentParser(
        description="pchat compliance service (started by pchat serve)"
    ).parse_args()
    settings = msgspec.json.decode(os.environ["_PCHAT_WORKER_SETTINGS"], type=Settings)
    die_with_parent()
    setup_logging(settings.log_level, "compliance")
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
