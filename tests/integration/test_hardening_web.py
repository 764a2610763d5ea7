"""Hardening of what a user may learn and change (issue 10, findings 3 and 4): a hidden
room answers like a missing one over SIP and HTTP, and the ethical wall beats every
room principal over HTTP as over SIP. Real worker, real sockets, real store and redis."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import pytest

from client.client import PchatClient
from core.rooms.management import ADMIN, Actor, CategoryChange, Management, RoomChange
from core.xccos.envelope import Reply
from core.xccos.xml import Element
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, PASSWORD, add_user, make_settings, signed_in, test_certificate
from tests.integration.test_room_model import http

ALICE, BOB = (f"sip:{u}@{DOMAIN}" for u in ("alice", "bob"))


def uri(room_id: str) -> str:
    return f"ma-chan://{DOMAIN}/{room_id}"


def _shape(el: Element | None, room_id: str) -> object:
    if el is None:
        return None
    attrs = {k: v.replace(room_id, "<room>") for k, v in el.attrs.items()}
    return (el.tag, attrs, el.text, [_shape(c, room_id) for c in el.children])


def shape(reply: Reply, room_id: str) -> object:
    """Everything a client sees of a reply but the room's own id."""
    return (reply.name, reply.code, reply.text, _shape(reply.data, room_id))


async def answers(client: PchatClient, room_id: str) -> dict[str, object]:
    room = uri(room_id)
    return {
        "post": shape(await client.post_envelope(room, "hello"), room_id),
        "join": shape(
            await client.command("cmd:join", f'<chanib uri="{room}"/>', check=False), room_id
        ),
        "bccontext": shape(
            await client.command(
                "cmd:bccontext", f'<chanib uri="{room}"/><bcq><last cnt="5"/></bcq>', check=False
            ),
            room_id,
        ),
    }


async def test_a_hidden_room_answers_like_a_missing_one(server: RunningWorker) -> None:
    mgmt = Management(server.store)
    await mgmt.create_category(ADMIN, "General", CategoryChange(creators=[ALICE]))
    secret = await mgmt.create_room(Actor(ALICE), "Hidden", "General", RoomChange(privacy="secret"))
    gone = await mgmt.create_room(Actor(ALICE), "Gone", "General", RoomChange(privacy="open"))
    await mgmt.set_disabled(Actor(ALICE), gone.id, True)
    await server.refresh()
    bob = await signed_in(server, "bob")
    try:
        missing = await answers(bob, "no-such-room")
        assert missing["post"][1] == 404 and missing["join"][1] == 404  # type: ignore[index]
        assert await answers(bob, secret.id) == missing  # a secret room bob is not in
        assert await answers(bob, gone.id) == missing  # a disabled room
    finally:
        await bob.close()

    call = lambda *a: asyncio.to_thread(http, server, *a)  # noqa: E731
    for method, body in (("GET", None), ("PATCH", {"topic": "mine"})):
        absent = await call(method, "/api/rooms/no-such-room", "bob", body)
        hidden = await call(method, f"/api/rooms/{secret.id}", "bob", body)
        assert absent[0] == hidden[0] == 404
        assert isinstance(hidden[1], dict) and isinstance(absent[1], dict)
        assert hidden[1]["error"].replace(secret.id, "X") == absent[1]["error"].replace(
            "no-such-room", "X"
        )


async def test_the_wall_beats_a_domain_manager_over_http(server: RunningWorker) -> None:
    mgmt = Management(server.store)
    await mgmt.create_category(ADMIN, "Walled", CategoryChange(denied=[BOB]))
    room = await mgmt.create_room(ADMIN, "Deals", "Walled", RoomChange(privacy="open"))
    await server.store.put_room(msgspec.structs.replace(room, managers=[f"domain:{DOMAIN}"]))
    await server.store.bump_revision()
    await server.refresh()
    call = lambda *a: asyncio.to_thread(http, server, *a)  # noqa: E731
    status, listing = await call("GET", "/api/rooms", "bob")
    assert status == 200 and listing == []
    assert (await call("GET", f"/api/rooms/{room.id}", "bob"))[0] == 404
    assert (await call("PATCH", f"/api/rooms/{room.id}", "bob", {"topic": "leak"}))[0] == 404
    assert (await call("POST", f"/api/rooms/{room.id}/disable", "bob"))[0] == 404
    stored = await server.store.get_room(room.id)
    assert stored is not None and stored.topic != "leak" and not stored.disabled
    # alice, covered by the same principal and allowed by the category, still manages it
    assert (await call("PATCH", f"/api/rooms/{room.id}", "alice", {"topic": "ok"}))[0] == 200
    bob = await signed_in(server, "bob")  # and over SIP the room is missing for bob too
    try:
        reply = await bob.command("cmd:join", f'<chanib uri="{uri(room.id)}"/>', check=False)
        assert reply.code == 404
    finally:
        await bob.close()


# -- finding 12: the HTTP side ------------------------------------------------------------


