"""A refused post fails its SIP INFO (SIPE shows only that as "not delivered") while its
rpl:grpchat still carries the XCCOS code; commands and accepted posts get 200. Real sockets."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

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


@pytest.fixture
async def open_room(general: Management) -> str:
    """The URI of an open room in General (created before any client signs in)."""
    room = await general.create_room(Actor(ALICE), "Open", "General", RoomChange(privacy="open"))
    return uri(room.id)


@pytest.fixture
async def alice(server: RunningWorker) -> AsyncIterator[PchatClient]:
    client = await signed_in(server, "alice")
    try:
        yield client
    finally:
        await client.close()


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


async def test_an_accepted_post_and_a_command_get_200(open_room: str, alice: PchatClient) -> None:
    response, [reply] = await info(alice, build.cmd("cmd:join", 1, build.chanib(open_room)))
    assert (response.status, reply.code) == (200, 200)
    assert await refused(alice, open_room) == (200, 200, "")


async def test_a_post_before_joining_fails_its_info_with_403(
    open_room: str, alice: PchatClient
) -> None:
    status, code, warning = await refused(alice, open_room)
    assert (status, code) == (403, 403) and "join the room" in warning
    await alice.join(open_room)
    assert await alice.history(open_room) == []  # nothing was stored


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
    server: RunningWorker, open_room: str, alice: PchatClient
) -> None:
    await alice.join(open_room)
    limit = server.settings.limits.message_size_limit
    assert (await refused(alice, open_room, "x" * (limit + 1)))[:2] == (413, 413)


async def test_a_post_to_a_room_disabled_since_the_join_fails_with_404(
    server: RunningWorker, general: Management, open_room: str, alice: PchatClient
) -> None:
    await alice.join(open_room)
    await general.set_disabled(ADMIN, open_room.rsplit("/", 1)[1], True)
    await server.refresh()
    assert (await alice.next_notice()).name == "ntc:part"
    assert (await refused(alice, open_room))[:2] == (404, 404)


async def test_a_post_signed_as_someone_else_fails_with_403(
    open_room: str, alice: PchatClient
) -> None:
    await alice.join(open_room)
    response, [reply] = await info(alice, build.post(open_room, BOB, "as bob"))
    assert (response.status, reply.code) == (403, 403)


async def test_the_client_reads_a_refusal_from_its_rpl(open_room: str, alice: PchatClient) -> None:
    """The rpl of a refused post comes before the failed INFO, so post_envelope returns it."""
    assert (await alice.post_envelope(open_room, "not joined")).code == 403
    await alice.join(open_room)
    assert (await alice.post_envelope(open_room, "joined")).code == 200


async def test_one_refused_post_fails_an_info_of_several(
    general: Management, open_room: str, alice: PchatClient
) -> None:
    other = await general.create_room(Actor(ALICE), "Other", "General", RoomChange(privacy="open"))
    await alice.join(open_room)
    envid = next(_envids)
    body = build.post(open_room, ALICE, "kept", seqid=1) + build.post(
        uri(other.id), ALICE, "refused", seqid=2
    )
    response = await alice.request(
        "INFO", alice._remote_target, in_dialog=True,
        extra=[("Content-Type", "text/plain")], body=build.envelope(envid, body),
    )  # fmt: skip
    assert response.status == 403
    stored = await alice.history(open_room)
    assert [m.text for m in stored] == ["kept"]
