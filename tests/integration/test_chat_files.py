"""`pchat chat` with files: /upload, /download and file posts shown, in a pseudo-terminal
against a real worker (HTTP signed in with the token from getservinfo)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from core.config import Settings
from core.files.post import parse_file_post
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, PASSWORD, add_room, add_user, signed_in
from tests.e2e.cluster import free_port
from tests.integration.chat_terminal import Terminal, chat_env
from tests.integration.files_fixtures import auth


@pytest.fixture
async def chat_server(
    settings: Settings, loop_errors: list[dict[str, object]]
) -> AsyncIterator[RunningWorker]:
    http = msgspec.structs.replace(settings.http, port=free_port())  # named in file URLs
    async with run_worker(msgspec.structs.replace(settings, http=http)) as worker:
        for name in ("alice", "bob"):
            await add_user(worker.store, name)
        await add_room(worker.store, "Lobby")
        yield worker


async def test_upload_download_and_file_posts_in_the_terminal(
    chat_server: RunningWorker, tmp_path: Path
) -> None:
    lobby = f"ma-chan://{DOMAIN}/lobby"
    bob = await signed_in(chat_server, "bob")
    await bob.join(lobby)
    mine = tmp_path / "mine"  # tmp_path is the server's data dir too
    mine.mkdir()
    report = mine / "report.txt"
    report.write_bytes(b"quarterly numbers\n" * 100)
    term = Terminal(chat_server.sip_port, "--room", "Lobby", env=chat_env(PCHAT_PASSWORD=PASSWORD))
    try:
        await term.expect("* joined Lobby")
        term.type(f"/upload {report}")
        done = await term.expect("* uploaded ") + await term.expect("\n")
        found = re.search(r"uploaded report.txt \(1,800 bytes\) as #(\d+): id (\S+)", done)
        assert found, term.seen
        post = await bob.next_post(10)
        announced = parse_file_post(post.text)
        assert announced is not None and announced.file_id == found[2]
        assert post.msgid == int(found[1])

        data = os.urandom(5000)
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{chat_server.http_port}") as http,
            http.post(
                "/api/rooms/lobby/files", params={"name": "b.bin"}, data=data, headers=auth("bob")
            ) as resp,
        ):
            assert resp.status == 201
            bobs = (await resp.json())["id"]
        await term.expect(f"bob@example.com: [file] b.bin (5,000 bytes)  /download {bobs}")
        target = mine / "got.bin"
        term.type(f"/download {bobs} {target}")
        await term.expect(f"* saved {target}")
        assert target.read_bytes() == data
        term.type(f"/download {bobs} {target}")
        await term.expect("exists; give another PATH")
        term.type("/download " + "A" * 24 + f" {mine / 'x'}")
        await term.expect("error: 404: no such file")
        term.type(f"/upload {mine / 'missing.txt'}")
        await term.expect("no such file")
        term.type("/history 5")
        await term.expect(f"[file] report.txt (1,800 bytes)  /download {found[2]}")
        assert sorted(p.name for p in mine.iterdir()) == ["got.bin", "report.txt"]
        assert "Traceback" not in term.seen
        assert await chat_server.store.outbox_head(10) == []  # compliance off: no FILE rows
    finally:
        term.close()
        await bob.close()
