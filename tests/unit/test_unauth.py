"""UnauthCaps: per-address refusals, the total dropping the oldest, places given back."""

from __future__ import annotations

import resource

from shards.worker.unauth import UnauthCaps, effective_total


def test_per_address_refuses_the_new_and_the_total_drops_the_oldest() -> None:
    refused: list[str] = []
    closed: list[str] = []
    caps = UnauthCaps(3, 2, refused.append)
    a1 = caps.admit("a", lambda: closed.append("a1"))
    a2 = caps.admit("a", lambda: closed.append("a2"))
    assert a1 is not None and a2 is not None
    assert caps.admit("a", lambda: closed.append("a3")) is None
    assert refused == ["address"] and closed == []
    assert caps.admit("b", lambda: closed.append("b1")) is not None
    assert caps.admit("c", lambda: closed.append("c1")) is not None  # the total was full
    assert refused == ["address", "total"] and closed == ["a1"] and caps.held == 3
    caps.release(a1)  # its connection_lost comes later: a no-op
    assert caps.held == 3
    assert caps.admit("a", lambda: None) is not None  # "a" holds one place now, not two
    caps.release(a2)
    caps.release(a2)
    assert caps.held == 3


def test_the_total_stays_below_half_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        assert effective_total(10**9) == 10**9
        return
    assert effective_total(10**9) == soft // 2
    assert effective_total(0) == soft // 2
    assert effective_total(3) == 3
