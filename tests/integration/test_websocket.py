"""The browser WebSocket over real sockets: one session kind more on the XCCOS path."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from core.config import Settings, WebSocketSettings
from core.rooms.management import Actor, CategoryChange, Management, RoomChange
from shards import metrics
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, PASSWORD, add_room, add_user, make_settings, signed_in
from tests.integration.chat_terminal import Terminal, chat_env
from tests.integration.ws_client import WsClient, basic

LOBBY = f"ma-chan://{DOMAIN}/lobby"
HIDDEN = f"ma-chan://{DOMAIN}/hidden"


async def _setup(worker: RunningWorker) -> None:
    for name in ("alice", "bob", "carol"):
        await add_user(worker.store, name)
    await add_user(worker.store, "dave", enabled=False)
    await add_room(worker.store, "Lobby")
    await add_room(worker.store, "Hidden", privacy="secret", members=[f"sip:alice@{DOMAIN}"])


@pytest.fixture
async def web(
    settings: Settings, loop_errors: list[dict[str, object]]
) -> AsyncIterator[RunningWorker]:
    async with run_worker(settings) as worker:
        await _setup(worker)
        yield worker


@pytest.fixture
async def tight(
    settings: Settings, loop_errors: list[dict[str, object]]
) -> AsyncIterator[RunningWorker]:
    """Small caps: 16 KiB of output, 4 KiB frames, 3 s of idleness."""
    settings = msgspec.structs.replace(
        settings,
        websocket=WebSocketSettings(
            max_output_bytes=16 * 1024, max_message_bytes=4096, idle_timeout_s=3.0
        ),
    )
    async with run_worker(settings) as worker:
        await _setup(worker)
        yield worker


async def test_browser_and_sip_client_see_each_others_posts_in_order_with_the_same_msgids(
    web: RunningWorker,
) -> None:
    alice = await WsClient.connect(web.http_port, "alice")
    bob = await signed_in(web, "bob")
    try:
        joined = await alice.request("join", room=LOBBY)
        assert joined["type"] == "joined" and joined["room"]["name"] == "Lobby"
        await bob.join(LOBBY)
        sent: list[tuple[str, int]] = []
        for i in range(5):
            text = f"from the browser {i}\nsecond line"
            posted = await alice.post(LOBBY, text, key=f"k{i}")
            assert posted["type"] == "posted"
            sent.append((text, posted["msgid"]))
            msgid = await bob.post(LOBBY, f"from sip {i}")
            sent.append((f"from sip {i}", msgid))
        at_bob = [await bob.next_post() for _ in range(5)]
        assert [(p.text, p.msgid) for p in at_bob] == sent[0::2]
        at_alice = [(await alice.next("message"))["message"] for _ in range(5)]
        assert [(p["text"], p["msgid"]) for p in at_alice] == sent[1::2]
        assert all(p["author"] == f"sip:bob@{DOMAIN}" for p in at_alice)
        assert [m for _, m in sent] == sorted(m for _, m in sent)  # one total order
    finally:
        await alice.close()
        await bob.close()


async def test_history_pages_backwards_by_msgid_without_gaps_or_duplicates(
    web: RunningWorker,
) -> None:
    bob = await signed_in(web, "bob")
    alice = await WsClient.connect(web.http_port, "alice")
    try:
        await bob.join(LOBBY)
        ids = [await bob.post(LOBBY, f"post {i}") for i in range(120)]
        await alice.request("join", room=LOBBY)
        seen: list[int] = []
        before = 0
        while True:
            page = await alice.request("history", room=LOBBY, before=before, count=50)
            assert page["type"] == "history"
            got = [m["msgid"] for m in page["messages"]]
            if not got:
                break
            assert got == sorted(got)
            seen = got + seen
            before = got[0]
        assert seen == ids
        after = await alice.request("history", room=LOBBY, after=ids[100], count=50)
        assert [m["msgid"] for m in after["messages"]] == ids[101:]
        found = await alice.request("search", room=LOBBY, text="post 7")
        assert [m["text"] for m in found["messages"]] == ["post 7"]
    finally:
        await alice.close()
        await bob.close()


async def test_a_post_resent_with_the_same_key_is_stored_once(web: RunningWorker) -> None:
    alice = await WsClient.connect(web.http_port, "alice")
    try:
        await alice.request("join", room=LOBBY)
        first = await alice.post(LOBBY, "once", key="same-key")
        again = await alice.post(LOBBY, "once", key="same-key")
        assert first["msgid"] == again["msgid"]
        page = await alice.request("history", room=LOBBY)
        assert [m["text"] for m in page["messages"]] == ["once"]
    finally:
        await alice.close()


async def test_a_secret_room_never_shows_to_a_non_member(web: RunningWorker) -> None:
    carol = await WsClient.connect(web.http_port, "carol")
    alice = await WsClient.connect(web.http_port, "alice")
    try:
        for client, sees in ((carol, False), (alice, True)):
            found = await client.request("search_rooms", text="")
            assert (HIDDEN in [r["uri"] for r in found["rooms"]]) is sees
            found = await client.request("search_rooms", text="Hid")
            assert bool(found["rooms"]) is sees
            for kind in ("member", "follower"):
                listed = await client.request("rooms", kind=kind)
                assert (HIDDEN in [r["uri"] for r in listed["rooms"]]) is (
                    sees and kind == "member"
                )
        for kind in ("join", "follow"):
            refused = await carol.request(kind, room=HIDDEN)
            assert refused == {
                "type": "error",
                "id": refused["id"],
                "code": 404,
                "reason": "no such room",
            }
        history = await carol.request("history", room=HIDDEN)
        assert history["type"] == "error" and history["code"] == 404
    finally:
        await carol.close()
        await alice.close()


async def test_follow_gives_unread_counts_for_a_room_not_joined(web: RunningWorker) -> None:
    alice = await WsClient.connect(web.http_port, "alice")
    bob = await signed_in(web, "bob")
    try:
        assert (await alice.request("follow", room=LOBBY))["type"] == "done"
        followed = await alice.request("rooms", kind="follower")
        assert [r["uri"] for r in followed["rooms"]] == [LOBBY]
        await bob.join(LOBBY)
        msgid = await bob.post(LOBBY, "news")
        notice = await alice.next("new_content")
        assert notice == {"type": "new_content", "room": LOBBY, "last_msgid": msgid, "unread": 1}
        assert (await alice.request("unfollow", room=LOBBY))["type"] == "done"
        assert (await alice.request("rooms", kind="follower"))["rooms"] == []
    finally:
        await alice.close()
        await bob.close()


async def test_participants_and_presence(web: RunningWorker) -> None:
    alice = await WsClient.connect(web.http_port, "alice")
    bob = await signed_in(web, "bob")
    try:
        await bob.join(LOBBY)
        joined = await alice.request("join", room=LOBBY)
        assert sorted(joined["participants"]) == [f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"]
        assert joined["room"]["online"] == 2
        await bob.part(LOBBY)
        gone = await alice.next("presence")
        assert gone == {
            "type": "presence",
            "room": LOBBY,
            "user": f"sip:bob@{DOMAIN}",
            "online": False,
        }
    finally:
        await alice.close()
        await bob.close()


async def test_a_large_room_lists_only_the_count(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, participant_update_limit=1)
    async with run_worker(settings) as worker:
        await _setup(worker)
        bob = await signed_in(worker, "bob")
        alice = await WsClient.connect(worker.http_port, "alice")
        try:
            await bob.join(LOBBY)
            joined = await alice.request("join", room=LOBBY)
            assert joined["participants"] == [] and joined["room"]["online"] == 2
        finally:
            await alice.close()
            await bob.close()


async def test_invitations_arrive_live_and_by_request(web: RunningWorker) -> None:
    mgmt = Management(web.store)
    alice_uri, bob_uri, carol_uri = (f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol"))
    await mgmt.create_category(
        Actor("sip:admin@x", admin=True), "Teams", CategoryChange(creators=[alice_uri])
    )
    await mgmt.create_room(Actor(alice_uri), "Before", "Teams", RoomChange(members=[carol_uri]))
    bob = await WsClient.connect(web.http_port, "bob")
    carol = await WsClient.connect(web.http_port, "carol")
    try:
        [waiting] = (await carol.request("invitations"))["invitations"]
        assert (waiting["name"], waiting["inviter"]) == ("Before", alice_uri)
        assert (await carol.request("invitations"))["invitations"] == []  # shown once
        await mgmt.create_room(Actor(alice_uri), "Plans", "Teams", RoomChange(members=[bob_uri]))
        await web.refresh()
        notice = await bob.next("invitation")
        assert notice["invitation"]["name"] == "Plans"
    finally:
        await bob.close()
        await carol.close()


async def test_bad_json_gets_an_error_and_the_socket_stays(web: RunningWorker) -> None:
    alice = await WsClient.connect(web.http_port, "alice")
    try:
        await alice.ws.send_str("{not json")
        error = await alice.next("error")
        assert error["code"] == 400 and error["id"] == 0
        await alice.ws.send_str('{"type": "join", "id": 7}')  # no room
        error = await alice.next("error")
        assert error["code"] == 400 and error["id"] == 7
        await alice.ws.send_str('{"type": "launch", "id": 8}')
        assert (await alice.next("error"))["id"] == 8
        assert (await alice.request("ping"))["type"] == "pong"
    finally:
        await alice.close()


async def test_refusals_before_the_upgrade(web: RunningWorker) -> None:
    port = web.http_port
    async with aiohttp.ClientSession() as http:
        for headers, status in (
            ({**basic("alice"), "Origin": "http://evil.example"}, 403),
            ({}, 401),
            (basic("dave"), 401),  # persistent chat off: like a wrong password
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"http://127.0.0.1:{port}/ws", headers=headers)
            assert refused.value.status == status
    own = await WsClient.connect(port, "alice", Origin=f"http://127.0.0.1:{port}")
    await own.close()


async def test_a_password_change_or_disable_ends_the_socket_with_4001(web: RunningWorker) -> None:
    alice = await WsClient.connect(web.http_port, "alice")
    bob = await WsClient.connect(web.http_port, "bob")
    try:
        record = await web.store.get_user(f"sip:alice@{DOMAIN}")
        assert record is not None
        await web.store.put_user(msgspec.structs.replace(record, ha1={"MD5:x": "0" * 32}))
        record = await web.store.get_user(f"sip:bob@{DOMAIN}")
        assert record is not None
        await web.store.put_user(msgspec.structs.replace(record, enabled=False))
        await web.refresh()
        for client in (alice, bob):
            await asyncio.wait_for(client._reader, 5)
            assert client.ws.close_code == 4001
        assert not web.gateway.sessions_of(f"sip:alice@{DOMAIN}")
        assert not web.gateway.sessions_of(f"sip:bob@{DOMAIN}")
    finally:
        await alice.close()
        await bob.close()


async def test_an_oversize_message_closes_with_1009(tight: RunningWorker) -> None:
    alice = await WsClient.connect(tight.http_port, "alice")
    try:
        await alice.ws.send_str(
            '{"type":"post","id":1,"room":"x","key":"k","text":"' + "x" * 5000 + '"}'
        )
        await asyncio.wait_for(alice._reader, 5)
        assert alice.ws.close_code == 1009
    finally:
        await alice.close()


async def test_an_idle_socket_closes_with_4000(tight: RunningWorker) -> None:
    alice = await WsClient.connect(tight.http_port, "alice")
    try:
        await asyncio.wait_for(alice._reader, 5)
        assert alice.ws.close_code == 4000
        assert tight.gateway.sessions_of(f"sip:alice@{DOMAIN}") == []
    finally:
        await alice.close()


def _frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455 §5.2), key 0 so the payload reads plainly."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def test_a_browser_that_stops_reading_is_cut_off(tight: RunningWorker) -> None:
    """A raw socket that upgrades, joins, then never reads: the server's output to it
    grows past the 16 KiB cap and the server drops it (and its session)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", tight.http_port))
    auth = basic("alice")["Authorization"]
    await loop.sock_sendall(
        sock,
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: {auth}\r\n\r\n"
        ).encode(),
    )
    head = await loop.sock_recv(sock, 1024)
    assert head.startswith(b"HTTP/1.1 101")
    await loop.sock_sendall(sock, _frame(f'{{"type":"join","id":1,"room":"{LOBBY}"}}'))
    bob = await signed_in(tight, "bob")
    alice = f"sip:alice@{DOMAIN}"
    cut_before = metrics.SLOW_CONSUMERS._value.get()
    try:
        await bob.join(LOBBY)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if any("lobby" in s.joined() for s in tight.gateway.sessions_of(alice)):
                break
        else:
            raise AssertionError("the raw socket's session never joined")
        for i in range(200):
            await bob.post(LOBBY, f"{i} " + "y" * 1000)
            if not tight.gateway.sessions_of(alice):
                break
        assert tight.gateway.sessions_of(alice) == []
        assert metrics.SLOW_CONSUMERS._value.get() == cut_before + 1  # the cap, not idleness
    finally:
        sock.close()
        await bob.close()


