"""Deleting a room and removing a message from the room pages, over real HTTP against a
running worker, with posts made by a real SIP client (shards/web/pages_removal.py): an
administrator does both; a room's manager who is not one disables it instead (403)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from core.files.names import stored_name
from core.rooms.management import Actor, Management, RoomChange
from core.store.base import CategoryRecord, RoomRecord
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, signed_in
from tests.integration.test_web_audit import audit_lines
from tests.integration.test_web_pages import get, post, token
from tests.integration.test_web_signin import base, browser, sign_in
from tests.integration.ws_client import basic

ALICE, BOB, CAROL = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}", f"sip:carol@{DOMAIN}"


def uri(room_id: str) -> str:
    return f"ma-chan://{DOMAIN}/{room_id}"


async def lab(server: RunningWorker, privacy: str = "open") -> RoomRecord:
    """Alice's room with bob as a member: two posts by alice and one uploaded file."""
    await server.store.put_category(CategoryRecord(id="team", name="Team", creators=[ALICE]))
    mgmt = Management(server.store)
    room = await mgmt.create_room(
        Actor(ALICE),
        "Lab",
        "team",
        RoomChange(privacy=privacy, members=[BOB]),  # type: ignore[arg-type]
    )
    alice = await signed_in(server, "alice")
    try:
        await alice.join(uri(room.id))
        await alice.post(uri(room.id), "keep this")
        await alice.post(uri(room.id), "oops, a secret")
    finally:
        await alice.close()
    async with aiohttp.ClientSession(base(server)) as http:
        url = f"/api/rooms/{room.id}/files"
        async with http.post(
            url, params={"name": "a.txt"}, data=b"abc", headers=basic("alice")
        ) as r:
            assert r.status == 201
    return room


async def texts(server: RunningWorker, room_id: str) -> list[str]:
    return [m.text for m in await server.store.history_last(room_id, 10)]


async def administrator(server: RunningWorker, uri: str = CAROL) -> None:
    user = await server.store.get_user(uri)
    assert user is not None
    user.admin = True
    await server.store.put_user(user)


async def test_an_administrator_removes_a_message_from_the_history_page(
    server: RunningWorker,
) -> None:
    room = await lab(server)
    await administrator(server)
    async with browser(server) as http:
        await sign_in(http, server, "carol")
        status, page = await get(http, f"/rooms/{room.id}")
        assert status == 200 and f'href="/rooms/{room.id}/history"' in page
        assert f'href="/rooms/{room.id}/delete"' in page
        status, page = await get(http, f"/rooms/{room.id}/history")
        assert status == 200 and "oops, a secret" in page
        assert re.search(r"<td>2</td>.*?oops, a secret", page, re.S)  # its message id shown
        assert 'aria-label="Remove message 2"' in page
        csrf = await token(http)
        path = f"/rooms/{room.id}/messages/2/remove"
        status, location, _ = await post(http, server, path, [("csrf", csrf)])
        assert (status, location) == (303, f"/rooms/{room.id}/history?done=removed")
        status, page = await get(http, location)
        assert "Message removed." in page and "oops, a secret" not in page
        # removing it again: 404, as from the API
        assert (await post(http, server, path, [("csrf", csrf)]))[0] == 404
        bad = f"/rooms/{room.id}/messages/x/remove"
        assert (await post(http, server, bad, [("csrf", csrf)]))[0] == 400
    kept = await texts(server, room.id)
    assert "oops, a secret" not in kept and "keep this" in kept and len(kept) == 2
    action = "POST /rooms/{room}/messages/{msgid}/remove"
    record = next(r for r in audit_lines(server) if r["action"] == action)
    assert (record["actor"], record["target"], record["result"]) == (CAROL, f"{room.id}/2", "ok")


