"""The password-guess throttle (core/auth/throttle.py) on a fake clock."""

from __future__ import annotations

from core.auth.throttle import Throttle
from core.config import AuthSettings

USER = "sip:alice@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**fields: float) -> tuple[Throttle, Clock]:
    clock = Clock()
    settings = AuthSettings(
        free_attempts=int(fields.get("free", 10)),
        max_delay_s=fields.get("cap", 8.0),
        max_keys=int(fields.get("keys", 100)),
    )
    return Throttle(settings, clock), clock


def test_free_attempts_are_not_delayed_then_the_delay_grows_to_the_cap() -> None:
    throttle, clock = make()
    waits = []
    for _ in range(14):
        wait = throttle.admit(USER, "10.0.0.1")
        assert wait is not None
        waits.append(wait)
        clock.now += wait  # the attempt waits its turn, then fails
    assert waits[:11] == [0.0] * 11
    assert waits[11:] == [1.0, 2.0, 4.0]
    for _ in range(3):
        wait = throttle.admit(USER, "10.0.0.1")
        assert wait is not None
        clock.now += wait
    assert wait == 8.0  # the cap


def test_racing_attempts_are_spaced_or_refused_unchecked() -> None:
    throttle, _clock = make(free=2, cap=4.0)
    waits = [throttle.admit(USER, f"10.0.0.{i}") for i in range(6)]
    # every attempt counts before it is checked, so a burst on many connections is spaced
    assert waits[:5] == [0.0, 0.0, 0.0, 1.0, 3.0]
    assert waits[5] is None  # its turn is beyond the cap: refused without a check


def test_the_user_key_spans_addresses_and_the_address_key_spans_users() -> None:
    throttle, clock = make(free=3)
    for i in range(4):
        throttle.admit(USER, f"10.0.1.{i}")
    assert throttle.admit(USER.upper(), "10.9.9.9") == 1.0  # same user, new address, any case
    throttle2, _ = make(free=3)
    for i in range(4):  # four wrong guesses, each for another user, from one address
        throttle2.admit(f"sip:u{i}@example.com", "10.0.0.1")
        throttle2.failed(f"sip:u{i}@example.com", "10.0.0.1")
    assert throttle2.admit("sip:new@example.com", "10.0.0.1") == 1.0
    clock.now += 61  # a quiet minute forgets the key
    assert throttle.admit(USER, "10.0.1.0") == 0.0


def test_a_success_gives_its_attempt_back() -> None:
    throttle, _ = make(free=2)
    for _ in range(20):
        assert throttle.admit(USER, "10.0.0.1") == 0.0
        throttle.succeeded(USER, "10.0.0.1")


def test_the_table_is_bounded_and_forgets_the_least_recently_seen() -> None:
    throttle, _ = make(free=1, keys=10)
    throttle.admit(USER, "10.0.0.1")
    throttle.admit(USER, "10.0.0.1")
    for i in range(20):  # a flood of new names and addresses
        throttle.admit(f"sip:x{i}@example.com", f"10.1.0.{i}")
    assert len(throttle._keys) == 10
    assert throttle.admit(USER, "10.0.0.1") == 0.0  # alice was forgotten: oldest


def test_many_honest_sign_ins_at_once_through_one_address_are_never_slowed() -> None:
    """A restart of a big host, or an office behind one NAT: hundreds of users sign in
    at once from one address. Their attempts are in flight together, before any succeeds;
    only failures count against the address."""
    throttle, _ = make(free=10)
    users = [f"sip:u{i}@example.com" for i in range(300)]
    assert [throttle.admit(u, "10.0.0.1") for u in users] == [0.0] * 300
    for u in users:
        throttle.succeeded(u, "10.0.0.1")
    assert throttle.admit("sip:late@example.com", "10.0.0.1") == 0.0
