"""The per-worker cap on file transfers in flight (files.max_transfers) over real HTTP:
past it 503 with Retry-After, and a place comes back when a transfer is cut off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest

from core.config import FileSettings, Settings
from shards.web.files import FileApi
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import add_room, add_user
from tests.e2e.cluster import free_port
from tests.integration.files_fixtures import auth, stored_path, upload


@pytest.fixture
async def one_place(settings: Settings, store_url: str) -> AsyncIterator[RunningWorker]:
    http_settings = msgspec.structs.replace(settings.http, port=free_port())
    files = FileSettings(max_upload_kb=100, chunk_bytes=4096, max_transfers=1)
    settings = msgspec.structs.replace(settings, store=store_url, http=http_settings, files=files)
    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        await add_room(worker.store, "Lobby")
        yield worker


async def _until(places: FileApi, free: int) -> None:
    while places.places.free != free:
        await asyncio.sleep(0.01)


async def test_a_held_place_refuses_others_and_comes_back_when_cut_off(
    one_place: RunningWorker,
) -> None:
    api = one_place.files
    assert api is not None
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x" * 4096
        await release.wait()  # never set: the client gives up mid-body
        yield b"y"

    async def body() -> None:
        base = f"http://127.0.0.1:{one_place.http_port}"
        async with aiohttp.ClientSession(base) as http:
            done = await upload(http, "lobby", b"small", name="done.txt")
            assert done.status == 201
            url = "/api/rooms/lobby/files"
            held = asyncio.ensure_future(
                http.post(url, params={"name": "big.bin"}, data=slow_body(), headers=auth("alice"))
            )
            await _until(api, 0)  # the slow upload holds the one place
            refused = await upload(http, "lobby", b"other", name="b.txt")
            assert refused.status == 503 and refused.headers["Retry-After"] == "1"
            files = await (await http.get("/api/rooms/lobby/files", headers=auth("alice"))).json()
            async with http.get(files[0]["url"], headers=auth("alice")) as resp:
                assert resp.status == 503  # a download needs a place too
            held.cancel()  # the client goes away mid-upload
            with pytest.raises(asyncio.CancelledError):
                await held
        await _until(api, 1)  # the server noticed: the place is back
        async with aiohttp.ClientSession(base) as http:
            again = await upload(http, "lobby", b"after", name="c.txt")
            assert again.status == 201
            async with http.get(files[0]["url"], headers=auth("alice")) as resp:
                assert resp.status == 200 and await resp.read() == b"small"
        assert api.places.free == 1  # the download gave its place back too
        part = stored_path(one_place, "x", "x").parent
        assert not list(part.glob("*.part"))  # the cut-off upload kept nothing

    await asyncio.wait_for(body(), 30)
