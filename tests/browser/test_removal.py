"""Deleting a room and removing a message in a real browser, with the keyboard: an
administrator removes a post from the history page and deletes the room after confirming;
the room's manager, who is not one, is offered neither (her room page keeps Disable) and is
refused both (403); a stranger to the secret room finds neither (404); nothing changes."""

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


async def test_an_administrator_removes_a_message_and_deletes_the_room_a_manager_cannot(
    pchat_web: WebServer, page: Page, pages: Pages
) -> None:
    await sign_in(page, pchat_web, "alice")
    room_id = await create_room(page, pchat_web, "Lab Notes", ["bob"])  # secret, alice manages
    await posts(pchat_web, room_id, "keep this", "oops, a secret")
    await upload(page, "notes.txt", b"some notes")
    await expect(page.get_by_role("link", name="notes.txt")).to_be_visible()
    assert len(stored_files(pchat_web)) == 1

    # The manager: her room page offers Disable, and neither the history nor the deletion.
    await page.goto(pchat_web.url(f"/rooms/{room_id}"))
    await expect(page.get_by_role("button", name="Disable room")).to_be_visible()
    await expect(page.get_by_role("link", name="Recent history: remove a message")).to_have_count(0)
    await expect(page.get_by_role("link", name="Delete this room…")).to_have_count(0)
    await shot(page, "manager")
    for path in (f"/rooms/{room_id}/history", f"/rooms/{room_id}/delete"):
        response = await page.goto(pchat_web.url(path))
        assert response is not None and response.status == 403
        await expect(page.get_by_role("alert")).to_contain_text("only administrators")
    await shot(page, "manager-refused")

    # Carol is no member of the secret room: to her it does not exist.
    carol = await pages.new("carol")
    await sign_in(carol, pchat_web, "carol")
    for path in (f"/rooms/{room_id}/history", f"/rooms/{room_id}/delete"):
        response = await carol.goto(pchat_web.url(path))
        assert response is not None and response.status == 404

    # The administrator, by keyboard: the history page lists the posts with their ids.
    root = await pages.new("root")
    await sign_in(root, pchat_web, "root")
    await root.goto(pchat_web.url(f"/rooms/{room_id}"))
    await root.get_by_role("link", name="Recent history: remove a message").focus()
    async with root.expect_navigation():
        await root.keyboard.press("Enter")
    row = root.get_by_role("row").filter(has_text="oops, a secret")
    await expect(row.get_by_role("cell").first).to_have_text("2")
    await shot(root, "history")
    await root.get_by_role("button", name="Remove message 2").focus()
    async with root.expect_navigation():
        await root.keyboard.press("Enter")
    await expect(root.get_by_role("status").first).to_have_text("Message removed.")
    await expect(root.get_by_text("oops, a secret")).to_have_count(0)
    await expect(root.get_by_text("keep this")).to_be_visible()
    await shot(root, "removed")

    # Deleting asks first: the box must be ticked (here with the space bar).
    await root.goto(pchat_web.url(f"/rooms/{room_id}"))
    await root.get_by_role("link", name="Delete this room…").click()
    await expect(root.get_by_text("its whole history and its 1 file")).to_be_visible()
    await root.get_by_role("button", name="Delete room").click()  # unticked: the form stays
    await asyncio.sleep(0.2)
    assert root.url.endswith(f"/rooms/{room_id}/delete")
    await root.get_by_label("Yes, delete this room and everything in it").focus()
    await root.keyboard.press("Space")
    await shot(root, "confirm")
    async with root.expect_navigation():
        await root.get_by_role("button", name="Delete room").click()
    await expect(root.get_by_role("status").first).to_have_text("Room deleted.")
    await expect(root.get_by_role("link", name="Lab Notes")).to_have_count(0)
    await shot(root, "deleted")
    assert stored_files(pchat_web) == []
    response = await page.goto(pchat_web.url(f"/rooms/{room_id}/history"))
    assert response is not None and response.status == 404
