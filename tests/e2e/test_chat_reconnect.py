"""`pchat chat` across a kill -9 of its worker: it says so, reconnects, catches up on every
post made meanwhile exactly once, and sends the line typed while it was away exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.client import PchatClient, SipError, XccosError
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster
from tests.integration.chat_terminal import Terminal, chat_env

WORKERS = 2


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, WORKERS)
    yield c
    await c.stop()


async def _bob_posts(cluster: Cluster, room: str, until: float) -> None:
    """Bob posts every 50 ms until ``until``, through his own reconnects (same envid on retry)."""
    bob: PchatClient | None = None
    n = 0
    while time.monotonic() < until:
        try:
            if bob is None or bob.closed.is_set():
                bob = await cluster.client("bob")
                await bob.join(room)
            reply = await bob.post_envelope(room, f"bob {n}", envid=50_000 + n, timeout=5)
            if reply.code == 200:
                n += 1
        except (OSError, ConnectionError, TimeoutError, SipError, XccosError):
            bob = None
            await asyncio.sleep(0.1)
            continue
        await asyncio.sleep(0.05)
    if bob is not None:
        await bob.close()


async def test_chat_survives_a_kill_9_of_its_worker(cluster: Cluster) -> None:
    await cluster.start()
    for user in ("alice", "bob"):
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    room = await cluster.admin("room", "add", "Lobby", "--category", "General", "--privacy", "open")
    term = Terminal(cluster.sip, "--room", "Lobby", env=chat_env(PCHAT_PASSWORD=PASSWORD))
    try:
        connected = await term.expect("* joined Lobby")
        worker = int(re.search(r"worker (\d+)", connected).group(1))  # type: ignore[union-attr]
        posting = asyncio.ensure_future(_bob_posts(cluster, room, time.monotonic() + 4.0))
        await asyncio.sleep(1.0)
        os.kill(cluster.worker_pids()[worker], signal.SIGKILL)
        await term.expect("* connection to the server lost; reconnecting")
        term.type("typed during the outage")
        await term.expect("* reconnected as alice@example.com")
        await term.expect("you: typed during the outage  (sent)", timeout=20)
        await posting
        await term.settle(1.5)  # the last live posts
        reader = await _reader(cluster, room)
        stored = await reader.history(room, query='<after msgid="0" cnt="500"/>')
        await reader.close()
        texts = [m.text for m in stored]
        assert texts.count("typed during the outage") == 1  # sent once, not lost or doubled
        shown = Counter(int(i) for i in re.findall(r"^#(\d+) ", term.seen, re.M))
        bobs = [m.msgid for m in stored if m.text.startswith("bob ")]
        assert len(bobs) > 20
        missing = [i for i in bobs if shown[i] == 0]
        doubled = [i for i, c in shown.items() if c > 1]
        assert not missing and not doubled, (missing, doubled, term.seen)
        assert "Traceback" not in term.seen
        term.type("/quit")
        assert await term.exit_code() == 0
    finally:
        term.close()


async def _reader(cluster: Cluster, room: str) -> PchatClient:
    for _ in range(50):
        try:
            client = await cluster.client("bob")
            await client.join(room)
            return client
        except (OSError, ConnectionError, TimeoutError, SipError, XccosError):
            await asyncio.sleep(0.2)
    raise AssertionError("no session for reading the history")
