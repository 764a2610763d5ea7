"""Sign-in over HTTP: the one password check, the pages' session cookie and its form token.

* `Credentials` checks a SIP address and password against the stored digest HA1 through
  the worker's throttle (core/auth/throttle.py): HTTP Basic and the sign-in form both
  call it, so they cannot differ.
* `Sessions` signs a cookie with a per-install key (`Settings.session_key_path`, 0600):
  the user, an expiry and a random nonce, with an HMAC over those and the user's HA1. Any
  worker of any host with the key checks it without a shared table, and a password change
  voids every session at once. The cookie is HttpOnly, SameSite=Strict, Secure over TLS.
* A session's CSRF token is an HMAC of its cookie: bound to that sign-in, readable only
  by a page of this origin. Forms send it as ``csrf``; scripts as ``X-CSRF-Token``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from aiohttp import web

from core.auth.throttle import Throttle
from core.rooms.management import Actor
from core.sip.digest import compute_ha1
from core.store.base import ChatStore, UserRecord

SESSION_COOKIE = "pchat_session"
CSRF_FIELD = "csrf"
KEY_BYTES = 32  # HMAC-SHA256's block-size-safe key length
# A cookie is an address (at most a few hundred bytes) and 60 bytes of numbers and MAC;
# browsers keep 4 KB per cookie. Longer is refused before any HMAC is computed.
MAX_COOKIE_CHARS = 1024


class Throttled(msgspec.Struct, frozen=True):
    """The throttle refused the attempt unchecked; try again after this many seconds."""

    retry_after_s: int


def load_key(path: Path) -> bytes:
    """The install's session key, made on first use: written to a private temporary file
    and linked into place, so workers starting at once all read the one key, never half."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker made it first: theirs is the key
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path}: not a session key ({KEY_BYTES * 2} hex digits); remove it")
    return key


def ha1_of(record: UserRecord) -> str:
    """The HA1 a session and the API's CSRF token are bound to (the first, sorted)."""
    return sorted(record.ha1.values())[0] if record.ha1 else ""


class Credentials:
    """The one password check of every HTTP sign-in."""

    def __init__(self, store: ChatStore, domain: str, throttle: Throttle) -> None:
        self._store = store
        self._domain = domain
        self._throttle = throttle  # the worker's, shared with the SIP sign-in

    def address(self, username: str) -> str:
        """'Bob', 'sip:bob@example.com' -> 'bob@example.com' (the digest username)."""
        name = username.strip()
        name = name[4:] if name[:4].lower() == "sip:" else name
        name = name.lower()
        return name if "@" in name else f"{name}@{self._domain}"

    async def check(self, username: str, password: str, peer: str) -> Actor | Throttled | None:
        """The user, None for no such user or a wrong password, or Throttled."""
        address = self.address(username)
        wait = self._throttle.admit(f"sip:{address}", peer)
        if wait is None:
            return Throttled(self._throttle.retry_after_s())
        if wait > 0:
            await asyncio.sleep(wait)
        record = await self._store.get_user(f"sip:{address}")
        stored = record.ha1.get(f"MD5:{address}") if record else None
        if record is None or stored is None or not (record.enabled or record.admin):
            self._throttle.failed(f"sip:{address}", peer)
            return None  # unknown, or persistent chat is off for this user
        given = compute_ha1("MD5", address, self._domain, password)
        if not hmac.compare_digest(given, stored):
            self._throttle.failed(f"sip:{address}", peer)
            return None
        self._throttle.succeeded(f"sip:{address}", peer)
        return Actor(record.uri, admin=record.admin)


class Session(msgspec.Struct, frozen=True):
    """A request's signed-in user by cookie, with the token its changes must carry."""

    actor: Actor
    csrf: str


class Sessions:
    """Issues and checks the signed session cookie."""

    def __init__(
        self,
        store: ChatStore,
        key: bytes,
        ttl_s: float,
        *,
        always_secure: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._key = key
        self._ttl_s = ttl_s
        self._always_secure = always_secure  # public_url is https (TLS ends at a proxy)
        self._clock = clock

    def _mac(self, uri: str, expires: int, nonce: str, ha1: str) -> str:
        text = f"pchat-session\n{uri}\n{expires}\n{nonce}\n{ha1}"
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def csrf_for(self, cookie: str) -> str:
        return hmac.new(self._key, f"pchat-form\n{cookie}".encode(), hashlib.sha256).hexdigest()

    async def issue(self, actor: Actor) -> str:
        """A new cookie value for a user who just signed in."""
        record = await self._store.get_user(actor.uri)
        ha1 = ha1_of(record) if record else ""
        expires = int(self._clock() + self._ttl_s)
        nonce = secrets.token_urlsafe(12)
        user = base64.urlsafe_b64encode(actor.uri.encode()).decode().rstrip("=")
        return f"{user}.{expires}.{nonce}.{self._mac(actor.uri, expires, nonce, ha1)}"

    async def session(self, request: web.Request) -> Session | None:
        """The cookie's session if it is genuine, unexpired, and its user still may sign
        in with the password it was made under; else None."""
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not cookie or len(cookie) > MAX_COOKIE_CHARS or cookie.count(".") != 3:
            return None
        user, expires_text, nonce, mac = cookie.split(".")
        try:
            uri = base64.urlsafe_b64decode(user + "=" * (-len(user) % 4)).decode()
            expires = int(expires_text)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if expires < self._clock():
            return None
        record = await self._store.get_user(uri)
        if record is None or not (record.enabled or record.admin):
            return None
        if not hmac.compare_digest(mac, self._mac(uri, expires, nonce, ha1_of(record))):
            return None
        return Session(Actor(record.uri, admin=record.admin), self.csrf_for(cookie))

    def secure(self, request: web.Request) -> bool:
        return self._always_secure or request.secure

    def set_cookie(self, response: web.StreamResponse, request: web.Request, value: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=int(self._ttl_s),
            path="/",
            httponly=True,
            samesite="Strict",
            secure=self.secure(request),
        )

    def clear_cookie(self, response: web.StreamResponse, request: web.Request) -> None:
        response.del_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=self.secure(request)
        )
