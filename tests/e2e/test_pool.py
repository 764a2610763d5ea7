"""Three hosts on a real Redis Cluster (3 masters, 3 replicas) and one fresh PostgreSQL
database (issue 14): a joining host takes its share, members on different hosts get every
post in order, and a host killed, drained or paused loses no acknowledged post while the
others take its rooms over.

The scenarios share the session's cluster (none of them touches its nodes; each starts on
a flushed one). The joining host also runs on one redis-server: the pool's single-Redis
path (one lease pipeline, classic pub/sub) is tested end to end there."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from client.client import ChatMessage, PchatClient, PoolAddresses, SipError, XccosError
from tests.e2e.cluster import DOMAIN, PASSWORD
from tests.e2e.pool import Pool, bounded
from tests.redis_cluster import RedisClusterNodes

USERS = [f"u{i}" for i in range(6)]  # two per host
TAKEOVER_S = 5.0  # issue 14: a dead host's rooms are served by the others within 5 s
NETWORK = (OSError, ConnectionError, TimeoutError, SipError)
# A post still refused this long after it was first tried fails the test: every scenario
# here recovers well within it, and an unbounded retry would hang the test instead.
POST_BOUND_S = 20.0


# Start-up (three hosts settling, users and rooms), 4-12 s of posting, the checks; on a
# loaded 2-core box a scenario takes about 30 s.
TEST_BOUND_S = 150.0


@contextlib.asynccontextmanager
async def opened(tmp_path: Path, cluster: RedisClusterNodes | None) -> AsyncIterator[Pool]:
    if cluster is not None:
        cluster.flush()
    p = Pool(tmp_path, cluster=cluster)
    await p.open()
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def pool(tmp_path: Path, redis_cluster: RedisClusterNodes) -> AsyncIterator[Pool]:
    """Three hosts' pool on the session's Redis Cluster (flushed) and a fresh database."""
    async with opened(tmp_path, redis_cluster) as p:
        yield p


@pytest.fixture(params=["redis-cluster", "one-redis"])
async def any_pool(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pool]:
    """The pool on the cluster, then on one redis-server of its own."""
    cluster = request.getfixturevalue("redis_cluster") if request.param == "redis-cluster" else None
    async with opened(tmp_path, cluster) as p:
        yield p


async def populate(pool: Pool, rooms: int) -> list[str]:
    for user in USERS:
        await pool.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await pool.admin("category", "add", "General")
    return [
        await pool.admin("room", "add", f"Room {i}", "--category", "General", "--privacy", "open")
        for i in range(rooms)
    ]


async def start_all(pool: Pool, rooms: int) -> list[str]:
    for host in pool.hosts:
        await host.start()
    await pool.settled([0, 1, 2])
    return await populate(pool, rooms)


class Member:
    """A user on a host of the pool: joined to every room, its live posts collected."""

    def __init__(self, pool: Pool, user: str, home: int, rooms: list[str]) -> None:
        self.pool, self.user, self.home, self.rooms = pool, user, home, rooms
        self.addresses: PoolAddresses = pool.addresses(home)
        self.client: PchatClient | None = None
        self.live: list[ChatMessage] = []
        self.moved = 0  # reconnects to another host
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        while True:
            try:
                client = await self.pool.client(self.user, self.addresses)
                for room in self.rooms:
                    reply = await client.join(room)
                    assert reply.code == 200, reply.code
                break
            except (*NETWORK, XccosError, AssertionError):
                await asyncio.sleep(0.2)
        self.client = client
        self._reader = asyncio.ensure_future(self._read(client))

    async def _read(self, client: PchatClient) -> None:
        with contextlib.suppress(*NETWORK, asyncio.CancelledError):
            while True:
                self.live.append(await client.next_post(3600))

    async def reconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        self.moved += 1
        await self.connect()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.client is not None:
            await self.client.close()

    def seen(self, room: str) -> list[int]:
        return [m.msgid for m in self.live if m.room == room]


class Traffic:
    """Steady posting by every member into every room; acknowledged posts recorded."""

    def __init__(self, members: list[Member], rooms: list[str], watched: str) -> None:
        self.members, self.rooms, self.watched = members, rooms, watched
        self.acked: list[tuple[str, int, str, str]] = []  # room, msgid, text, user
        self.acked_at: list[float] = []  # when each of ``acked`` came
        self.event_at = 0.0
        self.first_after: float | None = None  # first ack in the watched room after it
        self.failures = 0
        self.codes: Counter[int] = Counter()  # refusals by code

    async def run(self, seconds: float, event: Callable[[], Coroutine[Any, Any, None]]) -> None:
        stop = time.monotonic() + seconds

        async def fire() -> None:
            await asyncio.sleep(2.0)
            self.event_at = time.monotonic()
            await event()

        await asyncio.gather(fire(), *(self._post(m, stop) for m in self.members))

    async def _post(self, member: Member, stop: float) -> None:
        n = 0
        while time.monotonic() < stop:
            room, text = self.rooms[n % len(self.rooms)], f"{member.user}-{n}"
            given_up_at, last = time.monotonic() + POST_BOUND_S, "no answer"
            while True:
                assert member.client is not None
                assert time.monotonic() < given_up_at, f"{text} in {room} refused: {last}"
                try:
                    reply = await member.client.post_envelope(room, text, envid=1000 + n, timeout=8)
                except NETWORK as exc:
                    last = repr(exc)
                    await member.reconnect()  # its host died or drains: the next one
                    continue
                if reply.code == 200:
                    msgid = int(reply.data.find("grpchat").get("msgid"))  # type: ignore[union-attr]
                    self.acked.append((room, msgid, text, member.user))
                    self.acked_at.append(time.monotonic())
                    if room == self.watched and self.event_at and self.first_after is None:
                        self.first_after = time.monotonic()
                    break
                self.failures += 1
                self.codes[reply.code] += 1
                last = f"code {reply.code}"
                await asyncio.sleep(0.1)
            n += 1
            await asyncio.sleep(0.05)

    async def check_stored_once(self, pool: Pool) -> None:
        for room in self.rooms:
            stored = await pool.stored(room)
            texts = [text for _, text, _ in stored]
            assert len(texts) == len(set(texts)), f"a post was stored twice in {room}"
            by_seq = {seq: text for seq, text, _ in stored}
            for acked_room, msgid, text, _ in self.acked:
                if acked_room == room:
                    assert by_seq.get(msgid) == text, f"acknowledged post {text} is missing"
            # one order per room: what the store numbers later it also accepted later (a
            # stale owner writing old seqs after a takeover would break this)
            stamps = [ts for _, _, ts in stored]
            assert stamps == sorted(stamps), f"seq order and time order differ in {room}"

    def check_delivered(self, survivors: list[Member]) -> None:
        """Members who never lost their connection saw every acknowledged post of the
        others live (or filled from the store), in order."""
        for member in survivors:
            for room in self.rooms:
                seen = member.seen(room)
                assert seen == sorted(seen), f"{member.user} got {room} out of order"
                assert len(seen) == len(set(seen)), f"{member.user} got a post twice in {room}"
                wanted = {m for r, m, _, u in self.acked if r == room and u != member.user}
                missing = wanted - set(seen)
                assert not missing, f"{member.user} never got {sorted(missing)} of {room}"


async def members_of(pool: Pool, rooms: list[str]) -> list[Member]:
    members = [Member(pool, user, i // 2, rooms) for i, user in enumerate(USERS)]
    for member in members:
        await member.connect()
    return members


async def settle_deliveries() -> None:
    await asyncio.sleep(1.5)  # the last posts' fan-out and gap fills reach every member


async def test_a_joining_host_takes_its_share_and_members_on_three_hosts_see_every_post(
    any_pool: Pool,
) -> None:
    await bounded(_joining(any_pool), TEST_BOUND_S, "joining")


async def _joining(pool: Pool) -> None:
    await pool.hosts[0].start()
    await pool.hosts[1].start()
    await pool.settled([0, 1])
    await pool.hosts[2].start()  # joins a running pool: a bounded handover to it
    shares = await pool.settled([0, 1, 2])
    assert sum(shares.values()) == 1024
    batches = [
        int(n)
        for host in pool.hosts[:2]
        for n in re.findall(r"gives up (\d+) shard\(s\): handed over", host.log_text())
    ]
    assert batches and max(batches) <= 64, batches  # leases.handover_batch per step
    rooms = await populate(pool, 2)
    members = await members_of(pool, rooms)
    traffic = Traffic(members, rooms, rooms[0])

    async def nothing() -> None:
        pass

    await traffic.run(4.0, nothing)
    await settle_deliveries()
    assert traffic.acked
    await traffic.check_stored_once(pool)
    traffic.check_delivered(members)
    for member in members:
        await member.close()


async def test_kill_9_of_a_host_loses_nothing_acknowledged(pool: Pool) -> None:
    await bounded(_kill9(pool), TEST_BOUND_S, "kill9")


async def _kill9(pool: Pool) -> None:
    rooms = await start_all(pool, 3)
    victim = await pool.owner_host(rooms[0])
    assert victim is not None
    members = await members_of(pool, rooms)
    traffic = Traffic(members, rooms, rooms[0])

    async def kill() -> None:
        pool.hosts[victim].kill_9()

    await traffic.run(12.0, kill)
    assert traffic.first_after is not None, "the dead host's room never came back"
    assert traffic.first_after - traffic.event_at < TAKEOVER_S
    assert await pool.owner_host(rooms[0]) not in (None, victim)
    await settle_deliveries()
    await traffic.check_stored_once(pool)
    moved = [m for m in members if m.home == victim]
    assert all(m.moved for m in moved)  # its clients went on through another host
    traffic.check_delivered([m for m in members if not m.moved])
    for member in members:
        await member.close()


async def test_a_graceful_drain_hands_over_without_loss(pool: Pool) -> None:
    await bounded(_drain(pool), TEST_BOUND_S, "drain")


async def _drain(pool: Pool) -> None:
    rooms = await start_all(pool, 3)
    victim = await pool.owner_host(rooms[0])
    assert victim is not None
    members = await members_of(pool, rooms)
    traffic = Traffic(members, rooms, rooms[0])

    async def drain() -> None:
        await pool.hosts[victim].stop()

    await traffic.run(10.0, drain)
    assert pool.hosts[victim].proc is not None and pool.hosts[victim].proc.returncode == 0
    assert traffic.first_after is not None
    assert "shutting down" in pool.hosts[victim].log_text()
    await pool.settled([h for h in range(3) if h != victim])
    await settle_deliveries()
    await traffic.check_stored_once(pool)
    traffic.check_delivered([m for m in members if not m.moved])
    for member in members:
        await member.close()


async def test_a_paused_owner_is_fenced_and_steps_down(pool: Pool) -> None:
    await bounded(_pause(pool), TEST_BOUND_S, "pause")


async def _pause(pool: Pool) -> None:
    rooms = await start_all(pool, 3)
    victim = await pool.owner_host(rooms[0])
    assert victim is not None
    worker = pool.hosts[victim].worker_pid()
    members = await members_of(pool, rooms)
    others = [m for m in members if m.home != victim]
    traffic = Traffic(others, rooms, rooms[0])

    async def pause() -> None:
        os.kill(worker, signal.SIGSTOP)

    try:
        await traffic.run(9.0, pause)  # past its 3 s lease: the other hosts take over
        assert traffic.first_after is not None, "the paused host's room never came back"
        assert traffic.first_after - traffic.event_at < TAKEOVER_S + 1.0
        assert await pool.owner_host(rooms[0]) != victim
        before = {room: await pool.stored(room) for room in rooms}
    finally:
        os.kill(worker, signal.SIGCONT)
    await asyncio.sleep(1.0)
    log = pool.hosts[victim].log_text()
    assert re.search(r"gives up \d+ shard\(s\): its leases ran out", log) or re.search(
        r"gives up \d+ shard\(s\): the store refused", log
    ), "the paused worker did not step down"
    for room in rooms:  # it wrote nothing when it woke: the stored posts are as before
        assert await pool.stored(room) == before[room]
    await traffic.run(4.0, _no_event)  # and the pool goes on, the woken host included
    await settle_deliveries()
    await traffic.check_stored_once(pool)
    traffic.check_delivered([m for m in others if not m.moved])
    assert "already stored" not in "".join(h.log_text() for h in pool.hosts)
    for member in members:
        await member.close()


async def _no_event() -> None:
    pass
