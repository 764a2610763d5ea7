"""bench/phase_stats.py: the interleaved schedule, the phase bootstrap and the verdict."""

from __future__ import annotations

import random

import pytest

from bench import phase_stats


def test_schedule_repeats_the_order() -> None:
    assert phase_stats.schedule("cffc", 2) == list("cffccffc")
    assert phase_stats.schedule("C F", 1) == ["c", "f"]


@pytest.mark.parametrize("order", ["", "cx", "ccc", "fff"])
def test_schedule_refuses_an_order_without_both_conditions(order: str) -> None:
    with pytest.raises(ValueError):
        phase_stats.schedule(order, 3)


def test_quantile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert phase_stats.quantile(values, 0.99) == 100.0
    assert phase_stats.quantile(values, 0.5) == 51.0
    assert phase_stats.quantile([], 0.99) == 0.0


def _phases(rng: random.Random, scale: float, n: int = 6) -> list[list[float]]:
    return [[rng.lognormvariate(1.0, 0.5) * scale for _ in range(250)] for _ in range(n)]


def test_same_distribution_gives_an_interval_around_one() -> None:
    rng = random.Random(1)
    point, low, high = phase_stats.bootstrap_ratio(_phases(rng, 1.0), _phases(rng, 1.0))
    assert low < 1.0 < high
    assert low <= point <= high
    assert phase_stats.verdict(low, high, 1.10) in ("met", "unresolved")


def test_a_doubled_tail_is_missed() -> None:
    rng = random.Random(2)
    _, low, high = phase_stats.bootstrap_ratio(_phases(rng, 2.0), _phases(rng, 1.0))
    assert low > 1.5
    assert phase_stats.verdict(low, high, 1.10) == "missed"


def test_one_slow_phase_widens_the_interval() -> None:
    """Resampling whole phases: one calm phase with a host hiccup makes the ratio uncertain,
    where resampling single samples would not see that the hiccup is one event."""
    rng = random.Random(3)
    calm = _phases(rng, 1.0)
    calm[2] = [v * 3 for v in calm[2]]
    _, low, high = phase_stats.bootstrap_ratio(_phases(rng, 1.0), calm)
    _, steady_low, steady_high = phase_stats.bootstrap_ratio(_phases(rng, 1.0), _phases(rng, 1.0))
    assert high - low > 2 * (steady_high - steady_low)


def test_bootstrap_is_reproducible_from_its_seed() -> None:
    rng = random.Random(4)
    files, calm = _phases(rng, 1.2), _phases(rng, 1.0)
    first = phase_stats.bootstrap_ratio(files, calm, resamples=300, seed=7)
    assert phase_stats.bootstrap_ratio(files, calm, resamples=300, seed=7) == first


def test_verdict_bounds() -> None:
    assert phase_stats.verdict(0.9, 1.10, 1.10) == "met"
    assert phase_stats.verdict(1.11, 1.5, 1.10) == "missed"
    assert phase_stats.verdict(1.0, 1.2, 1.10) == "unresolved"
