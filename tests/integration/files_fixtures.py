"""The file store's fixtures: a worker on each store backend, an HTTP session, helpers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from core.compliance.events import from_payload
from core.config import ComplianceSettings, FileSettings, Settings
from core.files.names import stored_name
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, PASSWORD, add_room, add_user
from tests.e2e.cluster import free_port


def auth(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}@{DOMAIN}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


FILES = FileSettings(max_upload_kb=10, chunk_bytes=4096, room_quota_kb=25)


@pytest.fixture
async def files_server(
    settings: Settings, store_url: str, loop_errors: list[dict[str, object]]
) -> AsyncIterator[RunningWorker]:
    """A worker on each store backend with compliance on, a 10 KB upload cap and a 25 KB
    room quota (small transfers, tiny load)."""
    # A fixed port, not 0: the file post's URL and fileServiceUrl name it.
    http_settings = msgspec.structs.replace(settings.http, port=free_port())
    settings = msgspec.structs.replace(
        settings,
        store=store_url,
        http=http_settings,
        compliance=ComplianceSettings(enabled=True),
        files=FILES,
    )
    async with run_worker(settings) as worker:
        for name in ("alice", "bob", "carol"):
            await add_user(worker.store, name)
        await add_room(worker.store, "Lobby")
        await add_room(worker.store, "Team", privacy="closed", members=[f"sip:alice@{DOMAIN}"])
        await add_room(worker.store, "Hidden", privacy="secret", members=[f"sip:alice@{DOMAIN}"])
        yield worker


@pytest.fixture
async def http(files_server: RunningWorker) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{files_server.http_port}") as session:
        yield session


async def upload(
    http: aiohttp.ClientSession, room: str, data: bytes, *, user: str = "alice", name: str = "a.txt"
) -> aiohttp.ClientResponse:
    url = f"/api/rooms/{room}/files"
    async with http.post(url, params={"name": name}, data=data, headers=auth(user)) as resp:
        await resp.read()
        return resp


async def outbox_kinds(server: RunningWorker) -> list[tuple[str, str, str]]:
    # A lone worker runs no compliance service, so the outbox keeps every row.
    rows = await server.store.outbox_head(100)
    events = [from_payload(r.payload) for r in rows if r.kind.startswith("FILE")]
    return [(e.kind, e.user, e.text) for e in events]


def stored_path(server: RunningWorker, file_id: str, name: str) -> Path:
    return Path(server.settings.files_dir) / stored_name(file_id, name)
