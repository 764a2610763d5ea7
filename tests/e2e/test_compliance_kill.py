"""kill -9 of the compliance service and of a worker mid-run: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from client.client import PchatClient, SipError, XccosError
from core.compliance.store.registry import make_compliance_store
from core.store.registry import make_store
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster
from tests.e2e.compliance import archived_events, wait_drained
from tests.integration.conftest import fresh_pg_database

USERS = ["a0", "a1", "a2", "a3"]


def pid_of(data_dir: Path, name: str) -> dict[int, int]:
    path = data_dir / name
    if not path.exists():
        return {}
    return {int(w): int(p) for w, p in (line.split() for line in path.read_text().splitlines())}


@asynccontextmanager
async def store_urls(backend: str, folder: Path) -> AsyncIterator[tuple[str, str]]:
    """(chat store URL, compliance store URL): SQLite files, or one fresh PostgreSQL
    database holding both (the compliance tables are prefixed)."""
    if backend == "sqlite":
        yield f"sqlite://{folder / 'chat.db'}", f"sqlite://{folder / 'compliance.db'}"
        return
    async with fresh_pg_database() as url:
        yield url, url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_kill_9_of_compliance_and_a_worker_loses_and_doubles_nothing(
    tmp_path: Path, backend: str
) -> None:
    async with store_urls(backend, tmp_path) as (chat_url, compliance_url):
        await kill_compliance_and_a_worker(tmp_path, chat_url, compliance_url)


async def kill_compliance_and_a_worker(tmp_path: Path, chat_url: str, compliance_url: str) -> None:
    env = {
        "PCHAT_COMPLIANCE__ADAPTERS": '["jsonl"]',
        "PCHAT_STORE": chat_url,
        "PCHAT_COMPLIANCE__STORE": compliance_url,
    }
    cluster = Cluster(tmp_path, 2, "--compliance", env=env)
    try:
        await cluster.start()
        for _ in range(100):
            if pid_of(tmp_path, "compliance.pid"):
                break
            await asyncio.sleep(0.1)
        for user in USERS:
            await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
        await cluster.admin("category", "add", "General")
        rooms = [
            await cluster.admin(
                "room", "add", f"R{i}", "--category", "General", "--privacy", "open"
            )
            for i in range(2)
        ]
        acked: set[tuple[str, int]] = set()
        stop = time.monotonic() + 6

        async def poster(user: str) -> None:
            client: PchatClient | None = None
            n = 0
            while time.monotonic() < stop:
                try:
                    if client is None:
                        client = await cluster.client(user)
                        for room in rooms:
                            await client.join(room)
                    room = rooms[n % 2]
                    reply = await client.post_envelope(
                        room, f"{user}-{n}", envid=50_000 + n, timeout=5
                    )
                    if reply.code == 200:
                        acked.add(
                            (room.rpartition("/")[2], int(reply.data.find("grpchat").get("msgid")))
                        )  # type: ignore[union-attr]
                        n += 1
                except (ConnectionError, SipError, XccosError, TimeoutError, OSError):
                    client = None
                    await asyncio.sleep(0.2)
                await asyncio.sleep(0.01)
            if client is not None:
                await client.close()

        async def chaos() -> None:
            await asyncio.sleep(1.5)
            await cluster.admin("compliance", "run-now")
            await asyncio.sleep(0.5)
            os.kill(pid_of(tmp_path, "compliance.pid")[-1], signal.SIGKILL)
            await asyncio.sleep(1.0)
            os.kill(cluster.worker_pids()[1], signal.SIGKILL)
            await asyncio.sleep(1.0)
            await cluster.admin("compliance", "run-now")

        await asyncio.gather(chaos(), *(poster(u) for u in USERS))
        assert acked, "nothing was posted"
        chat = make_store(chat_url)
        await chat.open()
        archive = make_compliance_store(compliance_url)
        await archive.open()
        # the restarted service drains everything
        await wait_drained(chat, archive, lambda: cluster.admin("compliance", "run-now"))
        events = archived_events(tmp_path / "compliance")
        ids = [e["id"] for e in events]
        assert len(ids) == len(set(ids)), "an event was archived twice"
        chats = [(e["room_id"], e["msgid"]) for e in events if e["kind"] == "CHAT"]
        assert len(chats) == len(set(chats)), "a post was archived twice"
        assert acked <= set(chats), f"acknowledged posts missing: {sorted(acked - set(chats))[:5]}"
        stored = 0
        for room in rooms:
            stored += await chat.max_seq(room.rpartition("/")[2])
        assert len(chats) >= len(acked) and len(set(chats)) <= stored
        await archive.close()
        await chat.close()
    finally:
        await cluster.stop()
