"""kill -9 of the processes carrying uploads mid-upload (real `pchat serve`, real disk and
store): a half-written file is never recorded nor served, and every recorded file has its
bytes. For both carriers: the workers' own routes (files.service_port -1) and the file
service (shards/file_service.py), killed with the workers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from core.files.names import PART_SUFFIX, stored_name
from core.store.base import FileRecord
from core.store.registry import make_store
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster

BASIC = {
    "Authorization": "Basic " + base64.b64encode(f"alice@{DOMAIN}:{PASSWORD}".encode()).decode()
}


async def room_files(cluster: Cluster, room_id: str) -> list[FileRecord]:
    store = make_store(f"sqlite://{cluster.data_dir / 'chat.db'}")
    await store.open()
    try:
        return await store.room_files(room_id)
    finally:
        await store.close()


@pytest.fixture(params=["worker", "service"])
def carrier(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def base_of(cluster: Cluster) -> str:
    """Where the transfers go: the file service when it runs, else the workers."""
    return f"http://127.0.0.1:{cluster.files if cluster.files > 0 else cluster.http}"


async def start(tmp_path: Path, carrier: str) -> tuple[Cluster, str]:
    cluster = Cluster(tmp_path, 2, file_service=carrier == "service")
    await cluster.start()
    if carrier == "service":
        await cluster.wait_files_healthy()
    await cluster.admin("user", "add", f"alice@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    uri = await cluster.admin("room", "add", "Drop", "--category", "General", "--privacy", "open")
    return cluster, uri.rpartition("/")[2]


async def kill_carriers(cluster: Cluster) -> None:
    """kill -9 of the workers and the file service (when it runs); back when restarted."""
    service = cluster.file_service_pid()
    before = set(cluster.worker_pids().values()) | ({service} if service else set())
    for pid in before:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(200):  # the supervisor restarts them
        now = set(cluster.worker_pids().values())
        if len(now) == cluster.workers and not before & now:
            if service is None or cluster.file_service_pid() not in (None, service):
                break
        await asyncio.sleep(0.1)
    await cluster.wait_healthy()
    if service is not None:
        await cluster.wait_files_healthy()


async def test_kill_9_mid_upload_leaves_no_file_that_is_served(
    tmp_path: Path, carrier: str
) -> None:
    cluster, room = await start(tmp_path, carrier)
    files_dir = tmp_path / "files"
    hold = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"a" * 200_000
        await hold.wait()  # the worker has part of the file when it dies
        yield b"b" * 200_000

    try:
        async with aiohttp.ClientSession(base_of(cluster)) as http:
            url = f"/api/rooms/{room}/files"

            async def send() -> int:
                async with http.post(
                    url, params={"name": "big.bin"}, data=body(), headers=BASIC
                ) as r:
                    return r.status

            sending = asyncio.ensure_future(send())
            for _ in range(200):
                parts = list(files_dir.glob("*" + PART_SUFFIX)) if files_dir.exists() else []
                if parts and parts[0].stat().st_size > 0:
                    break
                await asyncio.sleep(0.05)
            assert parts, "the upload never reached the disk"
            await kill_carriers(cluster)
            hold.set()
            try:
                status = await asyncio.wait_for(sending, 10)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            assert status != 201
            assert await room_files(cluster, room) == []
            finals = [p for p in files_dir.iterdir() if not p.name.endswith(PART_SUFFIX)]
            assert finals == []  # only the part file, which no URL names
            async with http.get(url, headers=BASIC) as resp:
                assert resp.status == 200 and await resp.json() == []
            async with http.post(url, params={"name": "ok.txt"}, data=b"after", headers=BASIC) as r:
                assert r.status == 201
                fetched = (await r.json())["url"]
            async with http.get(fetched, headers=BASIC) as resp:
                assert await resp.read() == b"after"
    finally:
        hold.set()
        await cluster.stop()


async def test_every_recorded_file_has_its_bytes_across_kill_9(
    tmp_path: Path, carrier: str
) -> None:
    cluster, room = await start(tmp_path, carrier)
    acknowledged: dict[str, str] = {}  # file id -> sha256 the server answered with
    stop = asyncio.Event()

    async def uploader(n: int, http: aiohttp.ClientSession) -> None:
        i = 0
        while not stop.is_set():
            data = os.urandom(20_000 + 997 * (i % 50))
            i += 1
            url = f"/api/rooms/{room}/files"
            try:
                async with http.post(
                    url, params={"name": f"u{n}-{i}.dat"}, data=data, headers=BASIC
                ) as r:
                    if r.status == 201:
                        body = await r.json()
                        assert body["sha256"] == hashlib.sha256(data).hexdigest()
                        acknowledged[body["id"]] = body["sha256"]
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)  # the worker died under this request

    try:
        async with aiohttp.ClientSession(base_of(cluster)) as http:
            tasks = [asyncio.ensure_future(uploader(n, http)) for n in range(4)]
            for _ in range(3):
                await asyncio.sleep(0.7)
                await kill_carriers(cluster)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await cluster.stop()
    records = {r.id: r for r in await room_files(cluster, room)}
    assert acknowledged and set(acknowledged) <= set(records)
    for record in records.values():
        data = (tmp_path / "files" / stored_name(record.id, record.name)).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (record.size, record.sha256)
