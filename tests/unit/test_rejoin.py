"""The gateway's re-joins after an owner forgot its sessions (shards/rejoin.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.errors import Forbidden, Overloaded
from core.rooms.events import Participant
from shards.rejoin import MAX_IN_FLIGHT, RETRY_WAITS_S, Rejoiner, gateway_grace_s


def _targets(n: int, room: str = "lobby") -> list[tuple[str, Participant]]:
    return [(room, Participant(f"4.{i}", f"sip:u{i}@example.com", 4)) for i in range(n)]


class Owner:
    """Answers re-joins: blocked until ``gate`` opens, failing with ``errors`` first."""

    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.errors = errors or []
        self.in_flight = 0
        self.most_in_flight = 0
        self.joined: list[tuple[str, str]] = []

    async def join(self, room_id: str, who: Participant) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            if self.errors:
                raise self.errors.pop(0)
            self.joined.append((room_id, who.session))
        finally:
            self.in_flight -= 1


class Waits:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def _settle(rejoiner: Rejoiner) -> None:
    for _ in range(10_000):
        if not rejoiner._tasks:
            return
        await asyncio.sleep(0)
    raise AssertionError("re-joins did not finish")


async def test_at_most_64_rejoins_are_in_flight_and_all_land() -> None:
    owner = Owner()
    owner.gate.clear()
    rejoiner = Rejoiner(owner.join, lambda room, session: True, Waits())
    rejoiner.add(_targets(500))
    for _ in range(5):
        await asyncio.sleep(0)
    assert owner.in_flight == MAX_IN_FLIGHT
    assert rejoiner.pending == 500 - MAX_IN_FLIGHT
    owner.gate.set()
    await _settle(rejoiner)
    assert owner.most_in_flight == MAX_IN_FLIGHT
    assert sorted(s for _, s in owner.joined) == sorted(f"4.{i}" for i in range(500))


async def test_a_queued_rejoin_is_not_queued_twice_but_one_in_flight_is() -> None:
    owner = Owner()
    owner.gate.clear()
    rejoiner = Rejoiner(owner.join, lambda room, session: True, Waits())
    rejoiner.add(_targets(100))
    await asyncio.sleep(0)
    rejoiner.add(_targets(100))  # a second Forgot, while the first burst is being worked
    # The 36 still queued are not doubled; the 64 in flight may have landed before the
    # owner forgot them again, so they are queued once more.
    assert rejoiner.pending == 100
    owner.gate.set()
    await _settle(rejoiner)
    assert len(owner.joined) == 100 + MAX_IN_FLIGHT
    assert len(set(owner.joined)) == 100


async def test_a_busy_owner_is_retried_with_growing_waits() -> None:
    owner = Owner([Overloaded("busy")] * 3)
    waits = Waits()
    rejoiner = Rejoiner(owner.join, lambda room, session: True, waits)
    rejoiner.add(_targets(1))
    await _settle(rejoiner)
    assert waits.waits == list(RETRY_WAITS_S[:3])
    assert owner.joined == [("lobby", "4.0")]


async def test_a_rejoin_is_given_up_after_5_tries_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = Owner([Overloaded("busy")] * 10)
    waits = Waits()
    rejoiner = Rejoiner(owner.join, lambda room, session: True, waits)
    with caplog.at_level(logging.WARNING, logger="shards.rejoin"):
        rejoiner.add(_targets(2))
        await _settle(rejoiner)
    assert owner.joined == []
    assert waits.waits == list(RETRY_WAITS_S) * 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # the first one, then the burst's count
    assert "403 until it joins again" in warnings[0]
    assert warnings[1] == "2 re-joins were given up in that burst"


async def test_a_session_that_left_or_a_refusal_is_not_retried() -> None:
    owner = Owner([Forbidden("not a member any more")])
    waits = Waits()
    left = {"4.1"}
    rejoiner = Rejoiner(owner.join, lambda room, session: session not in left, waits)
    rejoiner.add(_targets(3))
    await _settle(rejoiner)
    assert waits.waits == []
    assert owner.joined == [("lobby", "4.2")]  # 4.0 was refused, 4.1 had left


async def test_stop_cancels_the_rejoins_in_flight() -> None:
    owner = Owner()
    owner.gate.clear()
    rejoiner = Rejoiner(owner.join, lambda room, session: True, Waits())
    rejoiner.add(_targets(100))
    await asyncio.sleep(0)
    await asyncio.wait_for(rejoiner.stop(), 1.0)
    assert rejoiner.pending == 0 and not rejoiner._tasks


def test_the_owners_grace_covers_a_lease_round_a_request_and_the_retries() -> None:
    grace = gateway_grace_s(request_timeout_s=5.0, renew_s=0.5)
    assert grace == 11.5
    assert grace > sum(RETRY_WAITS_S) + 5.0 + 0.5


async def test_a_small_burst_starts_one_task_per_rejoin_and_a_later_one_is_picked_up() -> None:
    owner = Owner()
    rejoiner = Rejoiner(owner.join, lambda room, session: True, Waits())
    rejoiner.add(_targets(2))
    assert len(rejoiner._tasks) == 2
    await _settle(rejoiner)
    rejoiner.add(_targets(1, room="other"))
    await _settle(rejoiner)
    assert owner.joined == [("lobby", "4.0"), ("lobby", "4.1"), ("other", "4.0")]
