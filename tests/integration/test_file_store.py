"""The file store beyond one transfer, over real HTTP and SIP against a running worker on
each store backend: the file post, files leaving with their room and their post, the
room quota, token sign-in, and the sweep of what crashes leave."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec

from core.auth.filetoken import FileTokens
from core.files.directory import DirectoryStorage
from core.files.names import PART_SUFFIX, new_file_id, stored_name
from core.files.post import parse_file_post
from core.rooms.management import ADMIN, Management
from shards import admin
from shards.web.token_key import load_token_secret
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, add_room, signed_in
from tests.integration.files_fixtures import auth, stored_path, upload


async def post_file(
    http: aiohttp.ClientSession, room: str, data: bytes, name: str, user: str = "alice"
) -> dict[str, object]:
    url = f"/api/rooms/{room}/files"
    async with http.post(url, params={"name": name}, data=data, headers=auth(user)) as resp:
        assert resp.status == 201, await resp.text()
        body: dict[str, object] = await resp.json()
        return body


async def test_upload_is_announced_as_a_file_post(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    """The post goes through the room's owner: the next msgid, fanned out to the joined
    sessions, kept in history, linked to its file."""
    bob = await signed_in(files_server, "bob")
    try:
        lobby = f"ma-chan://{DOMAIN}/lobby"
        await bob.join(lobby)
        first = await bob.post(lobby, "before the file")
        body = await post_file(http, "lobby", b"%PDF-1.4 tiny", "Plan (v2).pdf")
        assert body["msgid"] == first + 1
        seen = await bob.next_post()
        assert (seen.msgid, seen.author) == (first + 1, f"sip:alice@{DOMAIN}")
        announced = parse_file_post(seen.text)
        assert announced is not None
        assert (announced.file_id, announced.name, announced.size) == (
            body["id"],
            "Plan (v2).pdf",
            13,
        )
        assert (
            announced.url
            == body["url"]
            == (f"http://127.0.0.1:{files_server.http_port}/api/files/{body['id']}")
        )
        assert [m.text for m in await bob.history(lobby)] == ["before the file", seen.text]
        [record] = await files_server.store.room_files("lobby")
        assert record.post_seq == first + 1
        rows = await files_server.store.outbox_head(100)
        assert [r.kind for r in rows if r.kind in ("CHAT", "FILEUPLOAD")] == [
            "CHAT",
            "FILEUPLOAD",
            "CHAT",
        ]
    finally:
        await bob.close()


async def test_files_go_with_their_room(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    await add_room(files_server.store, "Other")
    gone = await post_file(http, "lobby", b"bye", "a.txt")
    kept = await post_file(http, "other", b"stay", "b.txt")
    storage = DirectoryStorage(files_server.settings.files_dir)
    await Management(files_server.store, files=storage).delete_room(ADMIN, "lobby")
    assert await files_server.store.get_file(str(gone["id"])) is None
    assert not stored_path(files_server, str(gone["id"]), "a.txt").exists()
    assert stored_path(files_server, str(kept["id"]), "b.txt").read_bytes() == b"stay"
    async with http.get(str(gone["url"]), headers=auth("bob")) as resp:
        assert resp.status == 404


async def test_removing_a_file_post_removes_its_file(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    first = await post_file(http, "lobby", b"one", "1.txt")
    second = await post_file(http, "lobby", b"two", "2.txt")
    storage = DirectoryStorage(files_server.settings.files_dir)
    mgmt = Management(files_server.store, files=storage)
    await mgmt.remove_message(ADMIN, "lobby", int(str(first["msgid"])))
    assert [f.id for f in await files_server.store.room_files("lobby")] == [second["id"]]
    assert not stored_path(files_server, str(first["id"]), "1.txt").exists()
    assert stored_path(files_server, str(second["id"]), "2.txt").exists()


async def test_room_quota_answers_507_and_keeps_nothing(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    """25 KB per room: two 10 KB files fit, a third of 10 KB (announced or streamed) is 507;
    another room still has its own quota."""
    for i in range(2):
        await post_file(http, "lobby", b"q" * 10_000, f"{i}.bin")
    resp = await upload(http, "lobby", b"q" * 10_000)
    assert resp.status == 507

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(3):
            yield b"s" * 3000

    url = "/api/rooms/lobby/files"
    async with http.post(url, params={"name": "s"}, data=chunks(), headers=auth("alice")) as r:
        assert r.status == 507
        assert "25 KB" in (await r.json())["error"]
    assert len(await files_server.store.room_files("lobby")) == 2
    assert len(list(Path(files_server.settings.files_dir).iterdir())) == 2
    assert (await upload(http, "lobby", b"q" * 5000)).status == 201  # what is left fits
    await add_room(files_server.store, "Other")
    assert (await upload(http, "other", b"q" * 10_000)).status == 201


async def test_a_signed_in_sip_client_uploads_with_its_file_token(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    alice = await signed_in(files_server, "alice")
    try:
        info = alice.server_info
    finally:
        await alice.close()
    assert info["fileServiceUrl"] == f"http://127.0.0.1:{files_server.settings.http.port}/api"
    bearer = {"Authorization": f"Bearer {info['fileToken']}"}
    async with http.post(
        "/api/rooms/lobby/files", params={"name": "t.txt"}, data=b"tok", headers=bearer
    ) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body["uploader"] == f"sip:alice@{DOMAIN}"
    async with http.get(body["url"], headers=bearer) as resp:
        assert resp.status == 200 and await resp.read() == b"tok"
    async with http.get(body["url"], headers=auth("bob")) as resp:  # Basic still works
        assert resp.status == 200

    key = Path(files_server.settings.file_token_key_path)
    assert key.stat().st_mode & 0o777 == 0o600
    other = FileTokens(os.urandom(32), 600).issue(f"sip:alice@{DOMAIN}", time.time())
    expired = FileTokens(key.read_bytes(), 1).issue(f"sip:alice@{DOMAIN}", time.time() - 10)
    for token in (other, expired, "junk"):
        async with http.get(body["url"], headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401
    user = await files_server.store.get_user(f"sip:alice@{DOMAIN}")
    assert user is not None
    await files_server.store.put_user(msgspec.structs.replace(user, enabled=False))
    async with http.get(body["url"], headers=bearer) as resp:
        assert resp.status == 401  # a disabled user's token stops at once


def test_token_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "d" / "file-token.key"
    secret = load_token_secret(str(path))
    assert len(secret) == 32 and load_token_secret(str(path)) == secret
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["file-token.key"]
    path.chmod(0o644)
    try:
        load_token_secret(str(path))
    except PermissionError as exc:
        assert "chmod 600" in str(exc)
    else:
        raise AssertionError("a world-readable secret was used")


async def test_sweep_removes_what_crashes_left_and_nothing_else(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    body = await post_file(http, "lobby", b"kept", "k.txt")
    folder = Path(files_server.settings.files_dir)
    recorded = folder / stored_name(str(body["id"]), "k.txt")
    cut_off = folder / (stored_name(new_file_id(), "x.bin") + PART_SUFFIX)
    orphan = folder / stored_name(new_file_id(), "o.txt")  # renamed, never recorded
    fresh = folder / (stored_name(new_file_id(), "f.bin") + PART_SUFFIX)  # in progress
    foreign = folder / "README"  # not a name the store makes
    for path in (cut_off, orphan, fresh, foreign):
        path.write_bytes(b"x")
    old = time.time() - 2 * 3600
    for path in (recorded, cut_off, orphan, foreign):
        os.utime(path, (old, old))
    assert files_server.files is not None
    removed, after = [], ""
    while True:  # pages of one name: the round goes on where the last page stopped
        page = await files_server.files.sweep(after, limit=1)
        removed += page.names
        if not (after := page.resume):
            break
    assert sorted(removed) == sorted([cut_off.name, orphan.name])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [recorded.name, fresh.name, foreign.name]
    )


async def _admin(worker: RunningWorker, *argv: str) -> None:
    """`pchat admin ARGV` in this process, on the worker's settings (data dir, store)."""
    parser = argparse.ArgumentParser()
    admin.add_parser(parser.add_subparsers(dest="cmd"), argparse.ArgumentParser(add_help=False))
    await admin.run(worker.settings, parser.parse_args(["admin", *argv]), lambda line: None)


