"""One worker process: store, room owner, gateway, SIP and HTTP listeners (ARCHITECTURE §3)."""

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
import redis.asyncio as aioredis
from aiohttp import web

from core.auth.filetoken import FileTokens
from core.compliance.events import PostWriter
from core.config import Settings
from core.files.base import FileStorage
from core.files.registry import make_storage
from core.rooms.owner import Fence, OwnerSettings, RoomOwner, unfenced
from core.store.base import ChatStore, NewMessage, OutboxEvent
from core.store.batch import GroupCommitter
from core.store.fencing import FencedWrite
from core.store.registry import make_store
from core.xccos import build
from core.xccos.commands import CommandHandler, Directory, ServerInfo, invitation_block
from shards import wire
from shards.audit import AuditLog
from shards.bus import REQUEST_TIMEOUT_S, Fanout, RedisBus
from shards.claim import EXIT_CANNOT_START, EXIT_DUPLICATE_HOST, CannotStart
from shards.host_claim import HOST_CLAIM_ENV, DuplicateHost
from shards.leases import RedisLeases, no_retry
from shards.lifetime import die_with_parent
from shards.logs import setup_logging
from shards.metrics import Metrics
from shards.ownership import TRUST, ShardKeeper
from shards.placement import node_id
from shards.redis_clients import AnyRedis, bus_connect, redis_client
from shards.rejoin import gateway_grace_s
from shards.resp import RespError, RespSubscriber
from shards.routing import ALL_SHARDS, RoomRouter, ShardMap
from shards.sweeps import sweep_forever
from shards.takeover import ShardHooks
from shards.waits import wait_set
from shards.web.files import FileApi
from shards.web.http import store_answers, web_app
from shards.web.listen import (
    file_base,
    file_tokens,
    http_base,
    listen_socket,
    serve_app,
    server_tls,
)
from shards.worker.connection import SipConnection
from shards.worker.gateway import Gateway
from shards.worker.heap import tuned_gc
from shards.worker.looplag import watch_loop_lag
from shards.worker.output import PendingOutput
from shards.worker.rooms import LocalRooms

log = logging.getLogger(__name__)

REVISION_POLL_S = 1.0  # admin changes reach a running worker within this
INVITATION_PAGE = 1000  # invitations read per query while catching up


