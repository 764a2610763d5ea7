"""The file service (shards/file_service.py) under a real `pchat serve --workers 2`: a SIP
client's upload through it (the file token of rpl:getservinfo) is announced in the room,
the same bytes come back (whole and by Range), the workers' routes answer 307 to it,
and after kill -9 the supervisor starts it again and transfers work again."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from pathlib import Path

import aiohttp
from yarl import URL

from client.client import PchatClient
from shards.web.files import TOKEN_PARAM
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster
from tests.redis_cluster import RedisClusterNodes

BASIC = {
    "Authorization": "Basic " + base64.b64encode(f"alice@{DOMAIN}:{PASSWORD}".encode()).decode()
}


async def start(tmp_path: Path, *room_options: str) -> tuple[Cluster, str]:
    cluster = Cluster(tmp_path, 2, file_service=True)
    await cluster.start()
    await cluster.wait_files_healthy()
    for user in ("alice", "bob"):
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    uri = await cluster.admin(
        "room", "add", "Drop", "--category", "General", "--privacy", "open", *room_options
    )
    return cluster, uri


async def transfer(
    http: aiohttp.ClientSession, cluster: Cluster, alice: PchatClient, room: str, data: bytes
) -> dict[str, object]:
    """Uploads through the fileServiceUrl alice was told, downloads it back by Basic."""
    base = alice.server_info["fileServiceUrl"]
    assert base == f"http://127.0.0.1:{cluster.files}/api"
    token = {"Authorization": f"Bearer {alice.server_info['fileToken']}"}
    async with http.post(
        f"{base}/rooms/{room}/files", params={"name": "f.bin"}, data=data, headers=token
    ) as resp:
        assert resp.status == 201, await resp.text()
        body: dict[str, object] = await resp.json()
    url = str(body["url"])
    assert url.startswith(f"http://127.0.0.1:{cluster.files}/api/files/")
    async with http.get(url, headers=BASIC) as resp:
        assert resp.status == 200 and await resp.read() == data
    return body


async def test_transfers_go_through_the_service_and_survive_its_kill_9(tmp_path: Path) -> None:
    cluster, uri = await start(tmp_path)
    room = uri.rpartition("/")[2]
    alice = await cluster.client("alice")
    bob = await cluster.client("bob")
    data = os.urandom(300_000)
    try:
        await bob.join(uri)
        async with aiohttp.ClientSession() as http:
            body = await transfer(http, cluster, alice, room, data)
            post = await bob.next_post(10)
            assert str(body["url"]) in post.text and post.msgid == body["msgid"]
            ranged = {**BASIC, "Range": "bytes=1000-1999"}
            async with http.get(str(body["url"]), headers=ranged) as resp:
                assert resp.status == 206 and await resp.read() == data[1000:2000]

            # The workers' own routes send transfers to the service, keeping the method.
            worker = f"http://127.0.0.1:{cluster.http}"
            path = f"/api/files/{body['id']}"
            async with http.get(worker + path, headers=BASIC, allow_redirects=False) as resp:
                assert resp.status == 307
                moved = URL(resp.headers["Location"])
                assert str(moved.with_query(None)) == f"http://127.0.0.1:{cluster.files}{path}"
                assert set(moved.query) == {TOKEN_PARAM}
            upload = f"/api/rooms/{room}/files?name=g.bin"
            async with http.post(
                worker + upload, data=b"x", headers=BASIC, allow_redirects=False
            ) as resp:
                assert resp.status == 307
                moved = URL(resp.headers["Location"])
                assert moved.path == f"/api/rooms/{room}/files" and moved.port == cluster.files
                assert moved.query["name"] == "g.bin" and TOKEN_PARAM in moved.query
            async with http.post(worker + upload, data=b"xyz", headers=BASIC) as resp:
                assert resp.status == 201 and (await resp.json())["size"] == 3  # followed
            await bob.next_post(10)
            # Followed: the client drops Authorization for the other origin; the token in
            # the query signs it in there.
            async with http.get(worker + path, headers=BASIC) as resp:
                assert resp.status == 200 and await resp.read() == data
                assert resp.url.port == cluster.files
            async with http.get(worker + path) as resp:
                assert resp.status == 401  # signed out: no redirect, nothing said

            before = cluster.file_service_pid()
            assert before is not None
            os.kill(before, signal.SIGKILL)
            for _ in range(200):  # the supervisor starts it again
                if cluster.file_service_pid() not in (None, before):
                    break
                await asyncio.sleep(0.1)
            assert cluster.file_service_pid() not in (None, before)
            await cluster.wait_files_healthy()
            again = os.urandom(50_000)
            body = await transfer(http, cluster, alice, room, again)
            post = await bob.next_post(10)
            assert str(body["url"]) in post.text
    finally:
        await alice.close()
        await bob.close()
        await cluster.stop()


async def test_the_pages_transfers_stay_on_the_worker(tmp_path: Path) -> None:
    """A browser signed in by the session cookie is served by the worker itself: the
    service is another origin, where its fetch would lose the cookie and the CSRF header."""
    cluster, uri = await start(tmp_path, "--managers", f"alice@{DOMAIN}")  # sees the page
    room = uri.rpartition("/")[2]
    worker = f"http://127.0.0.1:{cluster.http}"
    jar = aiohttp.CookieJar(unsafe=True)
    try:
        async with aiohttp.ClientSession(worker, cookie_jar=jar) as http:
            form = {"user": f"alice@{DOMAIN}", "password": PASSWORD, "next": "/rooms"}
            origin = {"Origin": worker}
            async with http.post("/signin", data=form, headers=origin, allow_redirects=False) as r:
                assert r.status == 303
            async with http.get("/api/csrf") as r:
                csrf = (await r.json())["token"]
            headers = {**origin, "X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"}
            async with http.post(
                f"/api/rooms/{room}/files", params={"name": "p.txt"}, data=b"page",
                headers=headers, allow_redirects=False,
            ) as r:  # fmt: skip
                assert r.status == 201, await r.text()
                body = await r.json()
            assert body["url"] == f"http://127.0.0.1:{cluster.files}/api/files/{body['id']}"
            async with http.get(f"/api/rooms/{room}/files") as r:
                assert [f["url"] for f in await r.json()] == [body["url"]]
            link = f"/api/files/{body['id']}"  # as the room page's list links it
            async with http.get(f"/rooms/{room}") as r:
                assert r.status == 200 and f'href="{link}"' in await r.text()
            navigate = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}
            async with http.get(link, headers=navigate, allow_redirects=False) as r:
                assert r.status == 200 and await r.read() == b"page"
            async with http.get(link, allow_redirects=False) as r:  # the cookie alone
                assert r.status == 200 and await r.read() == b"page"
            # The cookie is good on the service too (cookies do not depend on the port).
            async with http.get(str(body["url"])) as r:
                assert r.status == 200 and await r.read() == b"page"
    finally:
        await cluster.stop()


async def test_the_service_posts_over_a_redis_cluster_bus(
    tmp_path: Path, redis_cluster: RedisClusterNodes
) -> None:
    """The bus on a Redis Cluster (sharded channels): the service's file posts reach the
    rooms' owners, on either worker."""
    cluster = Cluster(tmp_path, 2, redis_cluster_url=redis_cluster.url, file_service=True)
    await cluster.start()
    try:
        await cluster.wait_files_healthy()
        for user in ("alice", "bob"):
            await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
        await cluster.admin("category", "add", "General")
        alice = await cluster.client("alice")
        bob = await cluster.client("bob")
        try:
            async with aiohttp.ClientSession() as http:
                for n in range(4):  # random room ids: owned by both workers, most likely
                    uri = await cluster.admin(
                        "room", "add", f"Drop {n}", "--category", "General", "--privacy", "open"
                    )
                    await bob.join(uri)
                    room = uri.rpartition("/")[2]
                    body = await transfer(http, cluster, alice, room, os.urandom(10_000 + n))
                    assert "post_error" not in body and int(str(body["msgid"])) > 0
                    post = await bob.next_post(10)
                    assert str(body["url"]) in post.text
        finally:
            await alice.close()
            await bob.close()
    finally:
        await cluster.stop()
