"""The audit log of the web parts over real HTTP against a running worker: each page
action, sign-in and sign-out, upload, API change and WebSocket session writes one line,
and a refused one is recorded as refused (shards/web/audit_trail.py)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from core.store.base import CategoryRecord
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, PASSWORD
from tests.integration.test_web_pages import get, post, token
from tests.integration.test_web_signin import base, browser, sign_in
from tests.integration.ws_client import WsClient, basic

ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"


def audit_lines(server: RunningWorker) -> list[dict[str, object]]:
    path = Path(server.settings.audit_file)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def since(server: RunningWorker, count: int) -> list[dict[str, object]]:
    return audit_lines(server)[count:]


async def team(server: RunningWorker) -> None:
    await server.store.put_category(CategoryRecord(id="team", name="Team", creators=[ALICE]))


async def test_each_page_action_writes_its_line_with_who_where_what_and_result(
    server: RunningWorker,
) -> None:
    await team(server)
    async with browser(server) as http:
        await sign_in(http, server, pw="wrong")
        await sign_in(http, server)
        [wrong, right] = audit_lines(server)
        assert (wrong["actor"], wrong["result"], wrong["status"]) == (
            "alice@example.com",
            "refused",
            401,
        )
        assert (right["actor"], right["result"], right["status"]) == (ALICE, "ok", 303)
        assert right["via"] == "web-page" and right["source"] == "127.0.0.1"
        assert right["action"] == "POST /signin" and "password" not in right["details"]  # type: ignore[operator]
        assert PASSWORD not in Path(server.settings.audit_file).read_text()
        csrf = await token(http)
        form = [("csrf", csrf), ("category", "team"), ("name", "Plans"), ("privacy", "open")]
        status, location, _ = await post(http, server, "/rooms/new", form)
        assert status == 303
        room = location.split("/")[2].split("?")[0]
        for path in (f"/rooms/{room}/disable", f"/rooms/{room}/enable"):
            assert (await post(http, server, path, [("csrf", csrf)]))[0] == 303
        edit = [("csrf", csrf), ("action", "save"), ("name", "Plans"), ("description", "Q4")]
        assert (await post(http, server, f"/rooms/{room}", edit))[0] == 303
        assert (await post(http, server, "/signout", [("csrf", csrf)]))[0] == 303
    lines = since(server, 2)
    assert [(r["action"], r["target"], r["result"]) for r in lines] == [
        ("POST /rooms/new", "", "ok"),
        ("POST /rooms/{room}/disable", room, "ok"),
        ("POST /rooms/{room}/enable", room, "ok"),
        ("POST /rooms/{room}", room, "ok"),
        ("POST /signout", "", "ok"),
    ]
    assert all(r["actor"] == ALICE and r["via"] == "web-page" for r in lines)
    created = lines[0]["details"]
    assert isinstance(created, dict) and created["name"] == "Plans" and "csrf" not in created
    assert isinstance(lines[3]["details"], dict) and lines[3]["details"]["description"] == "Q4"


async def test_a_refused_page_action_is_recorded_as_refused_and_changes_nothing(
    server: RunningWorker,
) -> None:
    await team(server)
    async with browser(server) as http:
        await sign_in(http, server)
        csrf = await token(http)
        form = [("csrf", csrf), ("category", "team"), ("name", "Mine"), ("privacy", "open")]
        location = (await post(http, server, "/rooms/new", form))[1]
    room = location.split("/")[2].split("?")[0]
    async with browser(server) as http:
        await sign_in(http, server, "bob")
        before = len(audit_lines(server))
        csrf = await token(http)
        assert (await post(http, server, f"/rooms/{room}/disable", [("csrf", csrf)]))[0] == 403
        assert (await post(http, server, "/admin/categories", [("csrf", csrf), ("name", "X")]))[
            0
        ] == 403
        # a session's form with another token: a cross-site attempt, recorded too
        assert (await post(http, server, f"/rooms/{room}/disable", [("csrf", "0" * 64)]))[0] == 403
        # no session at all: nobody to record (the access log has it)
        async with aiohttp.ClientSession(base(server)) as anonymous:
            assert (await post(anonymous, server, f"/rooms/{room}/disable", [("csrf", csrf)]))[
                0
            ] == 401
    lines = since(server, before)
    assert [(r["actor"], r["action"], r["result"], r["status"]) for r in lines] == [
        (BOB, "POST /rooms/{room}/disable", "refused", 403),
        (BOB, "POST /admin/categories", "refused", 403),
        (BOB, "POST /rooms/{room}/disable", "refused", 403),
    ]
    found = await server.store.get_room(room)
    assert found is not None and not found.disabled


async def test_api_uploads_and_websocket_sessions_are_recorded_through_the_same_log(
    server: RunningWorker,
) -> None:
    await team(server)
    async with aiohttp.ClientSession(base(server)) as http:
        new = {"name": "Lab", "category": "team", "privacy": "open"}
        async with http.post("/api/rooms", json=new, headers=basic("alice")) as resp:
            assert resp.status == 201
            room = str((await resp.json())["id"])
        async with http.patch(
            f"/api/rooms/{room}", json={"topic": "x"}, headers=basic("bob")
        ) as resp:
            assert resp.status == 403
        url = f"/api/rooms/{room}/files"
        async with http.post(
            url, params={"name": "a.txt"}, data=b"abc", headers=basic("bob")
        ) as resp:
            assert resp.status == 201
        async with http.get(f"/api/rooms/{room}", headers=basic("bob")) as resp:
            assert resp.status == 200  # reads are not recorded
    client = await WsClient.connect(server.http_port, "carol")
    await client.close()
    lines = audit_lines(server)
    assert [(r["via"], r["actor"], r["action"], r["result"]) for r in lines] == [
        ("http-api", ALICE, "POST /api/rooms", "ok"),
        ("http-api", BOB, "PATCH /api/rooms/{room}", "refused"),
        ("file-store", BOB, "POST /api/rooms/{room}/files", "ok"),
        ("websocket", f"sip:carol@{DOMAIN}", "UPGRADE /ws", "ok"),
    ]
    assert lines[1]["details"] == {"topic": "x"} and lines[1]["status"] == 403
    assert lines[2]["details"] == {"name": "a.txt"} and lines[2]["target"] == room
    assert lines[3]["status"] == 101


async def test_the_page_that_draws_a_form_is_not_recorded(server: RunningWorker) -> None:
    async with browser(server) as http:
        await sign_in(http, server)
        before = len(audit_lines(server))
        assert (await get(http, "/rooms"))[0] == 200
    assert since(server, before) == []
