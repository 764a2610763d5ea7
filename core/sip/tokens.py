"""Random tokens for SIP: tags, branches and digest nonces, cheaply.

``secrets.token_hex`` reads the kernel's generator once per token; a sign-in needs
four or five tokens, and those reads were about 3 % of a sign-in's CPU. Here one read
fills a pool that serves many tokens. The bytes come from the same source
(``os.urandom``), each byte is handed out once, and a forked child drops the pool it
inherited, so no two processes ever hand out the same token.
"""

from __future__ import annotations

import base64
import os

POOL_BYTES = 4096
"""One kernel read serves about 300 tokens; 4 KiB is small enough to keep per process."""


class TokenPool:
    """Bytes of ``os.urandom``, read a pool at a time and handed out once each."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        if n > POOL_BYTES:
            return os.urandom(n)
        if self._pos + n > len(self._buf):
            self._buf, self._pos = os.urandom(POOL_BYTES), 0
        start = self._pos
        self._pos = start + n
        return self._buf[start : start + n]

    def drop(self) -> None:
        """Forget the pool (a forked child must not reuse its parent's bytes)."""
        self._buf, self._pos = b"", 0


_POOL = TokenPool()
os.register_at_fork(after_in_child=_POOL.drop)


def token_hex(nbytes: int) -> str:
    """``nbytes`` random bytes as hex text (a tag or a Via branch)."""
    return _POOL.take(nbytes).hex()


def token_urlsafe(nbytes: int) -> str:
    """``nbytes`` random bytes as URL-safe base64 without padding (a nonce)."""
    return base64.urlsafe_b64encode(_POOL.take(nbytes)).rstrip(b"=").decode()
