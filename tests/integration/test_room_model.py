"""The room model in a running worker: invitations, following, new-content notices,
disabling, the category wall, large rooms, preferences, history off, the HTTP API."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import pytest

from client.client import PchatClient, XccosError
from core.rooms.management import ADMIN, Actor, CategoryChange, Management, RoomChange
from core.xccos import build
from core.xccos.envelope import Notice
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, PASSWORD, add_user, make_settings, signed_in

ALICE, BOB, CAROL = (f"sip:{u}@{DOMAIN}" for u in ("alice", "bob", "carol"))


async def wait_notice(client: PchatClient, name: str, timeout: float = 3.0) -> Notice:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        notice = await client.next_notice(max(0.01, deadline - loop.time()))
        if notice.name == name:
            return notice


async def changed(server: RunningWorker) -> None:
    """What a worker does when it hears of a change (the API's notice, or the revision)."""
    await server.refresh()


@pytest.fixture
async def general(server: RunningWorker) -> Management:
    mgmt = Management(server.store)
    await mgmt.create_category(ADMIN, "General", CategoryChange(creators=[ALICE]))
    return mgmt


def uri(room_id: str) -> str:
    return f"ma-chan://{DOMAIN}/{room_id}"


async def test_invitations_offline_come_with_getinv_once(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(Actor(ALICE), "Plans", "General", RoomChange(members=[BOB]))
    bob = await PchatClient.connect("127.0.0.1", server.sip_port, f"bob@{DOMAIN}", PASSWORD)
    signin = await bob.sign_in()  # cmd:getinv is its last step
    [inv] = signin["invitations"]  # type: ignore[misc]
    assert (inv["chanUri"], inv["inviter"], inv["name"]) == (uri(room.id), ALICE, "Plans")
    again = await bob.command("cmd:getinv", f'<inv inviteId="1" domain="{DOMAIN}"/>')
    assert again.data.findall("inv") == []  # type: ignore[union-attr]
    await bob.close()


async def test_invitations_reach_an_online_member_at_once(
    server: RunningWorker, general: Management
) -> None:
    bob = await signed_in(server, "bob")
    room = await general.create_room(Actor(ALICE), "Live", "General", RoomChange())
    await general.update_room(Actor(ALICE), room.id, RoomChange(add_members=[BOB]))
    await changed(server)
    notice = await wait_notice(bob, "ntc:inv")
    assert notice.data.find("inv").get("chanUri") == uri(room.id)  # type: ignore[union-attr]
    later = await bob.command("cmd:getinv", f'<inv inviteId="1" domain="{DOMAIN}"/>')
    assert later.data.findall("inv") == []  # type: ignore[union-attr]  # delivered already
    await bob.close()


async def test_an_invitation_delivered_live_leaves_no_parked_copy_to_show_again(
    server: RunningWorker, general: Management
) -> None:
    bob = await signed_in(server, "bob")
    room = await general.create_room(Actor(ALICE), "Live", "General", RoomChange())
    await general.update_room(Actor(ALICE), room.id, RoomChange(add_members=[BOB]))
    # A second session of bob's signs in before this worker hears of the change: its
    # sign-in read parks the new invitation as pending.
    read = await server.gateway.handler.load_signin_rooms("signing-in", BOB)
    assert [inv.room_id for inv in read.invitations] == [room.id]
    await server.deliver_invitations()  # the ntc:inv goes out and marks it delivered
    await wait_notice(bob, "ntc:inv")
    views = server.gateway.handler.signin_views
    assert views.take("signing-in", "invitations") is None  # its getinv asks the store
    await bob.close()


async def test_no_invitations_when_they_are_off(server: RunningWorker, general: Management) -> None:
    await general.create_room(
        Actor(ALICE), "Quiet", "General", RoomChange(members=[BOB], invitations="off")
    )
    bob = await signed_in(server, "bob")
    reply = await bob.command("cmd:getinv", f'<inv inviteId="1" domain="{DOMAIN}"/>')
    assert reply.data.findall("inv") == []  # type: ignore[union-attr]
    await bob.close()


async def test_following_is_shared_by_every_device(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(ADMIN, "Followed", "General", RoomChange(privacy="open"))
    phone, laptop = await signed_in(server, "bob"), await signed_in(server, "bob")
    await phone.follow(uri(room.id))
    listed = await laptop.command("cmd:getassociations", '<assoc type="follower"/>')
    assert [c.get("uri") for c in listed.data.findall("chanib")] == [uri(room.id)]  # type: ignore[union-attr]
    tablet = await PchatClient.connect("127.0.0.1", server.sip_port, f"bob@{DOMAIN}", PASSWORD)
    signin = await tablet.sign_in()  # bjoin of the followed rooms at sign-in
    assert signin["joined"] == [uri(room.id)]
    await phone.command("cmd:unfollow", build.chanib(uri(room.id)))
    listed = await laptop.command("cmd:getassociations", '<assoc type="follower"/>')
    assert listed.data.findall("chanib") == []  # type: ignore[union-attr]
    for c in (phone, laptop, tablet):
        await c.close()


async def test_new_content_notices_are_throttled(tmp_path: Path, redis_url: str) -> None:
    base = make_settings(tmp_path, redis_url)
    settings = msgspec.structs.replace(
        base, limits=msgspec.structs.replace(base.limits, newcontent_interval_s=1.0)
    )
    async with run_worker(settings) as server:
        for name in ("alice", "bob"):
            await add_user(server.store, name)
        mgmt = Management(server.store)
        await mgmt.create_category(ADMIN, "General", CategoryChange())
        room = await mgmt.create_room(ADMIN, "Busy", "General", RoomChange(privacy="open"))
        alice, bob = await signed_in(server, "alice"), await signed_in(server, "bob")
        await bob.follow(uri(room.id))  # follows, does not join
        await alice.join(uri(room.id))
        for i in range(5):
            await alice.post(uri(room.id), f"post {i}")
        first = await wait_notice(bob, "ntc:newcontent")
        chan = first.data.find("chanib")  # type: ignore[union-attr]
        assert (chan.get("uri"), chan.get("lastmsgid"), chan.get("unread")) == (
            uri(room.id),
            "1",
            "1",
        )
        assert not bob.notices.items  # the other four wait for the interval
        second = await wait_notice(bob, "ntc:newcontent", timeout=3)
        chan = second.data.find("chanib")  # type: ignore[union-attr]
        assert (chan.get("lastmsgid"), chan.get("unread")) == ("5", "4")
        await bob.join(uri(room.id))  # joined: posts come as posts, not notices
        await alice.post(uri(room.id), "now joined")
        assert (await bob.next_post()).text == "now joined"
        await asyncio.sleep(1.2)
        assert not [n for n in bob.notices.items if n.name == "ntc:newcontent"]  # type: ignore[attr-defined]
        await alice.close()
        await bob.close()


async def test_disabling_removes_everyone_and_keeps_history(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(ADMIN, "Doomed", "General", RoomChange(privacy="open"))
    alice, bob = await signed_in(server, "alice"), await signed_in(server, "bob")
    for c in (alice, bob):
        await c.join(uri(room.id))
    await alice.post(uri(room.id), "before")
    await general.set_disabled(ADMIN, room.id, True)
    await changed(server)
    for c in (alice, bob):
        notice = await wait_notice(c, "ntc:part")
        assert notice.data.find("chanib").get("uri") == uri(room.id)  # type: ignore[union-attr]
    assert await bob.search("Doomed") == []
    with pytest.raises(XccosError) as hidden:
        await bob.join(uri(room.id))
    assert hidden.value.code == 404
    refused = await alice.post_envelope(uri(room.id), "after")
    assert refused.code in (403, 404)
    await general.set_disabled(ADMIN, room.id, False)
    await changed(server)
    await bob.join(uri(room.id))
    assert [m.text for m in await bob.history(uri(room.id))] == ["before"]
    await alice.close()
    await bob.close()


async def test_the_category_wall_beats_room_lists(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(ADMIN, "Walled", "General", RoomChange(members=[BOB, CAROL]))
    bob = await signed_in(server, "bob")
    await bob.join(uri(room.id))
    await general.update_category(ADMIN, "General", CategoryChange(denied=[BOB]))
    await changed(server)
    await wait_notice(bob, "ntc:part")  # removed at once
    with pytest.raises(XccosError) as walled:
        await bob.join(uri(room.id))
    assert walled.value.code == 404
    stored = await server.store.get_room(room.id)
    assert stored is not None and stored.members == [CAROL]  # purged for good
    added = await general.update_room(ADMIN, room.id, RoomChange(add_members=[BOB]))
    assert added.members == [CAROL]  # the wall keeps him out of the list too
    await bob.close()


async def test_moving_a_room_purges_members_the_new_category_refuses(
    server: RunningWorker, general: Management
) -> None:
    await general.create_category(
        ADMIN, "Staff", CategoryChange(allowed=[ALICE, BOB], creators=[BOB])
    )
    room = await general.create_room(
        Actor(ALICE), "Mover", "General", RoomChange(members=[BOB, CAROL])
    )
    with pytest.raises(Exception) as refused:  # alice manages the room but creates nothing in Staff
        await general.update_room(Actor(ALICE), room.id, RoomChange(category="Staff"))
    assert "creators" in str(refused.value)
    moved = await general.update_room(ADMIN, room.id, RoomChange(category="Staff"))
    assert moved.members == [BOB]


async def test_large_rooms_send_counts_not_rosters(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, participant_update_limit=2)
    async with run_worker(settings) as server:
        names = ["u0", "u1", "u2", "u3"]
        for name in names:
            await add_user(server.store, name)
        mgmt = Management(server.store)
        await mgmt.create_category(ADMIN, "General", CategoryChange())
        room = await mgmt.create_room(ADMIN, "Crowd", "General", RoomChange(privacy="open"))
        clients = [await signed_in(server, n) for n in names]
        replies = [await c.join(uri(room.id)) for c in clients]
        assert len(replies[1].data.findall("uib")) == 2  # type: ignore[union-attr]  # small: roster
        big = replies[3].data  # type: ignore[union-attr]
        assert (
            big is not None and big.findall("uib") == [] and big.find("chanib").findall("aib") == []
        )  # type: ignore[union-attr]
        ucnt = [i.text for i in big.find("chanib").findall("info") if i.get("id").endswith("ucnt")]  # type: ignore[union-attr]
        assert ucnt == ["4"]
        await asyncio.sleep(0.2)
        joins = [n for n in clients[0].notices.items if n.name == "ntc:join"]  # type: ignore[attr-defined]
        assert len(joins) == 1  # u1 while small; u2 and u3 came above the limit
        for c in clients:
            await c.close()


async def test_preferences_use_optimistic_seqids(server: RunningWorker) -> None:
    alice = await signed_in(server, "alice")
    empty = await alice.command(
        "cmd:getpref", '<pref label="layout" seqid="0" createdefault="true"/>'
    )
    assert empty.data.find("pref").get("seqid") == "0"  # type: ignore[union-attr]
    content = base64.b64encode(b"wide").decode()
    saved = await alice.command(
        "cmd:setpref", f'<pref label="layout" seqid="0" content="{content}"/>'
    )
    assert saved.data.find("pref").get("seqid") == "1"  # type: ignore[union-attr]
    stale = await alice.command(
        "cmd:setpref", f'<pref label="layout" seqid="0" content="{content}"/>', check=False
    )
    assert stale.code == 409
    other = await signed_in(server, "alice")
    got = await other.command("cmd:getpref", '<pref label="layout" seqid="0"/>')
    assert base64.b64decode(got.data.find("pref").get("content")) == b"wide"  # type: ignore[union-attr]
    await alice.close()
    await other.close()


async def test_history_off_delivers_but_keeps_nothing(
    server: RunningWorker, general: Management
) -> None:
    await general.create_category(ADMIN, "Ephemeral", CategoryChange(history=False))
    room = await general.create_room(ADMIN, "Gone", "Ephemeral", RoomChange(privacy="open"))
    alice, bob = await signed_in(server, "alice"), await signed_in(server, "bob")
    for c in (alice, bob):
        await c.join(uri(room.id))
    await alice.post(uri(room.id), "fleeting")
    assert (await bob.next_post()).text == "fleeting"
    assert await bob.history(uri(room.id)) == []
    assert await server.store.max_seq(room.id) == 0
    await alice.close()
    await bob.close()


def http(
    server: RunningWorker, method: str, path: str, user: str | None, body: object = None
) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", method=method)
    if user is not None:
        token = base64.b64encode(f"{user}@{DOMAIN}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw.startswith(b"{") else raw.decode()


async def test_management_api_roles(server: RunningWorker, general: Management) -> None:
    call = lambda *a: asyncio.to_thread(http, server, *a)  # noqa: E731
    assert (await call("GET", "/api/rooms", None))[0] == 401
    status, listing = await call("GET", "/api/rooms", "bob")
    assert status == 200 and listing == []
    token_wrong = await asyncio.to_thread(http, server, "GET", "/api/rooms", "nobody")
    assert token_wrong[0] == 401
    status, room = await call(
        "POST",
        "/api/rooms",
        "alice",
        {"name": "Team", "category": "General", "members": ["bob@example.com"]},
    )
    assert status == 201, room
    assert isinstance(room, dict) and room["managers"] == [ALICE]  # the creator manages it
    status, _ = await call("POST", "/api/rooms", "bob", {"name": "Nope", "category": "General"})
    assert status == 403  # bob is no creator in General
    status, changed_room = await call("PATCH", f"/api/rooms/{room['id']}", "alice", {"topic": "Q4"})
    assert status == 200 and isinstance(changed_room, dict) and changed_room["topic"] == "Q4"
    assert (await call("PATCH", f"/api/rooms/{room['id']}", "bob", {"topic": "mine"}))[0] == 403
    status, seen = await call("GET", f"/api/rooms/{room['id']}", "bob")  # a member, no manager
    assert status == 200 and isinstance(seen, dict) and "members" not in seen
    status, cats = await call("GET", "/api/categories", "bob")
    assert status == 200 and isinstance(cats, list) and "creators" not in cats[0]
    assert (await call("POST", f"/api/rooms/{room['id']}/disable", "alice"))[0] == 200
    assert (await call("DELETE", f"/api/rooms/{room['id']}", "alice"))[
        0
    ] == 403  # managers disable only
    assert (await call("POST", "/api/categories", "alice", {"name": "Mine"}))[0] == 403
    admin = await server.store.get_user(CAROL)
    assert admin is not None
    admin.admin = True
    await server.store.put_user(admin)
    assert (await call("DELETE", f"/api/rooms/{room['id']}", "carol"))[0] == 200
    assert (await call("GET", f"/api/rooms/{room['id']}", "carol"))[0] == 404
    assert (await call("DELETE", "/api/categories/General", "carol"))[0] == 200  # now empty
    assert (await call("PATCH", "/api/rooms/x", "alice", {"bogus": 1}))[0] == 400


async def test_only_administrators_remove_messages(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(Actor(ALICE), "Oops", "General", RoomChange(privacy="open"))
    alice = await signed_in(server, "alice")
    await alice.join(uri(room.id))
    await alice.post(uri(room.id), "keep")
    await alice.post(uri(room.id), "secret password")
    status, _ = await asyncio.to_thread(
        http, server, "DELETE", f"/api/rooms/{room.id}/messages/2", "alice"
    )
    assert status == 403
    await general.remove_message(ADMIN, room.id, 2)
    await changed(server)
    assert [m.text for m in await alice.history(uri(room.id))] == ["keep"]
    assert [
        m.text for m in await alice.history(uri(room.id), query='<search text="password" cnt="5"/>')
    ] == []
    await alice.close()


async def test_management_api_refuses_password_guessing(server: RunningWorker) -> None:
    def guess(password: str) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/rooms")
        token = base64.b64encode(f"alice@{DOMAIN}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    loop = asyncio.get_running_loop()
    statuses, took = [], []
    for i in range(12):
        start = loop.time()
        statuses.append(await asyncio.to_thread(guess, f"wrong{i}"))
        took.append(loop.time() - start)
    assert statuses == [401] * 12
    assert max(took[:11]) < 0.9 and took[11] >= 0.9  # the 12th in a minute waits its turn
    # a throttle, not a lock-out: the right password still signs in, after its wait
    assert await asyncio.to_thread(guess, PASSWORD) == 200
