"""File-service tokens: a short-lived, signed sign-in for HTTP file transfers (pure).

A SIP client that is signed in gets one in ``rpl:getservinfo`` (docs/protocol.md), and
sends it as ``Authorization: Bearer <token>`` to upload or download without asking its
user for the password again. The token names the user and its expiry and is signed with
HMAC-SHA256 under the install's secret; nothing is stored per token, so any worker (or
any host sharing the secret) checks it. It cannot be revoked before it expires: a
disabled or deleted user is refused because the check also looks the user up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_BYTES = 32  # HMAC-SHA256's block-size-independent strength: 256 bits
MAX_TOKEN_CHARS = 1024  # a longer header is refused before any decoding


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FileTokens:
    """Issues and checks tokens under one secret; the clock is the caller's (seconds)."""

    __slots__ = ("_secret", "_ttl_s")

    def __init__(self, secret: bytes, ttl_s: int) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"the file-token secret must hold at least {SECRET_BYTES} bytes")
        self._secret = secret
        self._ttl_s = ttl_s

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"pchat-file-token\n" + payload, hashlib.sha256).digest()

    def issue(self, user: str, now_s: float) -> str:
        payload = f"{user}\n{int(now_s) + self._ttl_s}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def user_of(self, token: str, now_s: float) -> str | None:
        """The signed user while the token is valid; None when forged, altered or expired."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            return None
        body, _, mac = token.partition(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._mac(payload)):
            return None
        user, _, expires = payload.decode(errors="replace").partition("\n")
        if not expires.isdigit() or int(expires) < now_s:
            return None
        return user
