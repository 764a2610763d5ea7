"""A file deleted before the compliance service could copy it is archived with its bytes:
against `pchat serve --compliance`, the service is stopped (SIGSTOP), files are uploaded,
then a file post is removed by an administrator over the API and a room deleted with
`pchat admin` (their bytes leave the file store), then
the service goes on (SIGCONT). The archive holds every upload's bytes, valid against the
XSD: the upload's own path kept them in the compliance file store before its 201."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import aiohttp

from core.files.names import stored_name
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord, RoomRecord, UserRecord
from core.store.registry import make_store
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster
from tests.e2e.test_compliance_files import archive_env, basic, check_archive, drained
from tests.e2e.test_compliance_kill import pid_of, store_urls

BODY_S = 60.0  # bounds each part of the body; the whole test takes about 10 s


async def test_files_deleted_while_compliance_is_down_are_archived_with_their_bytes(
    tmp_path: Path,
) -> None:
    async with store_urls("sqlite", tmp_path) as (chat_url, compliance_url):
        env = archive_env(chat_url, compliance_url)
        rooms = await seed(chat_url)
        cluster = Cluster(tmp_path, 1, "--compliance", env=env)
        try:
            await cluster.start()
            sent = await asyncio.wait_for(delete_while_stopped(cluster, rooms), BODY_S)
            await asyncio.wait_for(drained(cluster, chat_url, compliance_url), BODY_S)
        finally:
            await cluster.stop()
    check_archive(tmp_path / "compliance", sent, Counter())
    assert list((tmp_path / "compliance-files").iterdir()) == []  # archived: copies gone


async def compliance_pid(cluster: Cluster) -> int:
    while not (pids := pid_of(cluster.data_dir, "compliance.pid")):
        await asyncio.sleep(0.1)
    return pids[max(pids)]


async def seed(chat_url: str) -> dict[str, str]:
    """Alice and two open rooms she manages, written before the server starts (a
    `pchat admin` process per step would cost a second each)."""
    store = make_store(chat_url)
    await store.open()
    try:
        alice = f"sip:alice@{DOMAIN}"
        await store.put_user(
            UserRecord(uri=alice, ha1=user_ha1s(alice, DOMAIN, PASSWORD), enabled=True)
        )
        root = f"sip:root@{DOMAIN}"  # an administrator: only they remove posts
        await store.put_user(
            UserRecord(uri=root, ha1=user_ha1s(root, DOMAIN, PASSWORD), enabled=True, admin=True)
        )
        await store.put_category(CategoryRecord(id="general", name="General"))
        rooms = {"Keep": "keep", "Doomed": "doomed"}
        for name, room_id in rooms.items():
            await store.put_room(
                RoomRecord(
                    id=room_id,
                    name=name,
                    category_id="general",
                    privacy="open",
                    managers=[f"sip:alice@{DOMAIN}"],
                )  # fmt: skip
            )
        return rooms
    finally:
        await store.close()


async def delete_while_stopped(
    cluster: Cluster, rooms: dict[str, str]
) -> dict[str, tuple[str, bytes]]:
    """{stored name: (file id, bytes)} of the uploads, all deleted before any relay: a
    file post removed by an administrator over the API, a room deleted with `pchat admin`."""
    pid = await compliance_pid(cluster)
    os.kill(pid, signal.SIGSTOP)  # down: nothing is relayed from here on
    sent: dict[str, tuple[str, bytes]] = {}
    posts: dict[str, int] = {}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{cluster.http}") as http:
            for room, name in (("Keep", "minutes.pdf"), ("Doomed", "plan.txt")):
                data = os.urandom(30_000)
                url = f"/api/rooms/{rooms[room]}/files"
                params = {"name": name}
                async with http.post(url, params=params, data=data, headers=basic("alice")) as r:
                    assert r.status == 201, await r.text()
                    body = await r.json()
                sent[stored_name(body["id"], name)] = (body["id"], data)
                posts[room] = int(body["msgid"])
            url = f"/api/rooms/{rooms['Keep']}/messages/{posts['Keep']}"
            async with http.delete(url, headers=basic("root")) as r:
                assert r.status == 200, await r.text()
        await cluster.admin("room", "delete", "Doomed")
        files = cluster.data_dir / "files"
        assert not any((files / name).exists() for name in sent)  # gone from the file store
    finally:
        os.kill(pid, signal.SIGCONT)
    return sent
