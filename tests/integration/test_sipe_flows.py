"""What SIPE does, over real sockets with pchat's client: the lookup step with two dialogs,
the whole room list (chansrch with empty criteria), and its lower-case author."""

from __future__ import annotations

import pytest

from client.client import PchatClient
from core.store.base import RoomRecord
from core.xccos import build
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, PASSWORD, add_room, signed_in
from tests.integration.test_post_refusals import info

ALICE = f"sip:alice@{DOMAIN}"


async def lookup_then_session(client: PchatClient, pool: str) -> str:
    """SIPE's two dialogs: INVITE the pool URI, requri, BYE, INVITE what requri named."""
    client.pool_uri = pool
    await client.invite()
    reply = await client.command("cmd:requri")
    uib = reply.data.find("uib") if reply.data is not None else None
    named = uib.get("uri") if uib is not None else ""
    first = client.call_id
    bye = await client.request("BYE", client._remote_target, in_dialog=True)
    assert bye.status == 200
    client.pool_uri = named
    await client.invite()
    assert client.call_id != first
    await client.command("cmd:getinv", f'<inv inviteId="1" domain="{DOMAIN}"/>')
    return named


@pytest.mark.parametrize("pool", [f"sip:pchat@{DOMAIN}", f"sip:ocschat@{DOMAIN}"])
async def test_requri_with_two_dialogs_as_sipe_does(server: RunningWorker, pool: str) -> None:
    lobby = await add_room(server.store, "Lobby", privacy="open")
    alice = await PchatClient.connect("127.0.0.1", server.sip_port, f"alice@{DOMAIN}", PASSWORD)
    bob = await signed_in(server, "bob")
    try:
        assert await alice.provision() is True
        named = await lookup_then_session(alice, pool)
        assert named == pool  # requri names the URI this dialog was INVITEd with
        await alice.join(lobby)
        await bob.join(lobby)
        await bob.post(lobby, "to the second dialog")
        assert (await alice.next_post()).text == "to the second dialog"
        info = [m for m in alice.server_requests if m.method == "INFO"][-1]
        assert info.call_id == alice.call_id  # the second dialog's, not the BYEd lookup's
        assert (info.get("From") or "").startswith(f"<{pool}>;tag=")
    finally:
        await alice.close()
        await bob.close()


async def test_an_empty_chansrch_lists_every_room_the_user_may_see(server: RunningWorker) -> None:
    """Over search_limit (100) rooms: all visible ones come, the secret one alice is not in
    and the disabled one do not."""
    assert server.settings.limits.search_limit == 100
    opened = [await add_room(server.store, f"Room {n:03}", privacy="open") for n in range(130)]
    closed = await add_room(server.store, "Closed board", privacy="closed")  # listed, not joinable
    mine = await add_room(server.store, "My secret", privacy="secret", members=[ALICE])
    hidden = await add_room(server.store, "Their secret", privacy="secret")
    await server.store.put_room(
        RoomRecord(id="gone", name="Gone", category_id="general", privacy="open", disabled=True)
    )
    await server.refresh()
    alice = await signed_in(server, "alice")
    try:
        listed = [room["uri"] for room in await alice.search("")]
        assert sorted(listed) == sorted([*opened, closed, mine])
        assert hidden not in listed and f"ma-chan://{DOMAIN}/gone" not in listed
        assert len(await alice.search("room")) == 100  # a search with criteria keeps its limit
    finally:
        await alice.close()


@pytest.mark.parametrize("author", [ALICE, "sip:ALICE@Example.COM", "sip:alice@example.com;x=1"])
async def test_the_author_is_compared_case_insensitively(
    server: RunningWorker, author: str
) -> None:
    lobby = await add_room(server.store, "Lobby", privacy="open")
    alice = await signed_in(server, "alice")
    try:
        await alice.join(lobby)
        response, [reply] = await info(alice, build.post(lobby, author, "as written"))
        assert (response.status, reply.code) == (200, 200)
        [stored] = await alice.history(lobby)
        assert stored.author == ALICE  # stored as the signed-in user, whatever the case
    finally:
        await alice.close()
