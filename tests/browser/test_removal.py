"""Deleting a room and removing a message in a real browser, with the keyboard: a manager
removes a post from the history page and deletes the room after confirming; a member who
does not manage it is refused both, and nothing changes."""

from __future__ import annotations

import asyncio

from playwright.async_api import Page, expect

from client.client import PchatClient
from tests.browser.conftest import Pages, WebServer, shot, sign_in
from tests.browser.test_my_rooms import create_room, stored_files, upload
from tests.e2e.cluster import DOMAIN, PASSWORD


async def posts(server: WebServer, room_id: str, *texts: str) -> None:
    alice = await PchatClient.connect("127.0.0.1", server.cluster.sip, f"alice@{DOMAIN}", PASSWORD)
    try:
        await alice.sign_in()
        await alice.join(f"ma-chan://{DOMAIN}/{room_id}")
        for text in texts:
            await alice.post(f"ma-chan://{DOMAIN}/{room_id}", text)
    finally:
        await alice.close()


async def test_a_manager_removes_a_message_and_deletes_the_room_a_member_cannot(
    pchat_web: WebServer, page: Page, pages: Pages
) -> None:
    await sign_in(page, pchat_web, "alice")
    room_id = await create_room(page, pchat_web, "Lab Notes", ["bob"])
    await posts(pchat_web, room_id, "keep this", "oops, a secret")
    await upload(page, "notes.txt", b"some notes")
    await expect(page.get_by_role("link", name="notes.txt")).to_be_visible()
    assert len(stored_files(pchat_web)) == 1

    # A member who does not manage the room: 403 on both pages, and on a forged form.
    bob = await pages.new("bob")
    await sign_in(bob, pchat_web, "bob")
    for path in (f"/rooms/{room_id}/history", f"/rooms/{room_id}/delete"):
        response = await bob.goto(pchat_web.url(path))
        assert response is not None and response.status == 403
        await expect(bob.get_by_role("alert")).to_contain_text("only the room's managers")
    await shot(bob, "refused")

    # The manager, by keyboard: the history page lists the posts with their ids.
    await page.goto(pchat_web.url(f"/rooms/{room_id}"))
    await page.get_by_role("link", name="Recent history: remove a message").focus()
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    row = page.get_by_role("row").filter(has_text="oops, a secret")
    await expect(row.get_by_role("cell").first).to_have_text("2")
    await shot(page, "history")
    await page.get_by_role("button", name="Remove message 2").focus()
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await expect(page.get_by_role("status").first).to_have_text("Message removed.")
    await expect(page.get_by_text("oops, a secret")).to_have_count(0)
    await expect(page.get_by_text("keep this")).to_be_visible()
    await shot(page, "removed")

    # Deleting asks first: the box must be ticked (here with the space bar).
    await page.goto(pchat_web.url(f"/rooms/{room_id}"))
    await page.get_by_role("link", name="Delete this room…").click()
    await expect(page.get_by_text("its whole history and its 1 file")).to_be_visible()
    await page.get_by_role("button", name="Delete room").click()  # unticked: the form stays
    await asyncio.sleep(0.2)
    assert page.url.endswith(f"/rooms/{room_id}/delete")
    await page.get_by_label("Yes, delete this room and everything in it").focus()
    await page.keyboard.press("Space")
    await shot(page, "confirm")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Delete room").click()
    await expect(page.get_by_role("status").first).to_have_text("Room deleted.")
    await expect(page.get_by_role("link", name="Lab Notes")).to_have_count(0)
    await shot(page, "deleted")
    assert stored_files(pchat_web) == []
    response = await bob.goto(pchat_web.url(f"/rooms/{room_id}/history"))
    assert response is not None and response.status == 404
