"""My Rooms and the administrators' pages over real HTTP: what the forms do to the store,
escaping, the pool limits and who is refused (shards/web/pages_*.py)."""

from __future__ import annotations

import re

import aiohttp

from core.store.base import CategoryRecord
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, add_user
from tests.integration.test_web_signin import base, browser, sign_in

ALICE, BOB, CAROL = (f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol"))


async def get(http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with http.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def post(
    http: aiohttp.ClientSession, server: RunningWorker, path: str, form: list[tuple[str, str]]
) -> tuple[int, str, str]:
    """(status, Location, body) of a form sent as the server's own page sends it."""
    async with http.post(
        path, data=form, headers={"Origin": base(server)}, allow_redirects=False
    ) as resp:
        return resp.status, resp.headers.get("Location", ""), await resp.text()


async def token(http: aiohttp.ClientSession) -> str:
    _, page = await get(http, "/rooms")
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found is not None
    return found[1]


async def walled(server: RunningWorker) -> None:
    """A category allowing alice and bob only; alice creates rooms in it."""
    await server.store.put_category(
        CategoryRecord(id="team", name="Team", allowed=[ALICE, BOB], creators=[ALICE])
    )


async def test_create_offers_and_keeps_only_the_categorys_pool(server: RunningWorker) -> None:
    await walled(server)
    async with browser(server) as http:
        await sign_in(http, server)
        status, page = await get(http, "/rooms/new?category=team")
        assert status == 200
        assert f'value="{BOB}"' in page and f'value="{CAROL}"' not in page
        csrf = await token(http)
        form = [("csrf", csrf), ("category", "team"), ("name", "Plans"), ("privacy", "secret"),
                ("members", BOB), ("members_more", "carol@example.com"),
                ("invitations_shown", "1")]  # fmt: skip
        status, location, _ = await post(http, server, "/rooms/new", form)
        assert status == 303 and location.endswith("?done=created")
    room = await server.store.get_room_by_name("Plans")
    assert room is not None
    assert room.members == [BOB]  # carol is behind the category's wall: not kept
    assert room.managers == [ALICE]  # the creator, though the form listed no manager
    assert (room.privacy, room.invitations) == ("secret", "off")  # unchecked box: off
    assert room.file_upload == "inherit"  # no box shown for it: left as it was


async def test_a_switch_the_category_turns_off_is_left_as_it_was(server: RunningWorker) -> None:
    """The box is shown disabled, so the browser sends nothing: that is no "off"."""
    await server.store.put_category(
        CategoryRecord(id="team", name="Team", creators=[ALICE], invitations=False)
    )
    async with browser(server) as http:
        await sign_in(http, server)
        status, page = await get(http, "/rooms/new?category=team")
        assert 'name="invitations" value="on" checked disabled>' not in page
        assert 'id="invitations" name="invitations" value="on" disabled>' in page
        assert 'name="invitations_shown"' not in page and 'name="file_upload_shown"' in page
        form = [("csrf", await token(http)), ("category", "team"), ("name", "Quiet"),
                ("file_upload_shown", "1")]  # fmt: skip
        assert (await post(http, server, "/rooms/new", form))[0] == 303
    room = await server.store.get_room_by_name("Quiet")
    assert room is not None
    assert (room.invitations, room.file_upload) == ("inherit", "off")


async def test_the_original_limits_and_the_name_check(server: RunningWorker) -> None:
    await walled(server)
    async with browser(server) as http:
        await sign_in(http, server)
        csrf = await token(http)
        long = [("csrf", csrf), ("category", "team"), ("name", "n" * 257)]
        status, _, page = await post(http, server, "/rooms/new", long)
        assert status == 400 and "at most 256 characters" in page
        assert await server.store.list_rooms() == []
        made = [("csrf", csrf), ("category", "team"), ("name", "Plans")]
        assert (await post(http, server, "/rooms/new", made))[0] == 303
        async with http.get("/rooms/check-name", params={"name": "PLANS"}) as resp:
            assert (await resp.json())["free"] is False  # names are unique without case
        async with http.get("/rooms/check-name", params={"name": "Other"}) as resp:
            assert (await resp.json())["free"] is True
        check = [("csrf", csrf), ("category", "team"), ("name", "plans"), ("action", "check")]
        status, _, page = await post(http, server, "/rooms/new", check)
        assert status == 200 and "is taken" in page  # without script: the button posts
        assert len(await server.store.list_rooms()) == 1
        again = [("csrf", csrf), ("category", "team"), ("name", "plans")]
        assert (await post(http, server, "/rooms/new", again))[0] == 409


async def test_everything_shown_is_escaped(server: RunningWorker) -> None:
    await walled(server)
    evil = '<script>alert("x")</script>'
    async with browser(server) as http:
        await sign_in(http, server)
        csrf = await token(http)
        form = [("csrf", csrf), ("category", "team"), ("name", evil), ("description", evil)]
        status, location, _ = await post(http, server, "/rooms/new", form)
        assert status == 303
        for path in ("/rooms", location.split("?")[0]):
            status, page = await get(http, path)
            assert status == 200
            assert evil not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
        async with http.get("/rooms") as resp:
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


async def test_a_creator_only_offers_its_categories_and_others_may_not_create(
    server: RunningWorker,
) -> None:
    await walled(server)
    async with browser(server) as http:
        await sign_in(http, server, "bob")
        status, page = await get(http, "/rooms")
        assert "Create a room" not in page
        assert (await get(http, "/rooms/new"))[0] == 403
        csrf = await token(http)
        form = [("csrf", csrf), ("category", "team"), ("name", "Nope")]
        assert (await post(http, server, "/rooms/new", form))[0] == 403
    assert await server.store.list_rooms() == []


async def test_a_hidden_room_is_404_and_a_seen_one_403_on_its_page(
    server: RunningWorker,
) -> None:
    await walled(server)
    async with browser(server) as http:
        await sign_in(http, server)
        csrf = await token(http)
        form = [("csrf", csrf), ("category", "team"), ("name", "Hidden"), ("privacy", "secret")]
        _, location, _ = await post(http, server, "/rooms/new", form)
        room_path = location.split("?")[0]
        form = [("csrf", csrf), ("category", "team"), ("name", "Seen"), ("privacy", "open")]
        _, seen, _ = await post(http, server, "/rooms/new", form)
    async with browser(server) as http:
        await sign_in(http, server, "bob")
        assert (await get(http, room_path))[0] == 404
        assert (await get(http, seen.split("?")[0]))[0] == 403


async def test_admin_pages_are_for_administrators(server: RunningWorker) -> None:
    async with browser(server) as http:
        await sign_in(http, server, "bob")
        for path in ("/admin/users", "/admin/categories"):
            status, page = await get(http, path)
            assert status == 403 and "only administrators" in page
        csrf = await token(http)
        form = [("csrf", csrf), ("uri", BOB), ("op", "grant")]
        assert (await post(http, server, "/admin/users", form))[0] == 403
    bob = await server.store.get_user(BOB)
    assert bob is not None and bob.admin is False


async def test_an_administrator_manages_users_and_categories(server: RunningWorker) -> None:
    await add_user(server.store, "root")
    root = await server.store.get_user(f"sip:root@{DOMAIN}")
    assert root is not None
    root.admin = True
    await server.store.put_user(root)
    await walled(server)
    async with browser(server) as http:
        await sign_in(http, server, "root")
        csrf = await token(http)
        status, page = await get(http, "/admin/users?q=bob")
        assert status == 200 and "bob@example.com" in page and "carol@" not in page
        for op, field, value in [("grant", "admin", True), ("disable", "enabled", False)]:
            form = [("csrf", csrf), ("uri", BOB), ("op", op)]
            assert (await post(http, server, "/admin/users", form))[0] == 303
            record = await server.store.get_user(BOB)
            assert record is not None and getattr(record, field) is value
        mine = [("csrf", csrf), ("uri", root.uri), ("op", "revoke")]
        status, _, page = await post(http, server, "/admin/users", mine)
        assert status == 403 and "your own administrator role" in page
        form = [("csrf", csrf), ("name", "Team"), ("description", "the team"),
                ("creators", ALICE), ("creators_more", "bob@example.com"),
                ("allowed_more", "domain:example.com"), ("denied", CAROL),
                ("invitations", "on")]  # fmt: skip
        assert (await post(http, server, "/admin/categories/team", form))[0] == 303
        status, page = await get(http, "/admin/categories/team")
        assert status == 200 and "the team" in page
    team = await server.store.get_category("team")
    assert team is not None
    assert (team.creators, team.allowed, team.denied) == (
        [ALICE, BOB],
        ["domain:example.com"],
        [CAROL],
    )
    assert (team.invitations, team.file_upload, team.history) == (True, False, False)
