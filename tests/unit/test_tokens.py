"""SIP tokens: right shapes, never repeated, not shared with a forked child."""

from __future__ import annotations

import os

from core.sip import tokens
from core.sip.tokens import POOL_BYTES, TokenPool


def test_shapes() -> None:
    assert len(tokens.token_hex(6)) == 12
    int(tokens.token_hex(6), 16)
    nonce = tokens.token_urlsafe(24)
    assert len(nonce) == 32 and "=" not in nonce and "+" not in nonce and "/" not in nonce


def test_each_byte_is_handed_out_once_across_refills() -> None:
    pool = TokenPool()
    seen = [pool.take(8) for _ in range(3 * POOL_BYTES // 8 + 5)]
    assert len(set(seen)) == len(seen)
    assert all(len(t) == 8 for t in seen)
    assert len(pool.take(POOL_BYTES + 1)) == POOL_BYTES + 1


def test_a_forked_child_does_not_repeat_the_parents_tokens() -> None:
    tokens.token_hex(8)  # the pool is filled before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tokens, to the parent
        os.close(read_end)
        os.write(write_end, "".join(tokens.token_hex(8) for _ in range(4)).encode())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 1024).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    parent = "".join(tokens.token_hex(8) for _ in range(4))
    assert len(child) == 64 and child != parent
