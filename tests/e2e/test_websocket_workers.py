"""Browser sessions on several workers: each socket's worker is its gateway, as for SIP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster
from tests.integration.ws_client import WsClient

WORKERS = 2


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, WORKERS)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def test_browsers_on_every_worker_and_a_sip_client_share_one_order(cluster: Cluster) -> None:
    for user in ("ann", "ben", "cy"):
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    room = await cluster.admin("room", "add", "Lobby", "--category", "General", "--privacy", "open")
    sockets: dict[int, WsClient] = {}
    spare: list[WsClient] = []
    try:
        for _ in range(40):  # SO_REUSEPORT spreads the sockets: one on each worker
            ws = await WsClient.connect(cluster.http, "ann" if not sockets else "ben", PASSWORD)
            if ws.worker in sockets:
                spare.append(ws)
                continue
            sockets[ws.worker] = ws
            if len(sockets) == WORKERS:
                break
        assert len(sockets) == WORKERS, "every socket landed on one worker"
        sip = await cluster.client("cy")
        await sip.join(room)
        browsers = list(sockets.values())
        for ws in browsers:
            assert (await ws.request("join", room=room))["type"] == "joined"
        posted = []
        for i, ws in enumerate(browsers):
            reply = await ws.post(room, f"from worker {ws.worker}", key=f"k{i}")
            posted.append((reply["msgid"], f"from worker {ws.worker}"))
        posted.append((await sip.post(room, "from sip"), "from sip"))
        for i, ws in enumerate(browsers):
            others = [p for j, p in enumerate(posted) if j != i]
            got = [(await ws.next("message"))["message"] for _ in others]
            assert [(m["msgid"], m["text"]) for m in got] == others
        assert [(p.msgid, p.text) for p in [await sip.next_post() for _ in browsers]] == posted[:-1]
        await sip.close()
    finally:
        for ws in [*sockets.values(), *spare]:
            await ws.close()
