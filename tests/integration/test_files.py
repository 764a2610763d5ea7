"""The room file store over real HTTP against a running worker (real SQLite, real disk)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from core.compliance.events import from_payload
from core.config import FileSettings, Settings
from core.store.base import CategoryRecord, RoomRecord
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, add_room, add_user, signed_in
from tests.integration.files_fixtures import auth, outbox_kinds, stored_path, upload


async def test_upload_then_download_streams_back_the_bytes(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    data = bytes(range(256)) * 39  # 9,984 bytes: just under the 10 KB cap, several chunks
    async with http.post(
        "/api/rooms/lobby/files", params={"name": "report ü.bin"}, data=data, headers=auth("alice")
    ) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body["size"] == len(data)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    stored = await files_server.store.get_file(body["id"])
    assert stored is not None and stored.name == "report ü.bin" and stored.room_id == "lobby"
    assert stored.uploader == f"sip:alice@{DOMAIN}"
    on_disk = stored_path(files_server, body["id"], "report ü.bin")
    assert on_disk.name == body["id"] + ".bin"  # the random id plus the original's extension
    assert on_disk.read_bytes() == data
    assert not list(on_disk.parent.glob("*.part"))

    async with http.get(body["url"], headers=auth("bob")) as resp:
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Disposition"] == (
            "attachment; filename*=UTF-8''report%20%C3%BC.bin"
        )


async def test_download_honours_range_requests(http: aiohttp.ClientSession) -> None:
    async with http.post(
        "/api/rooms/lobby/files", params={"name": "r.bin"}, data=b"0123456789", headers=auth("bob")
    ) as resp:
        url = (await resp.json())["url"]
    async with http.get(url, headers={**auth("bob"), "Range": "bytes=2-5"}) as resp:
        assert resp.status == 206
        assert await resp.read() == b"2345"
        assert resp.headers["Content-Range"] == "bytes 2-5/10"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_upload_is_recorded_with_the_stored_file_name(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    """FILEUPLOAD: who, room, when, file id, name, size, sha256; the stored name in text."""
    async with http.post(
        "/api/rooms/lobby/files", params={"name": "Notes.TXT"}, data=b"hello", headers=auth("alice")
    ) as resp:
        assert resp.status == 201
        body = await resp.json()
    rows = [r for r in await files_server.store.outbox_head(100) if r.kind == "FILEUPLOAD"]
    [event] = [from_payload(r.payload) for r in rows]
    assert (event.user, event.room_id, event.text) == (
        f"sip:alice@{DOMAIN}",
        "lobby",
        body["id"] + ".txt",
    )
    assert (event.file_id, event.file_name, event.file_size) == (body["id"], "Notes.TXT", 5)
    assert event.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert abs(event.ts_ms - body["ts_ms"]) < 60_000


async def test_download_records_filedownload(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        "/api/rooms/lobby/files", params={"name": "x.txt"}, data=b"x", headers=auth("alice")
    ) as resp:
        url = (await resp.json())["url"]
    async with http.get(url, headers=auth("bob")) as resp:
        assert resp.status == 200
    stored = url.rpartition("/")[2] + ".txt"
    assert await outbox_kinds(files_server) == [
        ("FILEUPLOAD", f"sip:alice@{DOMAIN}", stored),
        ("FILEDOWNLOAD", f"sip:bob@{DOMAIN}", stored),
    ]


async def test_too_large_is_413_and_leaves_nothing(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    resp = await upload(http, "lobby", b"x" * 10_001)
    assert resp.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream is counted
        for _ in range(4):
            yield b"y" * 4000

    url = "/api/rooms/lobby/files"
    async with http.post(url, params={"name": "s"}, data=chunks(), headers=auth("alice")) as r:
        assert r.status == 413
    files_dir = Path(files_server.settings.files_dir)
    assert not files_dir.exists() or list(files_dir.iterdir()) == []
    assert await outbox_kinds(files_server) == []


async def test_room_rules_decide_who_uploads_and_downloads(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    assert (await upload(http, "team", b"t", user="bob")).status == 403  # closed, not a member
    assert (await upload(http, "hidden", b"h", user="bob")).status == 404  # secret: unseen
    assert (await upload(http, "nowhere", b"n")).status == 404
    async with http.post(
        "/api/rooms/hidden/files", params={"name": "h"}, data=b"h", headers=auth("alice")
    ) as resp:
        hidden_url = (await resp.json())["url"]
    async with http.post(
        "/api/rooms/team/files", params={"name": "t"}, data=b"t", headers=auth("alice")
    ) as resp:
        team_url = (await resp.json())["url"]
    async with http.get(hidden_url, headers=auth("bob")) as resp:
        assert resp.status == 404
    async with http.get(team_url, headers=auth("bob")) as resp:
        assert resp.status == 403
    async with http.get(team_url, headers=auth("alice")) as resp:
        assert resp.status == 200 and await resp.read() == b"t"
    async with http.get(team_url) as resp:
        assert resp.status == 401
    async with http.get("/api/files/" + "A" * 24, headers=auth("alice")) as resp:
        assert resp.status == 404
    async with http.get("/api/files/..%2Fchat.db", headers=auth("alice")) as resp:
        assert resp.status == 404


async def test_auditorium_upload_needs_a_presenter(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    await files_server.store.put_room(
        RoomRecord(
            id="stage",
            name="Stage",
            category_id="general",
            privacy="open",
            type="auditorium",
            presenters=[f"sip:carol@{DOMAIN}"],
        )
    )
    assert (await upload(http, "stage", b"s", user="bob")).status == 403
    assert (await upload(http, "stage", b"s", user="carol")).status == 201


async def test_category_switch_gates_uploads(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    await files_server.store.put_category(
        CategoryRecord(id="nofiles", name="No files", file_upload=False)
    )
    await add_room(files_server.store, "Quiet", category="nofiles")
    resp = await upload(http, "quiet", b"q")
    assert resp.status == 403


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a\\b", "a\nb", "..", "n" * 256])
async def test_bad_file_names_are_400(http: aiohttp.ClientSession, name: str) -> None:
    assert (await upload(http, "lobby", b"z", name=name)).status == 400


async def test_zero_cap_turns_uploads_off(
    settings: Settings, loop_errors: list[dict[str, object]]
) -> None:
    settings = msgspec.structs.replace(settings, files=FileSettings(max_upload_kb=0))
    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        await add_room(worker.store, "Lobby")
        async with aiohttp.ClientSession(f"http://127.0.0.1:{worker.http_port}") as http:
            assert (await upload(http, "lobby", b"")).status == 403


async def test_room_switch_gates_uploads_and_shows_as_filepost(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    """The room's filepost (urn:parlano:ma:prop:filepost) beside the category's switch:
    set through the management API (the one rule path), refused with 403, and what
    chansrch shows follows both."""
    room = await files_server.store.get_room("lobby")
    assert room is not None and room.file_upload == "inherit"
    await files_server.store.put_room(
        msgspec.structs.replace(room, managers=[f"sip:alice@{DOMAIN}"])
    )
    async with http.patch(
        "/api/rooms/lobby", json={"file_upload": "off"}, headers=auth("alice")
    ) as resp:
        assert resp.status == 200, await resp.text()
    assert (await upload(http, "lobby", b"q")).status == 403
    assert [f.id for f in await files_server.store.room_files("lobby")] == []
    await files_server.refresh()  # what the revision poll does within a second
    alice = await signed_in(files_server, "alice")
    try:
        reply = await alice.command("cmd:chansrch", '<qib qtype="BYNAME" criteria="lobby"/>')
        assert reply.data is not None
        [chan] = reply.data.findall("chanib")
        props = {p.get("id"): p.text for p in chan.findall("prop")}
        assert props["urn:parlano:ma:prop:filepost"] == "false"
    finally:
        await alice.close()
    async with http.patch(
        "/api/rooms/lobby", json={"file_upload": "inherit"}, headers=auth("alice")
    ) as resp:
        assert resp.status == 200
    assert (await upload(http, "lobby", b"q")).status == 201
