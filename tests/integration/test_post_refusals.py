"""A refused post fails its SIP INFO (SIPE shows only that as "not delivered") while its
rpl:grpchat still carries the XCCOS code; commands and accepted posts get 200. Real sockets."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from client.client import PchatClient
from core.rooms.management import ADMIN, Actor, CategoryChange, Management, RoomChange
from core.sip.message import SipMessage
from core.xccos import build
from core.xccos.envelope import Reply
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, signed_in

ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"
_envids = itertools.count(70_000)


def uri(room_id: str) -> str:
    return f"ma-chan://{DOMAIN}/{room_id}"


@pytest.fixture
async def general(server: RunningWorker) -> Management:
    mgmt = Management(server.store)
    await mgmt.create_category(ADMIN, "General", CategoryChange(creators=[ALICE]))
    return mgmt


async def info(client: PchatClient, inner: str) -> tuple[SipMessage, list[Reply]]:
    """One INFO with ``inner``: its SIP response and the rpls that answer it."""
    envid = next(_envids)
    fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    client._replies[str(envid)] = fut
    try:
        response = await client.request(
            "INFO", client._remote_target, in_dialog=True,
            extra=[("Content-Type", "text/plain")], body=build.envelope(envid, inner),
        )  # fmt: skip
        reply = await asyncio.wait_for(fut, 5)
    finally:
        client._replies.pop(str(envid), None)
    return response, [reply]


async def refused(client: PchatClient, room: str, text: str = "hi") -> tuple[int, int, str]:
    """(SIP status, rpl code, Warning) of one post."""
    response, [reply] = await info(client, build.post(room, client.uri, text))
    return response.status, reply.code, response.get("Warning") or ""


async def test_an_accepted_post_and_a_command_get_200(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(Actor(ALICE), "Open", "General", RoomChange(privacy="open"))
    alice = await signed_in(server, "alice")
    try:
        response, [reply] = await info(alice, build.cmd("cmd:join", 1, build.chanib(uri(room.id))))
        assert (response.status, reply.code) == (200, 200)
        assert await refused(alice, uri(room.id)) == (200, 200, "")
    finally:
        await alice.close()


async def test_a_post_before_joining_fails_its_info_with_403(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(Actor(ALICE), "Open", "General", RoomChange(privacy="open"))
    alice = await signed_in(server, "alice")
    try:
        status, code, warning = await refused(alice, uri(room.id))
        assert (status, code) == (403, 403) and "join the room" in warning
        await alice.join(uri(room.id))
        assert await alice.history(uri(room.id)) == []  # nothing was stored
    finally:
        await alice.close()


async def test_a_post_to_a_hidden_or_missing_room_fails_with_404(
    server: RunningWorker, general: Management
) -> None:
    secret = await general.create_room(
        Actor(ALICE), "Hidden", "General", RoomChange(privacy="secret")
    )
    bob = await signed_in(server, "bob")
    try:
        assert (await refused(bob, uri(secret.id)))[:2] == (404, 404)
        assert (await refused(bob, uri("no-such-room")))[:2] == (404, 404)
    finally:
        await bob.close()


async def test_a_post_by_a_non_presenter_in_an_auditorium_fails_with_403(
    server: RunningWorker, general: Management
) -> None:
    hall = await general.create_room(
        Actor(ALICE), "Hall", "General",
        RoomChange(privacy="open", type="auditorium", presenters=[ALICE]),
    )  # fmt: skip
    alice, bob = await signed_in(server, "alice"), await signed_in(server, "bob")
    try:
        for c in (alice, bob):
            await c.join(uri(hall.id))
        status, code, warning = await refused(bob, uri(hall.id))
        assert (status, code) == (403, 403) and "may not post" in warning
        assert await refused(alice, uri(hall.id)) == (200, 200, "")
    finally:
        await alice.close()
        await bob.close()


async def test_a_post_over_the_size_limit_fails_with_413(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(Actor(ALICE), "Open", "General", RoomChange(privacy="open"))
    alice = await signed_in(server, "alice")
    try:
        await alice.join(uri(room.id))
        limit = server.settings.limits.message_size_limit
        assert (await refused(alice, uri(room.id), "x" * (limit + 1)))[:2] == (413, 413)
    finally:
        await alice.close()


async def test_a_post_to_a_room_disabled_since_the_join_fails_with_404(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(Actor(ALICE), "Doomed", "General", RoomChange(privacy="open"))
    alice = await signed_in(server, "alice")
    try:
        await alice.join(uri(room.id))
        await general.set_disabled(ADMIN, room.id, True)
        await server.refresh()
        assert (await alice.next_notice()).name == "ntc:part"
        assert (await refused(alice, uri(room.id)))[:2] == (404, 404)
    finally:
        await alice.close()


async def test_a_post_signed_as_someone_else_fails_with_403(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(Actor(ALICE), "Open", "General", RoomChange(privacy="open"))
    alice = await signed_in(server, "alice")
    try:
        await alice.join(uri(room.id))
        response, [reply] = await info(alice, build.post(uri(room.id), BOB, "as bob"))
        assert (response.status, reply.code) == (403, 403)
    finally:
        await alice.close()


async def test_the_client_reads_a_refusal_from_its_rpl(
    server: RunningWorker, general: Management
) -> None:
    """The rpl of a refused post comes before the failed INFO, so post_envelope returns it."""
    room = await general.create_room(Actor(ALICE), "Open", "General", RoomChange(privacy="open"))
    alice = await signed_in(server, "alice")
    try:
        assert (await alice.post_envelope(uri(room.id), "not joined")).code == 403
        await alice.join(uri(room.id))
        assert (await alice.post_envelope(uri(room.id), "joined")).code == 200
    finally:
        await alice.close()


async def test_one_refused_post_fails_an_info_of_several(
    server: RunningWorker, general: Management
) -> None:
    room = await general.create_room(Actor(ALICE), "Open", "General", RoomChange(privacy="open"))
    other = await general.create_room(Actor(ALICE), "Other", "General", RoomChange(privacy="open"))
    alice = await signed_in(server, "alice")
    try:
        await alice.join(uri(room.id))
        envid = next(_envids)
        body = build.post(uri(room.id), ALICE, "kept", seqid=1) + build.post(
            uri(other.id), ALICE, "refused", seqid=2
        )
        response = await alice.request(
            "INFO", alice._remote_target, in_dialog=True,
            extra=[("Content-Type", "text/plain")], body=build.envelope(envid, body),
        )  # fmt: skip
        assert response.status == 403
        stored = await alice.history(uri(room.id))
        assert [m.text for m in stored] == ["kept"]
    finally:
        await alice.close()
