"""Issue 10 (hardening) across worker processes: a supervisor, two workers, a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster, worker_of


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, 2)
    yield c
    await c.stop()


async def test_a_password_change_signs_the_user_out_on_every_worker(cluster: Cluster) -> None:
    await cluster.start()
    for user in ("alice", "bob"):
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    devices = [await cluster.client("alice") for _ in range(6)]
    if len({worker_of(c) for c in devices}) < 2:
        pytest.skip("SO_REUSEPORT put all six connections on one worker")
    bob = await cluster.client("bob")
    await cluster.admin("user", "passwd", f"alice@{DOMAIN}", "--password", "new-pw")
    await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for c in devices)), 10)
    assert all(any(r.method == "BYE" for r in c.server_requests) for c in devices)
    assert not bob.closed.is_set()
    await bob.close()