async def test_pchat_admin_switches_removes_and_deletes_with_the_bytes(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    await _admin(files_server, "room", "set", "Lobby", "--files", "off")
    assert (await upload(http, "lobby", b"no")).status == 403
    await _admin(files_server, "room", "set", "Lobby", "--files", "inherit")
    first = await post_file(http, "lobby", b"one", "1.txt")
    second = await post_file(http, "lobby", b"two", "2.txt")
    await _admin(files_server, "message", "remove", "Lobby", str(first["msgid"]))
    assert not stored_path(files_server, str(first["id"]), "1.txt").exists()
    assert stored_path(files_server, str(second["id"]), "2.txt").exists()
    await _admin(files_server, "room", "delete", "Lobby")
    assert not stored_path(files_server, str(second["id"]), "2.txt").exists()
    assert await files_server.store.get_file(str(second["id"])) is None


async def test_a_room_deleted_mid_upload_takes_the_file_with_it(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    await add_room(files_server.store, "Brief")
    streaming = asyncio.Event()
    go_on = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 4000
        streaming.set()
        await go_on.wait()
        yield b"y" * 4000

    async def send() -> int:
        url = "/api/rooms/brief/files"
        async with http.post(
            url, params={"name": "b.txt"}, data=body(), headers=auth("alice")
        ) as r:
            return r.status

    sending = asyncio.ensure_future(send())
    await streaming.wait()
    storage = DirectoryStorage(files_server.settings.files_dir)
    await Management(files_server.store, files=storage).delete_room(ADMIN, "brief")
    await files_server.refresh()  # the owner forgets the room, as the revision poll does
    go_on.set()
    assert await sending == 404
    assert await files_server.store.room_files("brief") == []
    # The folder is made by the first write: refused before it, there is none at all.
    folder = Path(files_server.settings.files_dir)
    assert not folder.exists() or list(folder.iterdir()) == []
