"""A page of another origin cannot make a signed-in user's browser change anything.

The attacker's page is served from a second local origin (127.0.0.1 on another port: the
same site to the browser, so the session cookie IS sent and SameSite does not help; the
Origin check and the session's token must refuse it).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Page, expect

from tests.browser.conftest import WebServer, shot, sign_in
from tests.e2e.cluster import DOMAIN, PASSWORD

_EVIL = """<!doctype html><html><body><h1>Win a prize</h1>
<form id="f" method="post" action="{target}">
<input type="hidden" name="csrf" value="guessed">
</form>
<script>document.getElementById("f").submit();</script>
</body></html>"""

_EVIL_FETCH = """<!doctype html><html><body><h1>Win a prize</h1>
<p id="out">waiting</p>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: "{{}}"}})
  .then(() => document.getElementById("out").textContent = "sent",
        () => document.getElementById("out").textContent = "failed");
</script></body></html>"""


@pytest.fixture
async def evil_site() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """(base URL, pages by path): a second origin serving whatever the test puts there."""
    pages: dict[str, str] = {}

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.path], content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", pages
    finally:
        await runner.cleanup()


async def room_state(server: WebServer, room: str) -> dict[str, object]:
    token = base64.b64encode(f"alice@{DOMAIN}:{PASSWORD}".encode()).decode()
    async with aiohttp.ClientSession(server.base) as http:
        async with http.get(f"/api/rooms/{room}", headers={"Authorization": f"Basic {token}"}) as r:
            assert r.status == 200
            found: dict[str, object] = await r.json()
            return found


async def test_a_form_posted_from_another_origin_is_refused(
    pchat_web: WebServer, page: Page, evil_site: tuple[str, dict[str, str]]
) -> None:
    await sign_in(page, pchat_web, "alice")
    await page.goto(pchat_web.url("/rooms/new"))
    await page.get_by_label("Name").fill("Target")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Create room").click()
    room = page.url.rsplit("/", 1)[1].split("?")[0]
    base, pages = evil_site
    pages["/prize"] = _EVIL.format(target=pchat_web.url(f"/rooms/{room}/disable"))
    pages["/prize2"] = _EVIL_FETCH.format(target=pchat_web.url(f"/api/rooms/{room}/disable"))

    async with page.expect_response(pchat_web.url(f"/rooms/{room}/disable")) as answer:
        await page.goto(f"{base}/prize")
    response = await answer.value
    assert response.status == 403
    assert response.request.headers.get("origin") == base  # it did come from there
    await expect(page.get_by_text("cross-origin requests are refused")).to_be_visible()
    await shot(page, "refused-form")

    await page.goto(f"{base}/prize2")
    await expect(page.locator("#out")).not_to_have_text("waiting")
    await shot(page, "refused-fetch")
    assert (await room_state(pchat_web, room))["disabled"] is False

    # The same form from the server's own page, with the session's token, does work:
    # the refusals above were the origin's, not a broken form.
    await page.goto(pchat_web.url(f"/rooms/{room}"))
    async with page.expect_navigation():
        await page.get_by_role("button", name="Disable room").click()
    await expect(page.get_by_role("status").first).to_have_text("Room disabled.")
    assert (await room_state(pchat_web, room))["disabled"] is True
