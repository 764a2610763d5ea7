"""Interleaved phases of a bench (calm / loaded in turn) and the statistics that decide a
"moves by at most X %" target from them: the ratio of a quantile under load to the calm
one, with a 95 % interval got by resampling whole phases (a bootstrap), and a verdict.

Why whole phases: samples within one phase are not independent (a host's busy second
slows many posts in a row), so resampling single samples would give an interval that is
too narrow. Phases are the independent units; alternating them ("c f f c" per round)
spreads the host's drift over both conditions alike.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

Condition = Literal["c", "f"]  # calm, with files
Verdict = Literal["met", "missed", "unresolved"]

RESAMPLES = 2000  # the 2.5 / 97.5 % points of 2000 resamples move by < 1 % between seeds
CONFIDENCE = 0.95


def schedule(order: str, rounds: int) -> list[Condition]:
    """``order`` ("cffc": calm, files, files, calm) repeated ``rounds`` times."""
    phases = [c for c in order.replace(" ", "").lower()]
    if not phases or any(c not in "cf" for c in phases):
        raise ValueError(f"order must be a string of c and f, not {order!r}")
    if "c" not in phases or "f" not in phases:
        raise ValueError("order needs at least one calm (c) and one files (f) phase")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    return [c for _ in range(rounds) for c in phases]  # type: ignore[misc]


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile (0.0 for no values), as the bench's other figures are."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ratio(loaded: Sequence[float], calm: Sequence[float], q: float) -> float:
    return quantile(loaded, q) / max(quantile(calm, q), 1e-9)


def _pooled(phases: Sequence[Sequence[float]]) -> list[float]:
    return [v for phase in phases for v in phase]


def bootstrap_ratio(
    loaded: Sequence[Sequence[float]],
    calm: Sequence[Sequence[float]],
    q: float = 0.99,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(the pooled ratio, low, high): the quantile ``q`` of the loaded phases' samples over
    the calm phases', and its CONFIDENCE interval from ``resamples`` draws of whole phases
    with replacement within each condition (the percentile method). Seeded: a result file
    is reproducible from its samples."""
    if not loaded or not calm:
        raise ValueError("need at least one phase of each condition")
    point = ratio(_pooled(loaded), _pooled(calm), q)
    rng = random.Random(seed)
    draws = sorted(
        ratio(
            _pooled(rng.choices(loaded, k=len(loaded))),
            _pooled(rng.choices(calm, k=len(calm))),
            q,
        )
        for _ in range(resamples)
    )
    tail = (1.0 - CONFIDENCE) / 2
    low = draws[int(tail * (resamples - 1))]
    high = draws[int((1.0 - tail) * (resamples - 1))]
    return point, low, high


def verdict(low: float, high: float, limit: float) -> Verdict:
    """met: the whole interval is within ``limit``; missed: the whole interval is above
    it; unresolved: the interval straddles it (more rounds may decide)."""
    if high <= limit:
        return "met"
    if low > limit:
        return "missed"
    return "unresolved"
