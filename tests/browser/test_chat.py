"""The browser chat client (GET /chat) in headless chromium, against `pchat serve`."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from client.client import PchatClient
from tests.browser import conftest
from tests.browser.conftest import WebServer, seed, shot, sign_in
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster

MESSAGES_JS = "els => els.map(e => [Number(e.dataset.msgid), e.querySelector('.text').textContent])"


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}@{DOMAIN}:{PASSWORD}".encode()).decode()


class ChatServer(WebServer):
    """The server with an open Lobby and alice's secret room (their URIs)."""

    lobby = ""
    secret = ""


async def add_rooms(server: WebServer) -> ChatServer:
    """An open Lobby and a secret room of alice's, through the management API."""
    chat = ChatServer(server.cluster)
    async with aiohttp.ClientSession(server.base) as http:
        for body in (
            {"name": "Lobby", "category": "general", "privacy": "open"},
            {"name": "Secret Plans", "category": "general", "privacy": "secret",
             "members": [f"sip:alice@{DOMAIN}"]},
        ):  # fmt: skip
            async with http.post(
                "/api/rooms", json=body, headers={"Authorization": basic("alice")}
            ) as resp:
                assert resp.status == 201, await resp.text()
                uri = (await resp.json())["uri"]
                if body["name"] == "Lobby":
                    chat.lobby = uri
                else:
                    chat.secret = uri
    return chat


async def second_page(browser: Browser, first: Page, **options: Any) -> Page:
    """Another user's page in a context of its own; its screenshots go beside the first's."""
    context = await browser.new_context(**options)
    context.set_default_timeout(conftest.ACTION_TIMEOUT_MS)
    page = await context.new_page()
    conftest._FOLDERS[page] = conftest._FOLDERS[first]
    return page


async def open_chat(page: Page, server: WebServer, user: str) -> Page:
    """Signs ``user`` in through the pages' form (the session cookie), opens the chat page
    and waits until its socket is connected."""
    await sign_in(page, server, user)
    await page.goto(server.url("/chat"))
    await page.wait_for_selector("body[data-conn=connected]")
    return page


async def open_room(page: Page, name: str) -> None:
    """By keyboard only: Ctrl+K to the room search, the name, Enter, Tab to the first
    result, Enter."""
    await page.keyboard.press("Control+k")
    await page.keyboard.press("Control+a")  # replaces an earlier search
    await page.keyboard.type(name)
    await page.keyboard.press("Enter")
    await page.locator("#results button.room", has_text=name).wait_for()
    await page.keyboard.press("Tab")
    focused = await page.evaluate("() => document.activeElement.textContent")
    assert focused == name, f"Tab went to {focused!r}"
    await page.keyboard.press("Enter")
    await page.wait_for_function(
        "name => document.getElementById('room-name').textContent === name", arg=name
    )


async def post(page: Page, text: str) -> None:
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_label("Message", exact=True).press("Enter")


async def shown(page: Page) -> list[tuple[int, str]]:
    return [tuple(x) for x in await page.eval_on_selector_all("#messages li", MESSAGES_JS)]  # type: ignore[misc]


async def wait_shown(page: Page, count: int) -> list[tuple[int, str]]:
    await page.wait_for_function(
        "n => document.querySelectorAll('#messages li').length >= n", arg=count
    )
    return await shown(page)


async def sip_client(server: WebServer, user: str) -> PchatClient:
    return await server.cluster.client(user)


@pytest.fixture
async def chat_web(pchat_web: ChatServer) -> ChatServer:
    return await add_rooms(pchat_web)


