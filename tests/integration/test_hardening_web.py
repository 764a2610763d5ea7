"""Hardening of what a user may learn and change (issue 10, findings 3 and 4): a hidden
room answers like a missing one over SIP and HTTP, and the ethical wall beats every
room principal over HTTP as over SIP. Real worker, real sockets, real store and redis."""

from __future__ import annotations

import asyncio

import msgspec

from client.client import PchatClient
from core.rooms.management import ADMIN, Actor, CategoryChange, Management, RoomChange
from core.xccos.envelope import Reply
from core.xccos.xml import Element
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, signed_in
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
