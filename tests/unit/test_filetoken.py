"""core/auth/filetoken.py: a token signs in its user until it expires, and nothing else."""

from __future__ import annotations

import pytest

from core.auth.filetoken import FileTokens

SECRET = b"k" * 32
ALICE = "sip:alice@example.com"


def test_token_names_its_user_until_it_expires() -> None:
    tokens = FileTokens(SECRET, ttl_s=600)
    token = tokens.issue(ALICE, now_s=1000.0)
    assert tokens.user_of(token, now_s=1000.0) == ALICE
    assert tokens.user_of(token, now_s=1600.0) == ALICE
    assert tokens.user_of(token, now_s=1601.0) is None


def test_another_secret_or_an_altered_token_is_refused() -> None:
    token = FileTokens(SECRET, ttl_s=600).issue(ALICE, now_s=0)
    assert FileTokens(b"j" * 32, ttl_s=600).user_of(token, now_s=0) is None
    body, mac = token.split(".")
    forged = FileTokens(b"j" * 32, ttl_s=600).issue("sip:mallory@example.com", now_s=0)
    assert FileTokens(SECRET, ttl_s=600).user_of(f"{forged.split('.')[0]}.{mac}", 0) is None
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert FileTokens(SECRET, ttl_s=600).user_of(f"{body}.{flipped}", 0) is None


@pytest.mark.parametrize("junk", ["", ".", "a.b.c", "!!.??", "x" * 2000, "YWJj"])
def test_junk_is_refused_without_an_error(junk: str) -> None:
    assert FileTokens(SECRET, ttl_s=600).user_of(junk, now_s=0) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        FileTokens(b"short", ttl_s=1)
