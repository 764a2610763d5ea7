"""The password-guess throttle: one table for SIP digest and HTTP Basic sign-ins (sans-IO).

Every attempt is counted against two keys, the user and the source address, before its
password is checked (a success gives the count back), so attempts racing on many
connections are counted too. Past ``free_attempts`` within ``window_s`` a key's attempts
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
        unchecked (its turn is more than ``max_delay_s`` away)."""
        if self._s.max_keys <= 0:
            return 0.0
        now = self._clock()
        keys = [self._key(f"u:{user.lower()}", now), self._key(f"a:{address}", now)]
        turn = max(now, *(k.next_turn for k in keys))
        if turn - now > self._s.max_delay_s:
            return None
        for key in keys:
            key.attempts += 1
            key.last = now
            key.next_turn = turn + self._delay(key.attempts)
        return turn - now

    def succeeded(self, user: str, address: str) -> None:
        """The attempt admitted for these keys had the right password: it does not count."""
        for name in (f"u:{user.lower()}", f"a:{address}"):
            key = self._keys.get(name)
            if key is not None and key.attempts > 0:
                key.attempts -= 1

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
