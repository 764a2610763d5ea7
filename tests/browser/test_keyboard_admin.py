"""The pages by keyboard alone, a room's later changes, and the administrators' pages."""

from __future__ import annotations

import aiohttp
from playwright.async_api import Page, expect

from tests.browser.conftest import WebServer, shot, sign_in
from tests.browser.test_my_rooms import basic, create_room
from tests.e2e.cluster import DOMAIN, PASSWORD


async def test_sign_in_and_create_a_room_with_the_keyboard_only(
    pchat_web: WebServer, page: Page
) -> None:
    await page.goto(pchat_web.url("/signin"))
    await expect(page.get_by_label("SIP address")).to_be_focused()  # autofocus
    await page.keyboard.type(f"alice@{DOMAIN}")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert page.url == pchat_web.url("/rooms")
    link = page.get_by_role("link", name="Create a room")
    await link.focus()
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await page.get_by_label("Name").focus()
    await page.keyboard.type("Typed Room")
    await page.keyboard.press("Tab")  # to "Check name"
    await expect(page.get_by_role("button", name="Check name")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#name-check")).to_have_text("'Typed Room' is free.")
    await shot(page, "keyboard-form")
    await page.get_by_role("button", name="Create room").focus()
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Typed Room")


async def test_a_manager_renames_changes_roles_and_disables_a_room(
    pchat_web: WebServer, page: Page
) -> None:
    await sign_in(page, pchat_web, "alice")
    room = await create_room(page, pchat_web, "Old Name", ["bob"])
    await page.get_by_label("Name").fill("New Name")
    await page.get_by_label("Open: anyone may find and read it").check()
    await page.get_by_label("Type").select_option("auditorium")
    await page.get_by_role("group", name="Presenters").get_by_label(f"erin@{DOMAIN} (Erin)").check()
    await page.get_by_role("group", name="Members").get_by_label(f"bob@{DOMAIN} (Bob)").uncheck()
    filter_box = page.get_by_label("Filter managers")
    await filter_box.fill("car")
    managers = page.get_by_role("group", name="Managers")
    await expect(managers.get_by_label(f"bob@{DOMAIN} (Bob)")).to_be_hidden()
    await managers.get_by_label(f"carol@{DOMAIN} (Carol)").check()
    await shot(page, "editing")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("status").first).to_have_text("Changes saved.")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Disable room").click()
    await expect(page.get_by_text("This room is disabled")).to_be_visible()
    await shot(page, "disabled")
    async with aiohttp.ClientSession(pchat_web.base) as http:
        async with http.get(f"/api/rooms/{room}", headers=basic("alice")) as resp:
            got = await resp.json()
    assert (got["name"], got["privacy"], got["type"], got["disabled"]) == (
        "New Name", "open", "auditorium", True,
    )  # fmt: skip
    assert got["members"] == []
    assert got["presenters"] == [f"sip:erin@{DOMAIN}"]
    assert got["managers"] == [f"sip:alice@{DOMAIN}", f"sip:carol@{DOMAIN}"]


async def test_an_administrator_changes_a_user_and_a_category(
    pchat_web: WebServer, page: Page
) -> None:
    await sign_in(page, pchat_web, "root")
    await page.get_by_role("link", name="Users").click()
    await page.get_by_label("Find users").fill("erin")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Find").click()
    async with page.expect_navigation():
        await page.get_by_role("button", name=f"Make administrator erin@{DOMAIN} (Erin)").click()
    await expect(page.get_by_role("status").first).to_have_text("User changed.")
    await expect(page.locator("tbody tr")).to_have_count(1)  # still the search's result
    await shot(page, "users")
    await page.get_by_role("link", name="Categories").click()
    await page.get_by_role("link", name="General").click()
    await page.get_by_label("File uploads").uncheck()
    await page.get_by_role("group", name="Creators").get_by_label(f"erin@{DOMAIN} (Erin)").check()
    async with page.expect_navigation():
        await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("status").first).to_have_text("Changes saved.")
    await shot(page, "category")
    async with aiohttp.ClientSession(pchat_web.base) as http:
        async with http.get("/api/categories", headers=basic("erin")) as resp:
            [general] = await resp.json()
        assert "allowed" in general  # erin is an administrator now: she sees the wall
    assert general["file_upload"] is False
    assert general["creators"] == [f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}", f"sip:erin@{DOMAIN}"]