async def test_two_browsers_and_a_sip_client_see_each_others_posts_in_order(
    chat_web: ChatServer, page: Page, browser: Browser
) -> None:
    alice = await open_chat(page, chat_web, "alice")
    bob_page = await second_page(browser, page)
    try:
        bob = await open_chat(bob_page, chat_web, "bob")
        carol = await sip_client(chat_web, "carol")
        await carol.join(chat_web.lobby)
        await open_room(alice, "Lobby")
        await open_room(bob, "Lobby")
        expected: list[str] = []
        for i in range(3):
            for who, page_ in (("alice", alice), ("bob", bob)):
                text = f"{who} says {i}\nline two"
                await post(page_, text)
                expected.append(text)
                await wait_shown(page_, len(expected))
            text = f"carol says {i}"
            await carol.post(chat_web.lobby, text)
            expected.append(text)
        stored = [
            (m.msgid, m.text) for m in await carol.history(chat_web.lobby, query='<last cnt="50"/>')
        ]
        assert [t for _, t in stored] == expected
        for page_ in (alice, bob):
            assert await wait_shown(page_, len(expected)) == stored  # same ids, same order
        seen_by_carol = []
        while len(seen_by_carol) < 6:
            p = await carol.next_post()
            seen_by_carol.append((p.msgid, p.text))
        assert seen_by_carol == [s for s in stored if not s[1].startswith("carol")]
        await shot(alice, "alice")
        await shot(bob, "bob")
        await carol.close()
    finally:
        await bob_page.context.close()


async def test_history_scrolls_back_past_200_posts(chat_web: ChatServer, page: Page) -> None:
    carol = await sip_client(chat_web, "carol")
    await carol.join(chat_web.lobby)
    ids = [await carol.post(chat_web.lobby, f"post {i}") for i in range(230)]
    await carol.close()
    alice = await open_chat(page, chat_web, "alice")
    await open_room(alice, "Lobby")
    await wait_shown(alice, 50)
    await shot(alice, "latest")
    for _ in range(20):
        if await alice.locator("#log-top", has_text="The beginning of the room").count():
            break
        before = len(await shown(alice))
        await alice.locator("#log").evaluate("el => { el.scrollTop = 0; }")
        await alice.wait_for_function(
            "n => document.querySelectorAll('#messages li').length > n"
            " || document.getElementById('log-top').textContent.startsWith('The beginning')",
            arg=before,
        )
    got = await shown(alice)
    assert [m for m, _ in got] == ids  # every post once, in msgid order
    assert got[0][1] == "post 0"
    await shot(alice, "scrolled-to-the-beginning")


async def test_a_secret_room_never_shows_to_a_non_member(
    chat_web: ChatServer, page: Page, browser: Browser
) -> None:
    carol = await open_chat(page, chat_web, "carol")
    for text in ("", "Secret", "Plans"):
        await carol.get_by_label("Find rooms").fill(text)
        await carol.get_by_label("Find rooms").press("Enter")
        await carol.wait_for_selector("#results-section:not([hidden])")
        await carol.wait_for_function(
            "() => document.getElementById('results').children.length > 0"
        )
        assert "Secret" not in await carol.locator("#side").inner_text()
    await shot(carol, "carol-searched")
    assert chat_web.secret not in await carol.content()
    alice_page = await second_page(browser, page)
    try:
        alice = await open_chat(alice_page, chat_web, "alice")
        await open_room(alice, "Secret Plans")  # a member finds and opens it
        assert "Secret Plans" in await alice.locator("#member").inner_text()
        await shot(alice, "alice-a-member-sees-it")
    finally:
        await alice_page.context.close()


