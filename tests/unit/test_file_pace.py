"""The upload pace (files.upload_kb_s): a token bucket on a given clock, no sleeping."""

from __future__ import annotations

from core.files.places import Pace


def test_no_rate_never_waits() -> None:
    pace = Pace(0)
    assert pace.delay(0.0, 10**9) == 0.0


def test_within_the_rate_no_wait_past_it_the_excess_over_the_rate() -> None:
    pace = Pace(1000)  # 1,000 bytes/s, a burst of one second
    assert pace.delay(0.0, 1000) == 0.0
    assert pace.delay(0.0, 500) == 0.5  # 500 bytes over: half a second
    assert pace.delay(1.5, 1000) == 0.0  # 1.5 s later: 1,000 back, minus the 500 owed


def test_an_idle_worker_bursts_one_second_at_most() -> None:
    pace = Pace(1000)
    pace.delay(0.0, 1000)
    assert pace.delay(3600.0, 2000) == 1.0  # an hour idle refills one second, not 3,600