async def test_an_administrator_deletes_a_room_after_confirming_and_its_files_go(
    server: RunningWorker,
) -> None:
    room = await lab(server)
    await administrator(server)
    [file] = await server.store.room_files(room.id)
    stored = Path(server.settings.files_dir) / stored_name(file.id, file.name)
    assert stored.exists()
    async with browser(server) as http:
        await sign_in(http, server, "carol")  # an administrator who does not manage it
        status, page = await get(http, f"/rooms/{room.id}/delete")
        assert status == 200 and "1 file" in page and 'name="confirm"' in page
        csrf = await token(http)
        path = f"/rooms/{room.id}/delete"
        status, _, page = await post(http, server, path, [("csrf", csrf)])
        assert status == 400 and "nothing was deleted" in page  # the box not ticked
        assert await server.store.get_room(room.id) is not None
        status, location, _ = await post(http, server, path, [("csrf", csrf), ("confirm", "yes")])
        assert (status, location) == (303, "/rooms?done=deleted")
        assert "Room deleted." in (await get(http, location))[1]
        assert (await get(http, f"/rooms/{room.id}"))[0] == 404
    assert await server.store.get_room(room.id) is None
    assert await server.store.room_files(room.id) == [] and not stored.exists()
    assert await texts(server, room.id) == []


async def test_a_manager_who_is_not_an_administrator_disables_but_gets_403_on_removal(
    server: RunningWorker,
) -> None:
    room = await lab(server)
    before = await texts(server, room.id)
    async with browser(server) as http:
        await sign_in(http, server, "alice")  # the room's manager
        status, page = await get(http, f"/rooms/{room.id}")
        assert status == 200 and "Disable room" in page  # her room page, as before
        assert f'href="/rooms/{room.id}/history"' not in page  # no removal offered
        assert f'href="/rooms/{room.id}/delete"' not in page
        csrf = await token(http)
        assert (await get(http, f"/rooms/{room.id}/history"))[0] == 403
        status, page = await get(http, f"/rooms/{room.id}/delete")
        assert status == 403 and "only administrators" in page
        remove = f"/rooms/{room.id}/messages/2/remove"
        assert (await post(http, server, remove, [("csrf", csrf)]))[0] == 403
        form = [("csrf", csrf), ("confirm", "yes")]
        assert (await post(http, server, f"/rooms/{room.id}/delete", form))[0] == 403
    assert await texts(server, room.id) == before
    assert await server.store.get_room(room.id) is not None
    assert len(await server.store.room_files(room.id)) == 1
    refused = [r for r in audit_lines(server) if r["result"] == "refused"]
    assert {(r["actor"], r["status"]) for r in refused} == {(ALICE, 403)} and len(refused) == 2


async def test_a_member_gets_403_and_a_stranger_to_a_secret_room_404_and_nothing_changes(
    server: RunningWorker,
) -> None:
    room = await lab(server)
    secret = await lab_secret(server)
    before = await texts(server, room.id)
    async with browser(server) as http:
        await sign_in(http, server, "bob")
        csrf = await token(http)
        assert (await get(http, f"/rooms/{room.id}/history"))[0] == 403
        assert (await get(http, f"/rooms/{room.id}/delete"))[0] == 403
        remove = f"/rooms/{room.id}/messages/2/remove"
        assert (await post(http, server, remove, [("csrf", csrf)]))[0] == 403
        form = [("csrf", csrf), ("confirm", "yes")]
        assert (await post(http, server, f"/rooms/{room.id}/delete", form))[0] == 403
        # without the session's token: refused before any rule
        assert (await post(http, server, f"/rooms/{room.id}/delete", [("confirm", "yes")]))[
            0
        ] == 403
        # bob is no member of the secret room: to him it does not exist
        assert (await get(http, f"/rooms/{secret.id}/history"))[0] == 404
        assert (await get(http, f"/rooms/{secret.id}/delete"))[0] == 404
        assert (await post(http, server, f"/rooms/{secret.id}/delete", form))[0] == 404
        remove = f"/rooms/{secret.id}/messages/1/remove"
        assert (await post(http, server, remove, [("csrf", csrf)]))[0] == 404
    assert await texts(server, room.id) == before
    assert await server.store.get_room(room.id) is not None
    assert await server.store.get_room(secret.id) is not None
    refused = [r for r in audit_lines(server) if r["result"] == "refused"]
    assert {(r["actor"], r["status"]) for r in refused} == {(BOB, 403), (BOB, 404)}


async def lab_secret(server: RunningWorker) -> RoomRecord:
    room = RoomRecord(id="vault", name="Vault", category_id="team", privacy="secret",
                      managers=[ALICE])  # fmt: skip
    await server.store.put_room(room)
    return room