async def test_dates_show_in_the_browsers_time_zone(
    chat_web: ChatServer, page: Page, browser: Browser
) -> None:
    zone = "Pacific/Chatham"  # UTC+13:45: no other zone shares its minutes
    chatham = await second_page(browser, page, timezone_id=zone, locale="en-US")
    try:
        carol = await sip_client(chat_web, "carol")
        await carol.join(chat_web.lobby)
        await carol.post(chat_web.lobby, "what time is it")
        [stored] = await carol.history(chat_web.lobby)
        await carol.close()
        alice = await open_chat(chatham, chat_web, "alice")
        await open_room(alice, "Lobby")
        shown_time = await alice.locator("#messages time").first.inner_text()
        local = datetime.fromisoformat(stored.ts.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
        hour = local.hour % 12 or 12
        assert f"{hour}:{local.minute:02d} {'AM' if local.hour < 12 else 'PM'}" in shown_time
        assert await alice.locator("#messages time").first.get_attribute("datetime") == stored.ts
        await shot(alice, "chatham-time")
    finally:
        await chatham.context.close()


DROP_JS = """async () => {
  const dt = new DataTransfer();
  dt.items.add(new File(["hello, file"], "notes.txt", {type: "text/plain"}));
  const drop = new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true});
  document.getElementById("log").dispatchEvent(drop);
}"""


async def test_a_dropped_file_is_uploaded_and_linked_for_download(
    chat_web: ChatServer, page: Page, browser: Browser
) -> None:
    alice = await open_chat(page, chat_web, "alice")
    await open_room(alice, "Lobby")
    bob = await open_chat(await second_page(browser, page), chat_web, "bob")
    try:
        await open_room(bob, "Lobby")
        await alice.evaluate(DROP_JS)
        link = bob.locator("#messages a[download]")
        await link.wait_for()
        assert await link.inner_text() == "notes.txt"  # the server's file post, shown as a file
        await alice.locator("#messages a[download]").wait_for()
        for page_ in (alice, bob):  # announced once, by the server: no second post
            assert await page_.locator("#messages li", has_text="notes.txt").count() == 1
        href = await link.get_attribute("href")
        assert await bob.evaluate("h => fetch(h).then(r => r.text())", href) == "hello, file"
        await shot(bob, "file-link")
    finally:
        await bob.context.close()


# ---- kill -9 of the browser's worker ------------------------------------------------------


@pytest.fixture
async def two_workers(tmp_path: Path) -> AsyncIterator[ChatServer]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    await seed(data_dir)
    cluster = Cluster(data_dir, 2)
    try:
        await cluster.start()
        yield await add_rooms(WebServer(cluster))
    finally:
        await cluster.stop()


async def poster_elsewhere(server: WebServer, avoid: int) -> PchatClient:
    """A SIP client whose connection is not on worker ``avoid`` (SO_REUSEPORT spreads them)."""
    for _ in range(30):
        client = await server.cluster.client("carol")
        if client.server_worker != avoid:
            return client
        await client.close()
    raise AssertionError("every SIP connection landed on the browser's worker")


async def post_retrying(client: PchatClient, room: str, text: str) -> int:
    """Posts until acknowledged: while the room's owner is down the answer is 503."""
    for _ in range(200):
        try:
            return await client.post(room, text)
        except Exception:  # 503 while the owner restarts, or a timeout
            await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} was never acknowledged")


async def test_kill_9_of_the_browsers_worker_reconnects_and_catches_up(
    two_workers: ChatServer, page: Page
) -> None:
    alice = await open_chat(page, two_workers, "alice")
    session = await alice.evaluate("() => document.body.dataset.session")
    victim = int(session.split(".")[0])
    carol = await poster_elsewhere(two_workers, victim)
    await carol.join(two_workers.lobby)
    await open_room(alice, "Lobby")
    ids = [await carol.post(two_workers.lobby, f"before {i}") for i in range(5)]
    await wait_shown(alice, 5)
    pid = two_workers.cluster.worker_pids()[victim]
    os.kill(pid, signal.SIGKILL)
    await alice.wait_for_selector("body[data-conn=reconnecting]")
    await shot(alice, "reconnecting")
    await post(alice, "typed while reconnecting")  # sent again with its key once back
    for i in range(10):
        ids.append(await post_retrying(carol, two_workers.lobby, f"during {i}"))
    await alice.wait_for_selector("body[data-conn=connected]", timeout=30_000)
    for i in range(3):
        ids.append(await post_retrying(carol, two_workers.lobby, f"after {i}"))
    history = [
        (m.msgid, m.text) for m in await carol.history(two_workers.lobby, query='<last cnt="100"/>')
    ]
    assert "typed while reconnecting" in [t for _, t in history]
    got = await wait_shown(alice, len(history))
    assert got == history  # no gap, no duplicate, the same msgids as the store
    assert set(ids) <= {m for m, _ in got}
    await shot(alice, "caught-up")
    await carol.close()
