"""Real-browser fixtures: headless Debian chromium driven by Playwright against `pchat serve`.

* `pchat_web`: a running server (`pchat serve`, its own redis and data dir, free ports)
  whose store was seeded before it started: users alice, bob, carol, erin (enabled),
  dave (persistent chat off) and root (an administrator), all with `PASSWORD`; a
  category "General" (everyone) whose creators are alice and bob; uploads capped at
  `MAX_UPLOAD_KB`.
* `browser`: one chromium per test (``executable_path=/usr/bin/chromium``: no browser can
  be downloaded here); `page`: a fresh context and page in it.
* Screenshots go to ``$PCHAT_TEST_ARTIFACTS`` or ``tests/artifacts/`` (gitignored), a
  folder per test: `shot(page, name)` during a test, and ``final-<outcome>.png`` after
  every test, failed ones included.

Tests are skipped, with the reason, only where chromium or playwright is missing:
scripts/setup installs both.
"""

from __future__ import annotations

import os
import re
import shutil
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.config import Settings
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord, UserRecord
from core.store.registry import make_store
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright
except ImportError:  # pragma: no cover - scripts/setup installs it
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("PCHAT_TEST_ARTIFACTS") or Path(__file__).parent.parent / "artifacts"
)
USERS = ("alice", "bob", "carol", "erin")
MAX_UPLOAD_KB = 100  # files.max_upload_kb of the test server: an oversize file stays small
ACTION_TIMEOUT_MS = 10_000  # a click or a load on a busy 2-core machine; far above normal


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = ""
    if async_playwright is None:
        reason = "the playwright package is missing (scripts/setup installs the dev extra)"
    elif not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (scripts/setup installs the Debian chromium package)"
    if reason:
        for item in items:
            if "tests/browser/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keeps each phase's report on the item, so the page fixture knows the outcome."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


class WebServer:
    """The running server as the tests see it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.base = f"http://127.0.0.1:{cluster.http}"
        self.data_dir = cluster.data_dir

    def url(self, path: str) -> str:
        return self.base + path


async def seed(data_dir: Path) -> None:
    """Users and a category, written to the store before the server starts."""
    settings = Settings(domain=DOMAIN, data_dir=str(data_dir))
    store = make_store(settings.store_url)
    await store.open()
    try:
        for name, enabled, admin in [*((u, True, False) for u in USERS), ("dave", False, False)]:
            uri = f"sip:{name}@{DOMAIN}"
            ha1 = user_ha1s(uri, DOMAIN, PASSWORD)
            await store.put_user(
                UserRecord(
                    uri=uri, display_name=name.title(), ha1=ha1, enabled=enabled, admin=admin
                )
            )
        root = f"sip:root@{DOMAIN}"
        await store.put_user(
            UserRecord(uri=root, ha1=user_ha1s(root, DOMAIN, PASSWORD), admin=True)
        )
        creators = [f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"]
        await store.put_category(CategoryRecord(id="general", name="General", creators=creators))
    finally:
        await store.close()


@pytest.fixture
async def pchat_web(tmp_path: Path) -> AsyncIterator[WebServer]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    await seed(data_dir)
    cluster = Cluster(data_dir, 1, env={"PCHAT_FILES__MAX_UPLOAD_KB": str(MAX_UPLOAD_KB)})
    try:
        await cluster.start()
        yield WebServer(cluster)
    finally:
        await cluster.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


def artifact_dir(node: pytest.Item) -> Path:
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", node.nodeid)
    shutil.rmtree(folder, ignore_errors=True)  # this run's pictures only
    folder.mkdir(parents=True, exist_ok=True)
    return folder


_FOLDERS: weakref.WeakKeyDictionary[Page, tuple[Path, str]] = weakref.WeakKeyDictionary()


async def shot(page: Page, name: str) -> Path:
    """A full-page screenshot kept as a test artefact (in the test's folder)."""
    folder, prefix = _FOLDERS[page]
    path = folder / f"{prefix}{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


class Pages:
    """Pages in separate browser contexts (each its own cookies: one per person)."""

    def __init__(self, browser: Browser, folder: Path) -> None:
        self._browser = browser
        self._folder = folder
        self._open: list[tuple[BrowserContext, Page]] = []

    async def new(self, label: str = "") -> Page:
        context = await self._browser.new_context()
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        opened = await context.new_page()
        _FOLDERS[opened] = (self._folder, f"{label}-" if label else "")
        self._open.append((context, opened))
        return opened

    async def close(self, outcome: str) -> None:
        """A last screenshot of each page (the failure's picture, if it failed), then closes."""
        for context, opened in self._open:
            try:
                await shot(opened, f"final-{outcome}")
            finally:
                await context.close()


@pytest.fixture
async def pages(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    """`await pages.new("bob")`: another person's page, screenshots in this test's folder."""
    opened = Pages(browser, artifact_dir(request.node))
    try:
        yield opened
    finally:
        report = getattr(request.node, "report_call", None)
        await opened.close(report.outcome if report is not None else "setup-failed")


@pytest.fixture
async def page(pages: Pages) -> Page:
    """The test's main page (its screenshots have no prefix)."""
    return await pages.new()


async def sign_in(page: Page, server: WebServer, user: str, password: str = PASSWORD) -> None:
    """Signs in through the form, as a person would, and waits for the page after it."""
    await page.goto(server.url("/signin"))
    await page.get_by_label("SIP address").fill(f"{user}@{DOMAIN}")
    await page.get_by_label("Password").fill(password)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Sign in").click()
