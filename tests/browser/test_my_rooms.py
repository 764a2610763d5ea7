"""My Rooms in a real browser: create a room, upload from the page, and what others may do.

The story of issue 13 part 4: a creator signs in, creates a secret room with a member and
uploads a file from the page; the member finds the room over SIP (chansrch) and downloads
the same bytes over HTTP; a non-member gets 404; an oversize upload gets 413 and nothing is
stored; a manager cannot change another manager's room.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import aiohttp
from playwright.async_api import Page, expect

from client.client import PchatClient
from core.files.post import parse_file_post
from tests.browser.conftest import MAX_UPLOAD_KB, Pages, WebServer, shot, sign_in
from tests.e2e.cluster import DOMAIN, PASSWORD


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}@{DOMAIN}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def create_room(page: Page, server: WebServer, name: str, members: list[str]) -> str:
    """Fills the create form as a person would; the new room's id."""
    await page.goto(server.url("/rooms"))
    await page.get_by_role("link", name="Create a room").click()
    await page.get_by_label("Name").fill(name)
    await page.get_by_role("button", name="Check name").click()
    await expect(page.locator("#name-check")).to_have_text(f"'{name}' is free.")
    await page.get_by_label("Description").fill(f"{name}, made in a browser test")
    await page.get_by_label("Secret: only members find and read it").check()
    group = page.get_by_role("group", name="Members")
    for member in members:
        await group.get_by_label(f"{member}@{DOMAIN} ({member.title()})").check()
    await shot(page, f"create-{name}")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Create room").click()
    await expect(page.get_by_role("status").first).to_have_text("Room created.")
    return page.url.rsplit("/", 1)[1].split("?")[0]


async def upload(page: Page, name: str, data: bytes) -> None:
    await page.get_by_label("Upload a file").set_input_files(
        files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}]
    )
    await page.get_by_role("button", name="Upload", exact=True).click()


def stored_files(server: WebServer) -> list[Path]:
    folder = server.data_dir / "files"
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_creator_creates_a_room_uploads_and_a_member_downloads(
    pchat_web: WebServer, page: Page, pages: Pages
) -> None:
    await sign_in(page, pchat_web, "alice")
    room_id = await create_room(page, pchat_web, "Design Review", ["bob"])
    data = bytes(range(256)) * 200  # 51,200 bytes: binary, under the test cap
    await upload(page, "review notes.bin", data)
    link = page.get_by_role("link", name="review notes.bin")
    await expect(link).to_be_visible()
    await shot(page, "uploaded")
    file_url = await link.get_attribute("href")
    assert file_url is not None and file_url.startswith("/api/files/")

    # The member finds the secret room over SIP; a non-member's search does not.
    bob = await PchatClient.connect("127.0.0.1", pchat_web.cluster.sip, f"bob@{DOMAIN}", PASSWORD)
    carol = await PchatClient.connect(
        "127.0.0.1", pchat_web.cluster.sip, f"carol@{DOMAIN}", PASSWORD
    )
    try:
        await bob.sign_in()
        await carol.sign_in()
        found = await bob.search("Design")
        assert [c.get("name") for c in found] == ["Design Review"]
        assert found[0]["uri"] == f"ma-chan://{DOMAIN}/{room_id}"
        assert await carol.search("Design") == []
        # ... and sees the upload announced in the room, pointing at the same file.
        await bob.join(found[0]["uri"])
        [post] = await bob.history(found[0]["uri"])
        announced = parse_file_post(post.text)
        assert announced is not None and announced.url.endswith(file_url)
        assert (announced.name, announced.size) == ("review notes.bin", len(data))
    finally:
        await bob.close()
        await carol.close()

    # The member downloads the same bytes in their own browser (their session cookie).
    bob_page = await pages.new("bob")
    await sign_in(bob_page, pchat_web, "bob")
    got = await bob_page.context.request.get(pchat_web.url(file_url))
    assert got.status == 200
    assert hashlib.sha256(await got.body()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert got.headers["content-disposition"].startswith("attachment;")
    # Bob is a member, not a manager: the room's page is not his to change.
    response = await bob_page.goto(pchat_web.url(f"/rooms/{room_id}"))
    assert response is not None and response.status == 403

    # The non-member: the room and its file do not exist for them.
    async with aiohttp.ClientSession(pchat_web.base) as http:
        async with http.get(file_url, headers=basic("carol")) as resp:
            assert resp.status == 404
        async with http.get(file_url, headers=basic("bob")) as resp:
            assert resp.status == 200 and await resp.read() == data


async def test_oversize_upload_from_the_page_gets_413_and_stores_nothing(
    pchat_web: WebServer, page: Page
) -> None:
    await sign_in(page, pchat_web, "alice")
    await create_room(page, pchat_web, "Big Files", [])
    before = stored_files(pchat_web)
    await upload(page, "too-big.bin", b"x" * (MAX_UPLOAD_KB * 1000 + 1))
    status = page.locator("#upload-status")
    await expect(status).to_contain_text("413")
    await shot(page, "refused-413")
    assert stored_files(pchat_web) == before  # no file, no half-written .part
    await page.reload()
    await expect(page.get_by_text("No files yet.")).to_be_visible()


async def test_a_manager_cannot_change_another_managers_room(
    pchat_web: WebServer, page: Page, pages: Pages
) -> None:
    bob_page = await pages.new("bob")
    await sign_in(bob_page, pchat_web, "bob")
    bob_room = await create_room(bob_page, pchat_web, "Bobs Room", ["alice"])
    await sign_in(page, pchat_web, "alice")
    await create_room(page, pchat_web, "Alices Room", [])
    response = await page.goto(pchat_web.url(f"/rooms/{bob_room}"))
    assert response is not None and response.status == 403
    await expect(page.get_by_role("alert")).to_have_text("only the room's managers may change it")
    await shot(page, "not-your-room")
    # Her own valid session and token, posted straight at Bob's room: refused the same.
    token = await page.locator("input[name=csrf]").first.input_value()
    status = await page.evaluate(
        """async ([room, token]) => {
            const body = new URLSearchParams({csrf: token, name: "Taken over", privacy: "open"});
            const r = await fetch("/rooms/" + room, {method: "POST", body});
            return r.status;
        }""",
        [bob_room, token],
    )
    assert status == 403
    for op in ("disable",):
        status = await page.evaluate(
            """async ([room, op, token]) => (await fetch("/rooms/" + room + "/" + op,
                {method: "POST", body: new URLSearchParams({csrf: token})})).status""",
            [bob_room, op, token],
        )
        assert status == 403
    async with aiohttp.ClientSession(pchat_web.base) as http:
        async with http.get(f"/api/rooms/{bob_room}", headers=basic("bob")) as resp:
            room = await resp.json()
    assert (room["name"], room["privacy"], room["disabled"]) == ("Bobs Room", "secret", False)
    await page.goto(pchat_web.url("/rooms"))
    rows = page.locator("tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Alices Room")
