"""The file service: a separate, niced process that carries the room files' bytes.

Why: under file load about 40 % of a chat worker's loop time went to the file bytes'
socket I/O (uvloop has no loop.sendfile, so aiohttp reads each download chunk in a
thread and writes it on the loop; an upload's body comes through the loop's
data_received), and the chat's p99 moved with it. Here the bytes take this process's
loop, at a lower priority (files.service_nice), and the chat workers' loops only see
307s. The supervisor (shards/supervisor.py) starts and restarts it beside the workers
when files.service_port >= 0, HTTP is on and the host has more than one worker
(``Settings.file_service``): a file post goes to the room's owner over the Redis bus, so
one worker, which has no bus, serves its files itself.

It serves the file routes with the workers' own ``FileApi`` (shards/web/files.py): the
same sign-in (HTTP Basic with the SIP credentials, the file token of rpl:getservinfo,
the pages' session cookie), rules, compliance rows and copies, storage. It sweeps
nothing: worker 0 sweeps the file store (shards/worker/runner.py). On the bus it only
asks (shards/bus_client.py ``RequesterBus``): its own reply channel, under an id no
worker has, and no announcement, so no owner drops or re-joins anything for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from core.auth.throttle import Throttle
from core.config import Settings
from core.files.registry import make_storage
from core.store.base import ChatStore
from core.store.registry import make_store
from shards.bus_client import RequesterBus, file_service_node
from shards.claim import EXIT_CANNOT_START, CannotStart
from shards.lifetime import die_with_parent
from shards.logs import setup_logging
from shards.metrics import Metrics
from shards.redis_clients import bus_connect
from shards.routing import ShardMap
from shards.web.files import FileApi
from shards.web.http import file_api, make_app, sign_in, store_answers
from shards.web.listen import file_tokens, serve_app
from shards.worker.unauth import UnauthCaps

log = logging.getLogger(__name__)


class RunningFileService:
    """A started file service: its port and parts, for the tests."""

    def __init__(self, store: ChatStore, bus: RequesterBus, files: FileApi) -> None:
        self.store = store
        self.bus = bus
        self.files = files
        self.port = 0

    async def health(self) -> dict[str, object]:
        store_ok = await store_answers(self.store)
        return {"file_service": True, "redis_ok": self.bus.up, "store_ok": store_ok}


async def _unchanged() -> None:
    """The service changes no admin state (it has no management routes)."""


@contextlib.asynccontextmanager
async def run_file_service(settings: Settings) -> AsyncIterator[RunningFileService]:
    """Starts the service's parts and its listener; on exit stops them."""
    metrics = Metrics()
    store = make_store(settings.store_url, settings.store_pool)
    await store.open()
    shard_map = ShardMap(shards=settings.shards, workers=settings.workers, domain=settings.domain)
    bus = RequesterBus(
        settings.effective_redis_url,
        file_service_node(settings.leases.host_id),
        shard_map,
        metrics,
        bus_connect(settings),
    )
    runner: web.AppRunner | None = None
    try:
        await bus.start()
        storage = make_storage(settings.files.backend, settings.files_dir)
        # Its own throttle: sign-ins here are counted apart from a worker's (each worker
        # has its own too); the same limits (auth settings) apply.
        throttle = Throttle(settings.auth)
        api, _, _ = await sign_in(store, settings, throttle, _unchanged, storage)
        tokens = file_tokens(settings)
        files = file_api(
            store, settings, api, storage, tokens=tokens, post=bus.append_post, redirect=False
        )
        service = RunningFileService(store, bus, files)
        app = make_app(service.health, files=files)
        caps = UnauthCaps.from_limits(settings.limits, metrics.connection_refused)
        runner, server, service.port = await serve_app(
            app, settings, settings.files.service_port, False, caps
        )
        log.info("file service on %d (nice %d)", service.port, os.nice(0))
        try:
            yield service
        finally:
            server.close()
    finally:
        if runner is not None:
            await runner.cleanup()
        await bus.stop()
        await store.close()


async def _serve_until_signal(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with run_file_service(settings):
            await stop.wait()
    except OSError as exc:  # the bind or a certificate (ssl.SSLError is an OSError)
        raise CannotStart(str(exc)) from exc
    log.info("file service stopped")


def main() -> None:
    """Entry of the file service process started by the supervisor."""
    argparse.ArgumentParser(description="pchat file service (started by pchat serve)").parse_args()
    settings = msgspec.json.decode(os.environ["_PCHAT_WORKER_SETTINGS"], type=Settings)
    die_with_parent()  # a supervisor killed with SIGKILL must not leave it behind
    setup_logging(settings.log_level, "files", settings.log.format)
    if settings.files.service_nice:
        os.nice(settings.files.service_nice)  # below the chat workers: chat goes first
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
        pass
    try:
        asyncio.run(_serve_until_signal(settings))
    except CannotStart as exc:
        log.error("file service cannot start: %s", exc)
        sys.exit(EXIT_CANNOT_START)


if __name__ == "__main__":
    main()