def raw_http(
    server: RunningWorker, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}{path}", method=method, data=body or None
    )
    token = base64.b64encode(f"alice@{DOMAIN}:{PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def test_http_changes_need_json_an_own_origin_and_a_token(server: RunningWorker) -> None:
    mgmt = Management(server.store)
    await mgmt.create_category(ADMIN, "General", CategoryChange(creators=[ALICE]))
    call = lambda *a: asyncio.to_thread(raw_http, server, *a)  # noqa: E731
    new = json.dumps({"name": "Forged", "category": "General"}).encode()
    # a form a foreign page may send without a preflight
    status, _ = await call("POST", "/api/rooms", {"Content-Type": "text/plain"}, new)
    assert status == 415
    json_type = {"Content-Type": "application/json"}
    evil = {**json_type, "Origin": "http://evil.example"}
    assert (await call("POST", "/api/rooms", evil, new))[0] == 403
    own = {**json_type, "Origin": f"http://127.0.0.1:{server.http_port}"}
    assert (await call("POST", "/api/rooms", own, new))[0] == 403  # a browser, but no token
    assert [r.name for r in await server.store.list_rooms()] == []
    status, got = await call("GET", "/api/csrf", {})
    assert status == 200 and isinstance(got, dict)
    with_token = {**own, "X-CSRF-Token": str(got["token"])}
    assert (await call("POST", "/api/rooms", with_token, new))[0] == 201
    script = json.dumps({"name": "Scripted", "category": "General"}).encode()
    assert (await call("POST", "/api/rooms", json_type, script))[0] == 201  # no Origin: curl
    assert sorted(r.name for r in await server.store.list_rooms()) == ["Forged", "Scripted"]


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    return test_certificate(tmp_path)


async def closed_within(port: int, send: bytes, seconds: float) -> bool:
    """Does the server close a connection that sends ``send`` and then idles?"""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(send)
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False
    finally:
        writer.close()


async def test_https_and_handshake_and_keepalive_deadlines(tmp_path: Path, redis_url: str) -> None:
    cert, key = make_cert(tmp_path)
    base = make_settings(tmp_path, redis_url)
    sip = msgspec.structs.replace(
        base.sip, tls_port=0, tls_cert=str(cert), tls_key=str(key), tls_handshake_timeout_s=0.5
    )
    web = msgspec.structs.replace(
        base.http, tls_cert=str(cert), tls_key=str(key), tls_handshake_timeout_s=0.5
    )
    async with run_worker(msgspec.structs.replace(base, sip=sip, http=web)) as worker:
        trust = ssl.create_default_context(cafile=str(cert))
        trust.check_hostname = False  # the certificate names localhost; we dial 127.0.0.1

        def healthz() -> int:
            url = f"https://127.0.0.1:{worker.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=5, context=trust) as response:
                return int(response.status)

        assert await asyncio.to_thread(healthz) == 200
        # a client that never starts its handshake is dropped, on SIP and HTTPS alike
        assert await closed_within(worker.sip_tls_port, b"", 3.0)
        assert await closed_within(worker.http_port, b"", 3.0)

    plain = msgspec.structs.replace(base.http, keepalive_timeout_s=0.5)
    async with run_worker(msgspec.structs.replace(base, http=plain)) as worker:
        ask = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        assert await closed_within(worker.http_port, ask, 3.0)  # aiohttp's default: 3,630 s


# -- finding 2: caps on unauthenticated connections --------------------------------------


async def dial(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def is_closed(reader: asyncio.StreamReader, within: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read(4096) == b""
    except TimeoutError:
        return False


def refused(cap: str) -> float:
    from shards import metrics

    return float(metrics.CONNECTIONS_REFUSED.labels(cap)._value.get())


async def test_unauthenticated_connections_are_capped(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, redis_url, unauth_connections=3, unauth_per_address=2)
    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        port = worker.sip_port
        before_address, before_total = refused("address"), refused("total")
        first = await dial(port, "127.0.0.1")
        second = await dial(port, "127.0.0.1")
        third = await dial(port, "127.0.0.1")  # over the per-address cap: closed at once
        assert await is_closed(third[0])
        assert refused("address") == before_address + 1
        other = await dial(port, "127.0.0.2")  # the total (3) is now full
        await asyncio.sleep(0.1)
        assert worker.gateway.unauth.held == 3
        newest = await dial(worker.http_port, "127.0.0.3")  # HTTP counts too
        assert await is_closed(first[0])  # the oldest made room for it
        assert refused("total") == before_total + 1
        assert not await is_closed(second[0], 0.2) and not await is_closed(other[0], 0.2)
        assert not await is_closed(newest[0], 0.2)
        assert "unauthenticated connections (address cap)" in caplog.text
        assert "unauthenticated connections (total cap)" in caplog.text

        def healthz() -> int:  # a health check still gets in, taking the oldest place
            url = f"http://127.0.0.1:{worker.http_port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)

        assert await asyncio.to_thread(healthz) == 200
        alice = await signed_in(worker, "alice")  # and so does a sign-in
        [conn] = [c for c in worker.gateway.connections if c.user is not None]
        assert conn._place is None  # a signed-in connection holds no place any more
        await alice.close()
        for _, writer in (first, second, third, other, newest):
            writer.close()