async def test_the_page_is_served_with_its_assets_and_no_external_ones(web: RunningWorker) -> None:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{web.http_port}") as http:
        async with http.get("/chat", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/signin?next=%2Fchat"
        for path, kind, headers in (
            ("/chat", "text/html", basic("alice")),
            ("/static/chat.js", "text/javascript", {}),
            ("/static/chat.css", "text/css", {}),
        ):
            async with http.get(path, headers=headers) as resp:
                assert resp.status == 200 and resp.content_type == kind
                text = await resp.text()
                assert "http://" not in text and "https://" not in text  # works offline
                if kind == "text/html":
                    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
                    assert 'src="/static/chat.js"' in text


async def test_a_cookie_signed_in_upgrade_needs_the_sessions_token(web: RunningWorker) -> None:
    base = f"http://127.0.0.1:{web.http_port}"
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host
    async with aiohttp.ClientSession(base, cookie_jar=jar) as http:
        form = {"user": f"alice@{DOMAIN}", "password": PASSWORD, "next": "/chat"}
        async with http.post(
            "/signin", data=form, headers={"Origin": base}, allow_redirects=False
        ) as resp:
            assert resp.status == 303, await resp.text()
        async with http.get("/api/csrf") as resp:
            token = (await resp.json())["token"]
        for query in ("", "?csrf=wrong"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"/ws{query}", headers={"Origin": base})
            assert refused.value.status == 403
        ws = await http.ws_connect(f"/ws?csrf={token}", headers={"Origin": base})
        hello = (await ws.receive_json())[0]
        assert hello["type"] == "hello" and hello["user"] == f"sip:alice@{DOMAIN}"
        await ws.close()


async def test_a_browser_and_pchat_chat_see_each_others_posts(
    web: RunningWorker, tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    alice = await WsClient.connect(web.http_port, "alice")
    term = Terminal(
        web.sip_port, "--room", "Lobby", "--password-file", str(secret), user="bob", env=chat_env()
    )
    try:
        await alice.request("join", room=LOBBY)
        await term.expect(f"* connected as bob@{DOMAIN}")
        await alice.next("presence")  # bob is in the room
        term.type("hello from the terminal")
        live = (await alice.next("message"))["message"]
        assert (live["author"], live["text"]) == (f"sip:bob@{DOMAIN}", "hello from the terminal")
        posted = await alice.post(LOBBY, "hello from the browser", key="b1")
        await term.expect("alice@example.com: hello from the browser")
        page = await alice.request("history", room=LOBBY)
        assert [(m["msgid"], m["text"]) for m in page["messages"]] == [
            (live["msgid"], "hello from the terminal"),
            (posted["msgid"], "hello from the browser"),
        ]
    finally:
        term.close()
        await alice.close()
