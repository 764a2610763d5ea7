"""The pages' sign-in in a real browser: the form, the session cookie, sign-out."""

from __future__ import annotations

from playwright.async_api import Page

from tests.browser.conftest import WebServer, shot, sign_in
from tests.e2e.cluster import DOMAIN


async def test_signin_sets_a_strict_httponly_cookie_the_api_accepts(
    pchat_web: WebServer, page: Page
) -> None:
    await sign_in(page, pchat_web, "alice")
    await shot(page, "signed-in")
    [cookie] = await page.context.cookies()
    assert cookie["name"] == "pchat_session"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP here; test_signin_http checks TLS
    status = await page.evaluate("fetch('/api/rooms').then(r => r.status)")
    assert status == 200
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it


async def test_wrong_password_is_refused_without_a_cookie(pchat_web: WebServer, page: Page) -> None:
    await sign_in(page, pchat_web, "alice", password="wrong")
    await shot(page, "refused")
    assert await page.get_by_role("alert").inner_text() == "Wrong SIP address or password."
    assert await page.context.cookies() == []
    assert await page.get_by_label("SIP address").input_value() == f"alice@{DOMAIN}"


async def test_sign_out_ends_the_session(pchat_web: WebServer, page: Page) -> None:
    await sign_in(page, pchat_web, "bob")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign out").click()
    await shot(page, "signed-out")
    assert page.url == pchat_web.url("/signin")
    assert await page.context.cookies() == []
    assert await page.evaluate("fetch('/api/rooms').then(r => r.status)") == 401
