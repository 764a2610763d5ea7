"""The pages' sign-in over real HTTP against a running worker: the cookie, its token, the
origin checks, the throttle, the key file (shards/web/signin.py, pages_signin.py)."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from core.config import AuthSettings
from core.rooms.management import Actor
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord
from shards.web.signin import SESSION_COOKIE, Sessions, load_key
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import (
    DOMAIN,
    PASSWORD,
    add_user,
    make_settings,
    signed_in,
    test_certificate,
)


def base(server: RunningWorker, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.http_port}"


def browser(server: RunningWorker) -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 and sends this server's Origin on forms."""
    return aiohttp.ClientSession(base(server), cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(
    http: aiohttp.ClientSession, server: RunningWorker, user: str = "alice", pw: str = PASSWORD
) -> aiohttp.ClientResponse:
    form = {"user": f"{user}@{DOMAIN}", "password": pw, "next": "/rooms"}
    origin = {"Origin": base(server)}
    async with http.post("/signin", data=form, headers=origin, allow_redirects=False) as resp:
        await resp.read()
        return resp


def set_cookie(http: aiohttp.ClientSession, server: RunningWorker, value: str) -> None:
    http.cookie_jar.clear()
    http.cookie_jar.update_cookies({SESSION_COOKIE: value}, URL(base(server)))


async def cookie_of(http: aiohttp.ClientSession) -> str:
    [found] = [c.value for c in http.cookie_jar if c.key == SESSION_COOKIE]
    return found


async def status(http: aiohttp.ClientSession, method: str, path: str, **kw: object) -> int:
    async with http.request(method, path, allow_redirects=False, **kw) as resp:  # type: ignore[arg-type]
        await resp.read()
        return resp.status


async def test_signin_cookie_is_strict_httponly_and_the_api_takes_it(
    server: RunningWorker,
) -> None:
    async with browser(server) as http:
        resp = await sign_in(http, server)
        assert resp.status == 303 and resp.headers["Location"] == "/rooms"
        raw = resp.headers["Set-Cookie"]
        assert "HttpOnly" in raw and "SameSite=Strict" in raw and "Secure" not in raw
        assert await status(http, "GET", "/api/rooms") == 200
        assert await status(http, "GET", "/rooms") == 200


async def test_a_tampered_cookie_a_new_password_or_a_disabled_user_ends_the_session(
    server: RunningWorker,
) -> None:
    async with browser(server) as http:
        await sign_in(http, server)
        good = await cookie_of(http)
        forged = good.replace("c2lwOmFsaWNl", "c2lwOmJvYkBl")  # another user, same MAC
        for value in (good[:-1] + ("0" if good[-1] != "0" else "1"), forged, "x" * 2000):
            set_cookie(http, server, value)
            assert await status(http, "GET", "/api/rooms") == 401
        set_cookie(http, server, good)
        assert await status(http, "GET", "/api/rooms") == 200
        record = await server.store.get_user(f"sip:alice@{DOMAIN}")
        assert record is not None
        record.ha1 = user_ha1s(record.uri, DOMAIN, "a-new-password")
        await server.store.put_user(record)
        assert await status(http, "GET", "/api/rooms") == 401  # old password's sessions end
        await sign_in(http, server, pw="a-new-password")
        assert await status(http, "GET", "/api/rooms") == 200
        record.enabled = False
        await server.store.put_user(record)
        assert await status(http, "GET", "/api/rooms") == 401


async def test_an_expired_session_is_refused(server: RunningWorker) -> None:
    now = [1_000_000.0]
    sessions = Sessions(server.store, b"k" * 32, 60.0, clock=lambda: now[0])
    value = await sessions.issue(Actor(f"sip:alice@{DOMAIN}"))
    request = make_mocked_request("GET", "/", headers={"Cookie": f"{SESSION_COOKIE}={value}"})
    assert (await sessions.session(request)) is not None
    now[0] += 61
    assert (await sessions.session(request)) is None


async def test_a_cookies_changes_need_its_session_token(server: RunningWorker) -> None:
    creators = [f"sip:alice@{DOMAIN}"]
    await server.store.put_category(CategoryRecord(id="general", name="G", creators=creators))
    body = {"name": "Made with a cookie", "category": "general"}
    async with browser(server) as http:
        await sign_in(http, server)
        # No Origin, no token: a cookie is only ever a browser's, so the token is needed.
        assert await status(http, "POST", "/api/rooms", json=body) == 403
        async with http.get("/api/csrf") as resp:
            token = (await resp.json())["token"]
        assert await status(http, "POST", "/api/rooms", json=body,
                            headers={"X-CSRF-Token": "0" * 64}) == 403  # fmt: skip
        assert await status(http, "POST", "/api/rooms", json=body,
                            headers={"X-CSRF-Token": token}) == 201  # fmt: skip
        # A second sign-in is another session with another token.
        async with browser(server) as other:
            await sign_in(other, server)
            async with other.get("/api/csrf") as resp:
                assert (await resp.json())["token"] != token


async def test_page_forms_need_this_origin_a_form_type_and_the_token(
    server: RunningWorker,
) -> None:
    async with browser(server) as http:
        await sign_in(http, server)
        async with http.get("/rooms") as resp:
            page = await resp.text()
        token = page.split('name="csrf" value="')[1].split('"')[0]
        own, evil = {"Origin": base(server)}, {"Origin": "http://evil.example"}
        form = {"csrf": token}
        assert await status(http, "POST", "/signout", data=form) == 403  # no Origin
        assert await status(http, "POST", "/signout", data=form, headers=evil) == 403
        assert await status(http, "POST", "/signout", data={"csrf": "x"}, headers=own) == 403
        assert await status(http, "POST", "/signout", json=form, headers=own) == 415
        assert await status(http, "GET", "/api/rooms") == 200  # still signed in
        assert await status(http, "POST", "/signout", data=form, headers=own) == 303
        assert await status(http, "GET", "/api/rooms") == 401


async def test_signin_goes_back_to_local_paths_only(server: RunningWorker) -> None:
    async with browser(server) as http:
        targets = [("/rooms/x?y=1", "/rooms/x?y=1"), ("//evil.example/", "/rooms"),
                   ("https://evil.example/", "/rooms"), ("/\\evil", "/rooms")]  # fmt: skip
        for target, expected in targets:
            form = {"user": f"alice@{DOMAIN}", "password": PASSWORD, "next": target}
            async with http.post("/signin", data=form, headers={"Origin": base(server)},
                                 allow_redirects=False) as resp:  # fmt: skip
                assert resp.headers["Location"] == expected
        http.cookie_jar.clear()
        async with http.get("/rooms/anything", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/signin?next=%2Frooms%2Fanything"


async def test_the_form_is_throttled_like_every_sign_in(tmp_path: Path, redis_url: str) -> None:
    settings = msgspec.structs.replace(
        make_settings(tmp_path, redis_url),
        auth=AuthSettings(free_attempts=1, base_delay_s=1.0, max_delay_s=1.0),
    )
    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        async with browser(worker) as http:
            # Guesses racing each other: past the free one they queue a second apart, and
            # those whose turn is over max_delay_s away are refused unchecked.
            tried = await asyncio.gather(*(sign_in(http, worker, pw="wrong") for _ in range(5)))
            codes = sorted(r.status for r in tried)
            assert 401 in codes and 429 in codes and set(codes) == {401, 429}
            refused = next(r for r in tried if r.status == 429)
            assert int(refused.headers["Retry-After"]) >= 1
            assert SESSION_COOKIE not in {c.key for c in http.cookie_jar}
            # Once the queued guesses are spent (a refused client waits its Retry-After)
            # the right password works: no lock-out.
            await asyncio.sleep(int(refused.headers["Retry-After"]))
            assert (await sign_in(http, worker)).status == 303


async def test_the_cookie_is_secure_over_tls(tmp_path: Path, redis_url: str) -> None:
    cert, key = test_certificate(tmp_path)
    plain = make_settings(tmp_path, redis_url)
    settings = msgspec.structs.replace(
        plain,
        http=msgspec.structs.replace(plain.http, tls_cert=str(cert), tls_key=str(key)),
    )
    tls = ssl.create_default_context(cafile=str(cert))
    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        connector = aiohttp.TCPConnector(ssl=tls)
        async with aiohttp.ClientSession(base(worker, "https"), connector=connector) as http:
            form = {"user": f"alice@{DOMAIN}", "password": PASSWORD}
            async with http.post("/signin", data=form, headers={"Origin": base(worker, "https")},
                                 allow_redirects=False) as resp:  # fmt: skip
                assert resp.status == 303
                assert "Secure" in resp.headers["Set-Cookie"]


def test_the_session_key_is_private_and_one_per_install(tmp_path: Path) -> None:
    path = tmp_path / "web-session.key"
    assert not path.exists()
    key = load_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["web-session.key"]  # no temporaries
    path.write_text("short\n")
    with pytest.raises(ValueError, match="not a session key"):
        load_key(path)


async def test_workers_starting_at_once_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keys = await asyncio.gather(*(asyncio.to_thread(load_key, path) for _ in range(8)))
    assert len(set(keys)) == 1


async def test_getserverinfo_points_at_the_page(tmp_path: Path, redis_url: str) -> None:
    plain = make_settings(tmp_path, redis_url)
    public = msgspec.structs.replace(plain.http, public_url="https://chat.example.com/")
    async with run_worker(msgspec.structs.replace(plain, http=public)) as worker:
        await add_user(worker.store, "alice")
        client = await signed_in(worker)
        try:
            info = await client.command("cmd:getserverinfo", f'<sib domain="{DOMAIN}"/>')
            sib = info.data.find("sib") if info.data is not None else None
            assert sib is not None
            assert sib.get("roomManagementUrl") == "https://chat.example.com/rooms"
        finally:
            await client.close()
