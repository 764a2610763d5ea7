"""Compliance on PostgreSQL across a host kill: host A (supervisor, worker, the active
compliance service) is killed with kill -9 during posting and archiving; the standby
compliance service of host B, on the same PostgreSQL database and the same shared output
folder, takes over and finishes: every acknowledged post archived, and none twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import msgspec
import redis.asyncio as aioredis

from client.client import SipError, XccosError
from core.compliance.store.registry import make_compliance_store
from core.config import load_settings
from core.store.registry import make_store
from shards.compliance import LEASE_KEY
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster
from tests.e2e.compliance import archived_events, wait_drained
from tests.e2e.test_compliance_kill import pid_of
from tests.integration.conftest import fresh_pg_database

USERS = ["p0", "p1", "p2"]
LEASE_TTL_S = "2"  # short, so host B takes over within seconds


def standby(host_dir: Path, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Host B's compliance service, started as its supervisor starts it."""
    settings = load_settings(env={**env, "PCHAT_DATA_DIR": str(host_dir)})
    child = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    child["_PCHAT_WORKER_SETTINGS"] = msgspec.json.encode(settings).decode()
    return subprocess.Popen([sys.executable, "-m", "shards.compliance"], env=child, stderr=log)


async def test_the_other_hosts_service_finishes_the_archive_exactly_once(tmp_path: Path) -> None:
    async with fresh_pg_database() as url:
        shared, host_a, host_b = tmp_path / "shared", tmp_path / "a", tmp_path / "b"
        for folder in (shared, host_a, host_b):
            folder.mkdir()
        env = {
            "PCHAT_STORE": url,
            "PCHAT_COMPLIANCE__STORE": url,
            "PCHAT_POOL_HOSTS": "2",
            "PCHAT_COMPLIANCE__ENABLED": "true",
            "PCHAT_COMPLIANCE__ADAPTERS": '["jsonl"]',
            "PCHAT_COMPLIANCE__OUTPUT_DIR": str(shared / "compliance"),
            "PCHAT_COMPLIANCE__FILES_DIR": str(shared / "compliance-files"),
            "PCHAT_FILES__DIR": str(shared / "files"),
            "PCHAT_COMPLIANCE__LEASE_TTL_S": LEASE_TTL_S,
        }
        cluster = Cluster(host_a, 1, env=env)
        b: subprocess.Popen[bytes] | None = None
        try:
            await cluster.start()
            a_service = await active_service(cluster)
            with open(shared / "standby.log", "wb") as log:
                b = standby(host_b, {**env, "PCHAT_REDIS_URL": cluster.redis.url}, log)
            acked = await post_then_kill_host(cluster, a_service)
            await drained(url)
        finally:
            if b is not None:
                b.send_signal(signal.SIGTERM)
                b.wait(15)
            await cluster.stop()
        log = (shared / "standby.log").read_text()
        assert "took over the store" in log, log
        check_archive(shared / "compliance", acked)


async def active_service(cluster: Cluster) -> int:
    """Host A's compliance service pid, once it holds the lease."""
    redis = aioredis.Redis.from_url(cluster.redis.url)
    try:
        for _ in range(200):
            pids = pid_of(cluster.data_dir, "compliance.pid")
            holder = await redis.get(LEASE_KEY)
            if pids and holder and holder.decode().startswith(f"{pids[-1]}-"):
                return pids[-1]
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    raise AssertionError("host A's compliance service never took the lease")


async def post_then_kill_host(cluster: Cluster, service_pid: int) -> set[tuple[str, int]]:
    for user in USERS:
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    room = await cluster.admin("room", "add", "R", "--category", "General", "--privacy", "open")
    acked: set[tuple[str, int]] = set()
    dead = asyncio.Event()

    async def poster(user: str) -> None:
        client = await cluster.client(user)
        await client.join(room)
        n = 0
        with contextlib.suppress(ConnectionError, SipError, XccosError, TimeoutError, OSError):
            while not dead.is_set():
                reply = await client.post_envelope(room, f"{user}-{n}", envid=70_000 + n, timeout=3)
                if reply.code == 200:
                    msgid = int(reply.data.find("grpchat").get("msgid"))  # type: ignore[union-attr]
                    acked.add((room.rpartition("/")[2], msgid))
                n += 1
        with contextlib.suppress(Exception):
            await client.close()

    async def kill_host() -> None:
        await asyncio.sleep(1.5)
        await cluster.admin("compliance", "run-now")
        await asyncio.sleep(0.6)
        assert cluster.proc is not None
        pids = [cluster.proc.pid, service_pid, *cluster.worker_pids().values()]
        for pid in pids:  # the whole host at once: supervisor, worker, compliance
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        dead.set()

    await asyncio.gather(kill_host(), *(poster(u) for u in USERS))
    assert acked, "nothing was posted"
    return acked


async def drained(url: str) -> None:
    """Host B's service relays the rest and archives everything."""
    chat, archive = make_store(url), make_compliance_store(url)
    await chat.open()
    await archive.open()
    try:
        await wait_drained(chat, archive, archive.request_run)
    finally:
        await archive.close()
        await chat.close()


def check_archive(out: Path, acked: set[tuple[str, int]]) -> None:
    events = archived_events(out)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was archived twice"
    chats = [(e["room_id"], e["msgid"]) for e in events if e["kind"] == "CHAT"]
    assert len(chats) == len(set(chats)), "a post was archived twice"
    assert acked <= set(chats), f"acknowledged posts missing: {sorted(acked - set(chats))[:5]}"