class RunningWorker:
    """A started worker: its ports and parts, for the supervisor and the tests."""

    def __init__(
        self,
        settings: Settings,
        worker_id: int,
        store: ChatStore,
        gateway: Gateway,
        owner: RoomOwner,
        committer: GroupCommitter[NewMessage],
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.store = store
        self.gateway = gateway
        self.owner = owner
        self.committer = committer
        self.sip_port = 0
        self.sip_tls_port = 0
        self.http_port = 0
        self.redis: AnyRedis | None = None
        self.last_invitation = 0  # invitations up to this id were looked at
        self.directory: Directory | None = None
        self.files: FileApi | None = None  # the HTTP file service, when HTTP listens
        self.sweeper: asyncio.Task[None] | None = None
        self.keeper: ShardKeeper | None = None  # None: one worker, every shard its own

    async def health(self) -> dict[str, object]:
        redis_ok = False
        if self.redis is not None:
            try:
                redis_ok = bool(await asyncio.wait_for(self.redis.ping(), 1.0))
            except (TimeoutError, OSError, aioredis.RedisError):
                redis_ok = False
        store_ok = await store_answers(self.store)
        return {
            "worker": self.worker_id,
            "redis_ok": redis_ok,
            "store_ok": store_ok,
            "sessions": len(self.gateway.sessions),
            "node": self.gateway.worker_id,
            "shards": len(self.keeper.owned) if self.keeper else self.settings.shards,
            "admission_inflight": self.gateway.admission.inflight,
        }

    async def announce_change(self) -> None:
        """The management API changed the store: every worker refreshes now."""
        try:
            assert self.redis is not None
            await asyncio.wait_for(self.redis.publish(wire.ADMIN_CHANNEL, "changed"), 1.0)
        except (TimeoutError, OSError, aioredis.RedisError, AssertionError):
            await self.refresh()  # at least this worker; the others poll the revision

    async def refresh(self) -> None:
        """An admin changed the store: drop caches, re-check who may stay in which room."""
        if self.directory is not None:
            self.directory.invalidate()
        self.gateway.handler.signin_views.clear()  # parked sign-in reads predate the change
        await self.owner.refresh()
        await self.gateway.recheck_follows()
        await self._end_stale_sign_ins()
        await self.deliver_invitations()

    async def deliver_invitations(self) -> None:
        """New invitations reach their online invitees at once as ntc:inv; the others get
        them from cmd:getinv at their next sign-in."""
        while True:
            batch = await self.store.invitations_after(self.last_invitation, INVITATION_PAGE)
            if not batch:
                return
            self.last_invitation = batch[-1].id
            delivered = []
            for inv in batch:
                sessions = self.gateway.sessions_of(inv.invitee)
                room = await self.store.get_room(inv.room_id) if sessions else None
                if room is None or not await self.gateway.may_read(room.id, inv.invitee):
                    continue  # offline, or no longer allowed in: cmd:getinv decides later
                notice = build.ntc("ntc:inv", invitation_block(self.settings.domain, inv, room))
                for session in sessions:
                    session.send_inner(notice)
                delivered.append(inv.id)
                # A session signing in meanwhile parked it as pending: not to be shown again.
                self.gateway.handler.signin_views.drop_user(inv.invitee)
            await self.store.mark_invitations_delivered(delivered)

    async def _end_stale_sign_ins(self) -> None:
        """Every worker runs this on each change (the revision poll, the Redis admin
        notice): sign-ins that a deletion, password change or disable made invalid end."""
        if not self.gateway.connections:
            return
        self.gateway.end_stale({u.uri: u for u in await self.store.list_users()})


async def _serve_http(
    worker: RunningWorker, reuse: bool, files: FileStorage, tokens: FileTokens | None
) -> tuple[web.AppRunner, asyncio.Server]:
    """The HTTP(S) listener: every web part, under the gateway's connection caps."""
    gateway = worker.gateway
    app, worker.files = await web_app(
        worker.store,
        worker.settings,
        gateway.throttle,
        worker.announce_change,
        worker.health,
        storage=files,
        tokens=tokens,
        post=gateway.router.append_post,
        audit=AuditLog(worker.settings.audit_file),
        gateway=gateway,
    )
    port = worker.settings.http.port
    runner, server, worker.http_port = await serve_app(
        app, worker.settings, port, reuse, gateway.unauth
    )
    return runner, server


def _server_info(settings: Settings) -> ServerInfo:
    return ServerInfo(
        domain=settings.domain,
        search_limit=settings.limits.search_limit,
        room_list_max=settings.limits.room_list_max or settings.limits.search_limit,
        message_size_limit=settings.limits.message_size_limit,
        story_size_limit=settings.limits.story_size_limit,
        history_max=settings.limits.history_max,
        http_base=http_base(settings),
        file_base=file_base(settings),
        # Half the output cap: a reply never cuts off the reader it answers.
        reply_budget_bytes=max(settings.sip.max_output_bytes // 2, 16 * 1024),
        joins_per_session=settings.limits.joins_per_session,
        pref_label_chars=settings.limits.pref_label_chars,
        pref_content_bytes=settings.limits.pref_content_bytes,
    )


def _fence(keeper: ShardKeeper | None, shard_map: ShardMap) -> Fence:
    """A room's fencing token from the keeper's leases; unfenced with one worker."""
    if keeper is None:
        return unfenced
    return lambda room_id: keeper.token(shard_map.shard(room_id))


@contextlib.asynccontextmanager
async def run_worker(
    settings: Settings, worker_id: int = 0, host_claim: str = ""
) -> AsyncIterator[RunningWorker]:
    """Starts every part of a worker; on exit stops listening, commits what is queued, closes.
    ``host_claim``: the supervisor's claim of the host_id (shards/host_claim.py), renewed
    with each heartbeat; "" (the embedded Redis, tests): none."""
    metrics = Metrics()
    store = make_store(settings.store_url, settings.store_pool)
    await store.open()
    node = node_id(settings.leases.host_id, worker_id)  # this worker's id in the pool
    shard_map = ShardMap(shards=settings.shards, workers=settings.workers, domain=settings.domain)
    # No redis-py retries on a cluster (see no_retry); one Redis keeps them, so a restarted
    # Redis is reached again within the round that first meets it.
    retry = {"retry": no_retry()} if settings.redis_cluster else {}
    lease_redis = redis_client(settings, socket_timeout=settings.leases.ttl_s / 2, **retry)
    keeper = (
        ShardKeeper(
            # each of a round's Redis calls (renew, heartbeat, holders) within a third of
            # the trust window, so a round ends before this worker stops trusting its leases
            RedisLeases(
                lease_redis,
                timeout_s=settings.leases.ttl_s * TRUST / 3,
                host=(settings.leases.host_id, host_claim) if host_claim else None,
            ),
            store,
            settings.leases,
            node=node,
            workers=settings.workers,
            shards=settings.shards,
        )  # fmt: skip
        if settings.leased
        else None
    )
    recorder: GroupCommitter[OutboxEvent] | None = None
    if settings.compliance.enabled:
        recorder = GroupCommitter(
            FencedWrite(store.add_outbox, keeper.fenced) if keeper else store.add_outbox
        )
        recorder.start()
    posts = PostWriter(store, record=recorder is not None)
    committer: GroupCommitter[NewMessage] = GroupCommitter(
        FencedWrite(posts, keeper.fenced) if keeper else posts, stats=metrics
    )
    committer.start()
    # Built in dependency order: the bus (a transport), the local rooms (deliver events,
    # watch rooms through the bus), the owner (publishes to both), the router and the
    # handler (reach owners), the gateway (holds sessions); the bus then serves them.
    bus = (
        RedisBus(settings.effective_redis_url, node, shard_map, metrics, bus_connect(settings))
        if keeper
        else None
    )
    ownership = keeper or ALL_SHARDS
    output = PendingOutput()  # connections with output, flushed by delivery turns and once a turn
    local = LocalRooms(settings, node, store, shard_map, ownership, metrics, bus, output)
    owner = RoomOwner(
        store,
        committer,
        Fanout(bus, local.on_event),
        OwnerSettings(
            ring_size=settings.limits.recent_ring,
            message_size_limit=settings.limits.message_size_limit,
            participant_update_limit=settings.limits.participant_update_limit,
            # With leases (a pool), gateways come back onto the bus and re-announce their
            # sessions: until then their posts get 503, not 403 (core/rooms/grace.py).
            gateway_grace_s=(
                gateway_grace_s(REQUEST_TIMEOUT_S, settings.leases.renew_s) if keeper else 0.0
            ),
        ),
        recorder=recorder,
        fence=_fence(keeper, shard_map),
    )
    router = RoomRouter(shard_map, ownership, owner, remote=bus)
    directory = Directory(store)
    files = make_storage(settings.files.backend, settings.files_dir)
    tokens = file_tokens(settings)
    handler = CommandHandler(store, router, directory, _server_info(settings), file_tokens=tokens)
    gateway = Gateway(settings, node, store, handler, router, local, metrics, output)
    if bus is not None and keeper is not None:
        await bus.start(owner, local, keeper)
        bus.on_control = keeper.wake
        await keeper.start(ShardHooks(bus, owner, node))
    worker = RunningWorker(settings, worker_id, store, gateway, owner, committer)
    worker.directory = directory
    worker.keeper = keeper
    loop = asyncio.get_running_loop()
    reuse = settings.leased or settings.sip.port != 0
    sip_sock = listen_socket(settings.sip.host, settings.sip.port, reuse)
    server = await loop.create_server(lambda: SipConnection(gateway), sock=sip_sock)
    worker.sip_port = sip_sock.getsockname()[1]
    servers = [server]
    if settings.sip.tls_port >= 0:
        tls = server_tls(settings.sip.tls_cert, settings.sip.tls_key)
        tls_sock = listen_socket(settings.sip.host, settings.sip.tls_port, reuse)
        servers.append(
            await loop.create_server(
                lambda: SipConnection(gateway),
                sock=tls_sock,
                ssl=tls,
                ssl_handshake_timeout=settings.sip.tls_handshake_timeout_s or None,
            )
        )
        worker.sip_tls_port = tls_sock.getsockname()[1]
    runner: web.AppRunner | None = None
    if settings.http.port >= 0:
        runner, http_server = await _serve_http(worker, reuse, files, tokens)
        servers.append(http_server)
    # One sweeper per host is enough: worker 0 (the file service, when on, sweeps nothing).
    if worker.files is not None and worker_id == 0:
        worker.sweeper = loop.create_task(sweep_forever(worker.files.sweep, "file store"))
    worker.redis = redis_client(settings, socket_timeout=2)
    while batch := await store.invitations_after(worker.last_invitation, INVITATION_PAGE):
        worker.last_invitation = batch[-1].id  # older ones wait for cmd:getinv
    watcher = loop.create_task(_watch_revision(worker))
    gauges = loop.create_task(_gauges(worker, metrics))
    lag = loop.create_task(watch_loop_lag(metrics.loop_lag))
    log.info("worker %d: SIP on %d, HTTP on %d", worker_id, worker.sip_port, worker.http_port)
    try:
        yield worker
    finally:
        for listener in servers:
            listener.close()
        for conn in list(gateway.connections):
            conn.abort()
        await gateway.finish_leaving(timeout_s=2.0)  # owners elsewhere hear of the parts
        tasks = [watcher, gauges, lag] + ([worker.sweeper] if worker.sweeper else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await committer.stop()
        if recorder is not None:
            await recorder.stop()
        if keeper is not None:  # after the last commit: the next owner's epoch fences this one
            await keeper.stop()
        await lease_redis.aclose()
        if bus is not None:
            await bus.stop()
        if runner is not None:
            await runner.cleanup()
        await worker.redis.aclose()
        await store.close()


async def _watch_revision(worker: RunningWorker) -> None:
    """Polls the store's revision, and wakes early on an admin notice over Redis."""
    seen = await worker.store.revision()
    notice = asyncio.Event()
    listener = asyncio.get_running_loop().create_task(_admin_notices(worker, notice))
    try:
        while True:
            await wait_set(notice, REVISION_POLL_S)
            notice.clear()
            try:
                current = await worker.store.revision()
                if current != seen:
                    seen = current
                    await worker.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("revision check failed; retrying")
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener


async def _admin_notices(worker: RunningWorker, notice: asyncio.Event) -> None:
    """Wakes the revision check on an admin notice. The lean subscriber, not redis-py's
    PubSub: cancelling that one while it connects could leave the worker's shutdown
    waiting forever; this one closes its socket and is done."""
    channel = wire.ADMIN_CHANNEL.encode()
    while True:
        sub: RespSubscriber | None = None
        try:
            sub = await RespSubscriber.connect(
                worker.settings.effective_redis_url, lambda _channel, _data: notice.set()
            )
            await sub.subscribe(channel)
            await sub.closed.wait()
            raise RespError("Redis connection lost")
        except (OSError, TimeoutError, RespError) as exc:
            log.debug("admin notices unavailable (%s); polling only", exc)
        finally:
            if sub is not None:
                sub.close()
        await asyncio.sleep(1.0)


async def _gauges(worker: RunningWorker, metrics: Metrics) -> None:
    while True:
        metrics.inflight.set(worker.gateway.admission.inflight)
        metrics.commit_queue.set(worker.committer.depth)
        metrics.active_rooms.set(worker.owner.active_rooms)
        await asyncio.sleep(1.0)


def main() -> None:
    """Entry of a worker process started by the supervisor."""
    parser = argparse.ArgumentParser(description="pchat worker process (started by pchat serve)")
    parser.add_argument("--worker-id", type=int, required=True)
    args = parser.parse_args()
    settings = msgspec.json.decode(os.environ["_PCHAT_WORKER_SETTINGS"], type=Settings)
    die_with_parent()  # a supervisor killed with SIGKILL must not leave workers behind
    setup_logging(settings.log_level, f"worker-{args.worker_id}", settings.log.format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
        pass
    try:
        claim = os.environ.get(HOST_CLAIM_ENV, "")
        asyncio.run(_serve_until_signal(settings, args.worker_id, claim))
    except CannotStart as exc:
        log.error("worker %d cannot start: %s", args.worker_id, exc)
        sys.exit(EXIT_CANNOT_START)
    except DuplicateHost:  # logged by the keeper when it found the other host
        sys.exit(EXIT_DUPLICATE_HOST)


async def _serve_until_signal(settings: Settings, worker_id: int, host_claim: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = False
    try:
        async with run_worker(settings, worker_id, host_claim) as worker:
            started = True
            with tuned_gc(settings.gc_gen0_threshold):  # after start-up: its heap is frozen
                waits = [asyncio.ensure_future(stop.wait())]
                if worker.keeper is not None:
                    waits.append(asyncio.ensure_future(worker.keeper.refused.wait()))
                _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for wait in pending:
                    wait.cancel()
        if worker.keeper is not None and worker.keeper.refused.is_set():
            raise DuplicateHost(worker.keeper.refusal)
    except OSError as exc:  # a bind or a certificate (ssl.SSLError is an OSError)
        if started:
            raise
        raise CannotStart(str(exc)) from exc
    log.info("worker %d stopped", worker_id)


if __name__ == "__main__":
    main()
