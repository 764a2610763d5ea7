"""Four workers and a real Redis: fan-out across workers, kill -9, overload, slow readers,
a Redis restart, and the metrics they leave (issue: many workers)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from client.client import ChatMessage, PchatClient, SipError, XccosError
from shards.routing import ShardMap
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster, http_get, rss_kib, worker_of

WORKERS = 4
USERS = [f"u{i}" for i in range(8)]


async def setup_cluster(cluster: Cluster, rooms: int) -> list[str]:
    await cluster.start()
    for user in USERS:
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    return [
        await cluster.admin(
            "room", "add", f"Room {i}", "--category", "General", "--privacy", "open"
        )
        for i in range(rooms)
    ]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, WORKERS)
    yield c
    await c.stop()


async def whole_history(client: PchatClient, room: str, after: int = 0) -> list[ChatMessage]:
    """Every stored post after ``after``, read in pages of 500 with bccontext after."""
    out: list[ChatMessage] = []
    while True:
        page = await client.history(room, query=f'<after msgid="{after}" cnt="500"/>')
        out += page
        if len(page) < 500:
            return out
        after = page[-1].msgid


def owner_of(room: str) -> int:
    return ShardMap(shards=1024, workers=WORKERS, domain=DOMAIN).owner_of(room.rpartition("/")[2])


async def test_sessions_on_different_workers_see_each_others_posts_in_order(
    cluster: Cluster,
) -> None:
    rooms = await setup_cluster(cluster, 4)
    clients = [await cluster.client(u) for u in USERS]
    assert len({worker_of(c) for c in clients}) >= 2, "SO_REUSEPORT spread no connections"
    assert len({owner_of(r) for r in rooms}) >= 2
    for room in rooms:
        for c in clients:
            await c.join(room)

    async def talk(c: PchatClient) -> None:
        for i in range(5):
            for room in rooms:
                await c.post(room, f"{c.address} {i}")

    await asyncio.gather(*(talk(c) for c in clients[:4]))
    for c in clients:
        got: dict[str, list[int]] = {}
        expected = 5 * 4 * len(rooms) - (5 * len(rooms) if c in clients[:4] else 0)
        for _ in range(expected):
            post = await c.next_post(10)
            got.setdefault(post.room, []).append(post.msgid)
        for ids in got.values():
            assert ids == sorted(ids), "a session saw a room's posts out of order"
        assert sum(len(v) for v in got.values()) == expected
    for c in clients:
        await c.close()


async def test_kill_9_of_a_worker_loses_nothing_acknowledged(cluster: Cluster) -> None:
    rooms = await setup_cluster(cluster, 4)
    victim = owner_of(rooms[0])
    clients: dict[str, PchatClient] = {u: await cluster.client(u) for u in USERS[:6]}
    for c in clients.values():
        for room in rooms:
            await c.join(room)
    acked: list[tuple[str, int, str]] = []
    trouble = {"503": 0, "disconnects": 0}
    first_ack_after: dict[str, float] = {}
    stop = time.monotonic() + 8.0

    async def reconnect(user: str) -> PchatClient:
        while True:
            try:
                c = await cluster.client(user)
                for room in rooms:
                    await c.join(room)
                return c
            except (OSError, SipError, XccosError, ConnectionError, TimeoutError):
                await asyncio.sleep(0.2)

    async def poster(user: str) -> None:
        n = 0
        while time.monotonic() < stop:
            room, text, envid = rooms[n % len(rooms)], f"{user}-{n}", 10_000 + n
            while True:
                c = clients[user]
                try:
                    reply = await c.post_envelope(room, text, envid=envid, timeout=5)
                    if reply.code == 200:
                        msgid = int(reply.data.find("grpchat").get("msgid"))  # type: ignore[union-attr]
                        acked.append((room, msgid, text))
                        if room == rooms[0]:
                            first_ack_after.setdefault(
                                "t", time.monotonic()
                            ) if "killed" in trouble else None
                        break
                    trouble["503"] += 1
                except (ConnectionError, SipError, TimeoutError):
                    trouble["disconnects"] += 1
                    trouble["503"] += c.retries_503
                    clients[user] = await reconnect(user)
            n += 1
            await asyncio.sleep(0.02)

    async def killer() -> float:
        await asyncio.sleep(2.0)
        old = cluster.worker_pids()[victim]
        os.kill(old, signal.SIGKILL)
        trouble["killed"] = 1
        first_ack_after.clear()
        while cluster.worker_pids().get(victim) in (None, old):
            await asyncio.sleep(0.02)
        return time.monotonic()

    restarted_at, *_ = await asyncio.gather(killer(), *(poster(u) for u in clients))
    trouble["503"] += sum(c.retries_503 for c in clients.values())
    assert trouble["503"] + trouble["disconnects"] > 0, "the kill was not noticed by anyone"
    assert "t" in first_ack_after, "the killed worker's room never came back"
    assert first_ack_after["t"] - restarted_at < 2.0 + 1.0, "service took over 2 s (+1 s start-up)"

    reader = await reconnect("u7")
    for room in rooms:
        stored = await whole_history(reader, room)
        texts = [m.text for m in stored]
        assert len(texts) == len(set(texts)), f"a post was stored twice in {room}"
        by_id = {m.msgid: m.text for m in stored}
        for acked_room, msgid, text in acked:
            if acked_room == room:
                assert by_id.get(msgid) == text, f"acknowledged post {text} is missing"
    # every connected client catches up with bccontext after what it saw live
    for user, c in clients.items():
        live: dict[str, int] = {}
        while c.posts.items:
            post = await c.next_post(0.1)
            live[post.room] = max(live.get(post.room, 0), post.msgid)
        for room in rooms:
            rest = await whole_history(c, room, live.get(room, 0))
            seen = set(range(1, live.get(room, 0) + 1)) | {m.msgid for m in rest}
            mine = {msgid for r, msgid, text in acked if r == room}
            assert mine <= seen, f"{user} cannot catch up in {room}"
    # A post the killed worker committed but had not yet counted is acknowledged by its
    # new owner from the store (same envid) and never counted: each poster has at most
    # one post in flight, so at most len(clients) posts go uncounted.
    await check_metrics(cluster, posts=len(acked) - len(clients))
    await reader.close()
    for c in clients.values():
        await c.close()


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) in an exposition text."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
            found = True
    assert found, f"{name} is not exported"
    return total


async def check_metrics(cluster: Cluster, posts: int) -> None:
    """After steady posting and a kill -9: one /metrics shows the whole host."""
    status, text = await http_get(f"http://127.0.0.1:{cluster.http}/metrics")
    assert status == 200
    assert metric(text, "pchat_rooms_posts_total") >= posts
    assert metric(text, "pchat_fanout_deliveries_total") >= posts  # 5 others joined each room
    assert metric(text, "pchat_xccos_command_latency_seconds_count") > posts
    assert metric(text, "pchat_fanout_delivery_latency_seconds_count") > 0
    assert metric(text, "pchat_store_commit_seconds_count") > 0
    batches = metric(text, "pchat_store_commit_batch_size_posts_count")
    assert 0 < batches <= metric(text, "pchat_store_commit_batch_size_posts_sum")
    assert metric(text, "pchat_redis_publish_seconds_count") > 0
    assert metric(text, "pchat_supervisor_worker_restarts_total") == 1
    assert metric(text, "pchat_gateway_sessions") >= 1  # live sessions of all workers
    assert metric(text, "pchat_sip_requests_total") > posts
    for gauge in (
        "pchat_admission_queue_depth",
        "pchat_store_commit_queue_depth",
        "pchat_rooms_active_rooms",
        "pchat_sip_slow_consumer_disconnects_total",
        "pchat_admission_rejected_total",
    ):
        assert metric(text, gauge) >= 0


async def test_overload_gets_503_and_retried_posts_are_stored_once(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, WORKERS, env={"PCHAT_LIMITS__ADMISSION_QUEUE": "2"})
    try:
        [room] = await setup_cluster(cluster, 1)
        clients = [await cluster.client(u) for u in USERS[:4]]
        for c in clients:
            await c.join(room)

        async def flood(c: PchatClient) -> list[int]:
            return list(
                await asyncio.gather(*(c.post(room, f"{c.address}-{i}") for i in range(40)))
            )

        ids = await asyncio.gather(*(flood(c) for c in clients))
        assert sum(c.retries_503 for c in clients) > 0, "no 503 with an admission queue of 2"
        stored = await clients[0].history(room, query='<last cnt="500"/>')
        assert len(stored) == 160 == len({m.text for m in stored})
        assert sorted(i for batch in ids for i in batch) == [m.msgid for m in stored]
        status, metrics = await http_get(f"http://127.0.0.1:{cluster.http}/metrics")
        assert 'pchat_admission_rejected_total{reason="admission"}' in metrics
        for c in clients:
            await c.close()
    finally:
        await cluster.stop()


async def test_a_client_that_stops_reading_is_cut_off_and_others_go_on(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, WORKERS, env={"PCHAT_SIP__MAX_OUTPUT_BYTES": "65536"})
    try:
        [room] = await setup_cluster(cluster, 1)
        slow = await cluster.client("u0")
        fast = [await cluster.client(u) for u in USERS[1:4]]
        for c in (slow, *fast):
            await c.join(room)
        assert slow._transport is not None
        sock = slow._transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room in the kernel
        slow._transport.pause_reading()  # stops reading; the server's buffer for it fills
        rss_before = {w: rss_kib(pid) for w, pid in cluster.worker_pids().items()}
        text = "x" * 2000
        latencies = []
        for i in range(600):
            started = time.perf_counter()
            await fast[i % 3].post(room, f"{i} {text}")
            latencies.append(time.perf_counter() - started)
        for c in fast:  # everyone else got everything
            got = 0
            while got < 600 - 600 // 3:
                await c.next_post(10)
                got += 1
        _, metrics = await http_get(f"http://127.0.0.1:{cluster.http}/metrics")
        cut = [
            line
            for line in metrics.splitlines()
            if line.startswith("pchat_sip_slow_consumer_disconnects_total ")
        ]
        assert cut and float(cut[0].split()[1]) >= 1, "the slow reader was never cut off"
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.25, "the others were slowed down"
        for worker, pid in cluster.worker_pids().items():
            assert rss_kib(pid) - rss_before[worker] < 50_000, "a worker's memory kept growing"
        for c in fast:
            await c.close()
        slow._transport.resume_reading()  # it reads again and finds itself disconnected
        await asyncio.wait_for(slow.closed.wait(), 5)
    finally:
        await cluster.stop()


async def test_redis_restart_gives_503_then_service_resumes(cluster: Cluster) -> None:
    rooms = await setup_cluster(cluster, 4)
    clients = [await cluster.client(u) for u in USERS[:4]]
    remote = [(c, r) for c in clients for r in rooms if owner_of(r) != worker_of(c)]
    assert remote, "need a client whose room is owned by another worker"
    c, room = remote[0]
    await c.join(room)
    cluster.redis.stop()
    reply = await c.command(
        "cmd:bccontext", f'<chanib uri="{room}"/><bcq><last cnt="5"/></bcq>', check=False
    )
    assert reply.code == 503
    cluster.redis.start()
    deadline = time.monotonic() + 10

    async def once_served(step: Callable[[], Awaitable[object]]) -> None:
        """A fresh Redis holds no leases: their owners give them up and take them back
        (docs/deployment.md), answering 503 meanwhile, and a client retries a 503."""
        while True:
            try:
                await step()
                return
            except XccosError as exc:
                assert exc.code == 503 or step is first_post, exc
                assert time.monotonic() < deadline, "service did not come back after Redis did"
                await asyncio.sleep(0.2)

    async def first_post() -> None:
        await c.post(room, "after the outage")

    await once_served(first_post)
    other = next(o for o in clients if o is not c)
    await once_served(lambda: other.join(room))
    await once_served(lambda: c.post(room, "seen across workers"))
    assert (await other.next_post(10)).text == "seen across workers"
    for x in clients:
        await x.close()
