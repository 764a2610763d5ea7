"""The password-guess throttle: one table for SIP digest and HTTP Basic sign-ins (sans-IO).

An attempt is counted against its user before its password is checked (a success gives
the count back), so guesses racing on many connections are counted too, and against its
source address when it fails: honest sign-ins through one address never count.
Past ``free_attempts`` within ``window_s`` a key's attempts
are spaced ``base_delay_s`` apart, doubling per further attempt up to ``max_delay_s``. An
attempt whose turn is further off than ``max_delay_s`` is refused unchecked, so the answer
says nothing about the password. Nobody is locked out: an honest user (or a neighbour at
the same address) waits at most ``max_delay_s`` once the attacker's attempt is spent.

The table is per worker process: sign-ins for one user may land on any worker, so an
attacker gets at most ``workers`` times the rate of one table.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from core.config import AuthSettings


class _Key:
    __slots__ = ("attempts", "last", "next_turn")

    def __init__(self) -> None:
        self.attempts = 0
        self.last = 0.0
        self.next_turn = 0.0  # the earliest time the next attempt is checked


class Throttle:
    """Counts sign-in attempts per user and per address; says how long each must wait."""

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._s = settings
        self._clock = clock
        self._keys: OrderedDict[str, _Key] = OrderedDict()

    def admit(self, user: str, address: str) -> float | None:
        """Seconds to wait before this attempt's password is checked; None: refuse it
        unchecked (its turn is more than ``max_delay_s`` away). The attempt counts
        against its user now (guesses racing on many connections); against its address
        only if it fails (`failed`), so many honest users signing in at once through
        one address (a NAT, a restart of a big host) are never slowed."""
        if self._s.max_keys <= 0:
            return 0.0
        now = self._clock()
        user_key = self._key(f"u:{user.lower()}", now)
        address_key = self._key(f"a:{address}", now)
        turn = max(now, user_key.next_turn, address_key.next_turn)
        if turn - now > self._s.max_delay_s:
            return None
        self._count(user_key, now, turn)
        return turn - now

    def failed(self, user: str, address: str) -> None:
        """The admitted attempt had a wrong password (or named nobody): its address pays."""
        if self._s.max_keys <= 0:
            return
        now = self._clock()
        key = self._key(f"a:{address}", now)
        self._count(key, now, max(now, key.next_turn))

    def succeeded(self, user: str, address: str) -> None:
        """The admitted attempt had the right password: it does not count."""
        key = self._keys.get(f"u:{user.lower()}")
        if key is not None and key.attempts > 0:
            key.attempts -= 1

    def _count(self, key: _Key, now: float, turn: float) -> None:
        key.attempts += 1
        key.last = now
        key.next_turn = turn + self._delay(key.attempts)

    def retry_after_s(self) -> int:
        """What a refused attempt is told (Retry-After)."""
        return max(1, int(self._s.max_delay_s))

    def _delay(self, attempts: int) -> float:
        over = attempts - self._s.free_attempts
        if over <= 0:
            return 0.0
        return min(self._s.base_delay_s * 2.0 ** min(over - 1, 30), self._s.max_delay_s)

    def _key(self, name: str, now: float) -> _Key:
        key = self._keys.pop(name, None)
        if key is None or now - key.last > self._s.window_s:
            key = _Key()
        self._keys[name] = key  # most recently seen last
        while len(self._keys) > self._s.max_keys:
            self._keys.popitem(last=False)
        return key
