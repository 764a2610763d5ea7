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

from core.compliance.adapters import AdapterOptions, Conversation, conversations
from core.compliance.events import from_payload
from core.compliance.file_store import ComplianceFileStore, copy_of_temp
from core.compliance.registry import load_adapters
from core.compliance.store.base import ComplianceStore, Fenced
from core.compliance.store.registry import make_compliance_store
from core.config import Settings
from core.files.registry import make_storage
from core.files.stale import SWEEP_PAGE, Page, Rounds
from core.store.base import ChatStore, OutboxRecord
from core.store.registry import make_store
from shards import metrics
from shards.lifetime import die_with_parent
from shards.logs import setup_logging
from shards.redis_clients import AnyRedis, redis_client
from shards.waits import wait_set

log = logging.getLogger(__name__)

LEASE_KEY = "pchat:compliance:lease"
RELAY_PAGE = 1000  # outbox rows moved per transaction pair
BATCH_EVENTS = 50_000  # events per adapter batch (one archive file, or one per room)
IDLE_S = 0.5  # pause between relay rounds when the outbox is empty
# Bytes of uploads copied into the compliance file store per relay round: ten files at the
# 20,000 KB default cap, about a second of disk, so the round stays well inside the lease.
# The page is cut after the upload that crosses it (so at least one upload moves per round).
FILE_COPY_BYTES_PER_ROUND = 200_000_000
FILE_REMOVALS_PER_ROUND = 1000  # archived copies unlinked per round (one short transaction)
RETRY_BASE_S = 5.0  # after a failed adapter run: 5 s, 10 s, 20 s … up to run_interval_s
# A compliance copy is made just before its upload's record and FILEUPLOAD event are
# written (shards/web/files.py), so a copy unchanged for an hour that no event refers to
# was left by a crash between the two (or by a copy cut short) and can go.
COPY_STALE_S = 3600.0
# The sweep looks in the compliance store only, so it runs while the outbox holds nothing
# older than COPY_STALE_S less this margin (hosts' clocks differ, and a keep comes a moment
# before its event's timestamp): an event that refers to an old copy has left the outbox.
OUTBOX_MARGIN_S = 600.0
FIRST_SWEEP_S = 60.0  # after the start: the relay catches up on the outbox first
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
            attach=c.xml_attach,
            files_dir=settings.compliance_files_dir,
        )
        self._adapters = load_adapters(c.adapters, self.options)
        self._files = ComplianceFileStore(settings.compliance_files_dir)
        self._uploads = make_storage(settings.files.backend, settings.files_dir)
        self._cut = False  # the last relay page was cut short by the copy bound
        self._failed = {a.name: metrics.COMPLIANCE_FAILURES.labels(a.name) for a in self._adapters}
        self._epoch = 0  # the compliance store's epoch won with the lease; 0: not active
        self._sweep = Rounds(time.monotonic() + FIRST_SWEEP_S)

    async def run(self, redis: AnyRedis, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self._hold_lease(redis):
                    if self._epoch == 0:
                        await self.take_over()
                    moved = await self.relay_once()
                    await self._observe()
                    if await self._archive.take_run_request() or time.monotonic() >= self._next_run:
                        await self.run_adapters()
                    await self.remove_archived_copies()
                    if time.monotonic() >= self._sweep.due:
                        self._sweep.done(
                            await self.sweep_copies(self._sweep.after), time.monotonic()
                        )
                    if moved == RELAY_PAGE or self._cut:
                        continue  # more waiting: no pause
                else:
                    self._epoch = 0
            except asyncio.CancelledError:
                raise
            except Fenced as exc:
                self._epoch = 0  # another service took over while this one was away
                log.warning("compliance service %s stepped down: %s", self._me, exc)
            except Exception:
                log.exception("compliance round failed; retrying")
            await wait_set(stop, IDLE_S)
        with contextlib.suppress(Exception):
            await redis.eval(_RENEW, 1, LEASE_KEY, self._me, 1)  # hand the lease back fast

    async def _hold_lease(self, redis: AnyRedis) -> bool:
        try:
            if await redis.set(LEASE_KEY, self._me, nx=True, px=self._ttl_ms):
                log.info("compliance service %s is the active one", self._me)
                self._epoch = 0  # a new win: take the store over before any change
                return True
            return bool(await redis.eval(_RENEW, 1, LEASE_KEY, self._me, self._ttl_ms))
        except (OSError, aioredis.RedisError) as exc:
            log.warning("cannot hold the compliance lease (%s): paused until Redis answers", exc)
            return False

    async def take_over(self) -> None:
        """A new epoch in the compliance store: any service active before this one is
        fenced off (its next change raises Fenced), whatever Redis said to it."""
        self._epoch = await self._archive.take_over()
        log.info("compliance service %s took over the store (epoch %d)", self._me, self._epoch)

    async def relay_once(self) -> int:
        """Outbox -> compliance store -> outbox rows deleted, in that order."""
        rows = await self._keep_files(await self._chat.outbox_head(RELAY_PAGE))
        if rows:
            await self._archive.insert(rows)
            await self._chat.delete_outbox([r.id for r in rows])
            metrics.COMPLIANCE_RELAYED.inc(len(rows))
        return len(rows)

    async def _keep_files(self, rows: list[OutboxRecord]) -> list[OutboxRecord]:
        """Copies the page's uploads into the compliance file store before the page is
        recorded; cuts the page after FILE_COPY_BYTES_PER_ROUND of them."""
        copied, self._cut = 0, False
        for i, row in enumerate(rows):
            if row.kind != "FILEUPLOAD":
                continue
            if copied >= FILE_COPY_BYTES_PER_ROUND:
                self._cut = True
                return rows[:i]
            try:
                upload = from_payload(row.payload)
                name = upload.text
                source = Path(self._uploads.local_path(name))
                kept = await asyncio.to_thread(self._files.keep, source, name)
            except (msgspec.DecodeError, ValueError) as exc:
                # recorded as it is (the outbox must not stall on it), with nothing to copy
                log.error("compliance event %d: bad FILEUPLOAD record (%s)", row.id, exc)
                copied += 1
                continue
            if not kept:
                log.error(
                    "compliance event %d: %s was deleted before it could be copied;"
                    " the upload is recorded without its file",
                    row.id, name,
                )  # fmt: skip
            copied += max(1, upload.file_size)
        return rows

    async def remove_archived_copies(self) -> int:
        """Unlinks copies whose uploads are archived, at most FILE_REMOVALS_PER_ROUND."""
        names = await self._archive.files_to_remove(FILE_REMOVALS_PER_ROUND)
        if names:
            await asyncio.to_thread(self._files.remove, names)
            await self._archive.files_removed(names)
        return len(names)

    async def sweep_copies(
        self, after: str = "", limit: int = SWEEP_PAGE, older_than_s: float = COPY_STALE_S
    ) -> Page:
        """Removes one page of the copies unchanged for ``older_than_s`` that no event
        refers to, and temps a crash left; nothing while the outbox is behind. Returns
        what it removed, and where the next page starts."""
        count, oldest_ms = await self._chat.outbox_stats()
        if count and oldest_ms < (time.time() - older_than_s + OUTBOX_MARGIN_S) * 1000:
            return Page([], "")  # an old upload's event may still wait there: next round
        page = await asyncio.to_thread(self._files.stale, older_than_s, after, limit)
        copies = [n for n in page.names if not copy_of_temp(n)]
        referred = await self._archive.files_referred(copies)
        gone = [n for n in page.names if n not in referred]
        if gone:
            await asyncio.to_thread(self._files.remove, gone)
            metrics.FILES_SWEPT.labels("compliance").inc(len(gone))
            log.warning(
                "compliance file store: removed %d copies no event refers to (left by"
                " uploads cut off by a crash)", len(gone),
            )  # fmt: skip
        return Page(gone, page.resume)

    async def _observe(self) -> None:
        outbox, outbox_oldest = await self._chat.outbox_stats()
        status = await self._archive.status()
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
        while batch := await self._archive.claim_batch(BATCH_EVENTS):
            groups = conversations(batch.events)
            for adapter in self._adapters:
                try:
                    await asyncio.to_thread(self._out.mkdir, parents=True, exist_ok=True)
                    await asyncio.to_thread(adapter.write, batch.id, groups, self._out)
                except Exception as exc:
                    self._failures += 1
                    self._failed[adapter.name].inc()
                    await self._archive.batch_failed(batch.id, f"{adapter.name}: {exc}")
                    delay = min(float(self._interval), RETRY_BASE_S * 2 ** (self._failures - 1))
                    self._next_run = time.monotonic() + delay
                    log.error(
                        "compliance adapter %s failed on batch %d (%d events): %s;"
                        " its rows stay, retry in %.0f s",
                        adapter.name, batch.id, len(batch.events), exc, delay,
                    )  # fmt: skip
                    return False
            await self._archive.batch_done(batch.id, uploads(groups))
            metrics.COMPLIANCE_ARCHIVED.inc(len(batch.events))
            log.info("compliance batch %d archived: %d events", batch.id, len(batch.events))
        self._failures = 0
        self._next_run = time.monotonic() + self._interval
        return True


def uploads(groups: list[Conversation]) -> list[str]:
    """The stored names of a batch's uploads: their copies go once it is archived."""
    return [e.activity.text for c in groups for e in c.events if e.activity.kind == "FILEUPLOAD"]


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    chat = make_store(settings.store_url, settings.store_pool)
    await chat.open()
    archive = make_compliance_store(settings.compliance_store_url, settings.compliance_store_pool)
    try:
        await archive.open()
    except BaseException:
        await chat.close()
        raise
    redis = redis_client(settings, socket_timeout=2)  # Redis, or RedisCluster for a pool
    try:
        await ComplianceService(settings, chat, archive).run(redis, stop)
    finally:
        await redis.aclose()
        await archive.close()
        await chat.close()


def main() -> None:
    """Entry of the compliance process started by the supervisor."""
    argparse.ArgumentParser(
        description="pchat compliance service (started by pchat serve)"
    ).parse_args()
    settings = msgspec.json.decode(os.environ["_PCHAT_WORKER_SETTINGS"], type=Settings)
    die_with_parent()
    setup_logging(settings.log_level, "compliance", settings.log.format)
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
