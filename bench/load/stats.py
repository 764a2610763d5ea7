"""Latency histograms and per-second counters of the load generator (no I/O).

A histogram is a sparse ``{bucket: count}`` dict over microseconds with about 1.6 %
resolution (HDR-style: the top seven bits of the value are kept), so every process can
record millions of samples at one dict update each and the coordinator merges them exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Histogram = dict[int, int]

_SUB_BITS = 7  # values below 2**7 us are exact; above, 64 sub-buckets per power of two
_LINEAR = 1 << _SUB_BITS
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket(us: int) -> int:
    """The bucket of a latency in microseconds (negative clamps to 0)."""
    if us < _LINEAR:
        return us if us > 0 else 0
    shift = us.bit_length() - _SUB_BITS
    return (shift << (_SUB_BITS - 1)) + (us >> shift)


def bucket_us(index: int) -> float:
    """The middle of a bucket, in microseconds."""
    if index < _LINEAR:
        return float(index)
    shift = (index >> (_SUB_BITS - 1)) - 1
    mantissa = index - (shift << (_SUB_BITS - 1))
    low = mantissa << shift
    return low + ((1 << shift) - 1) / 2


def add(hist: Histogram, us: int) -> None:
    b = bucket(us)
    hist[b] = hist.get(b, 0) + 1


def merge(hists: Iterable[Mapping[int, int]]) -> Histogram:
    out: Histogram = {}
    for hist in hists:
        for b, n in hist.items():
            out[int(b)] = out.get(int(b), 0) + n
    return out


def count(hist: Mapping[int, int]) -> int:
    return sum(hist.values())


def percentiles(
    hist: Mapping[int, int], points: Iterable[float] = PERCENTILES
) -> dict[str, float | None]:
    """``{"p50": ms, ...}``; None for every point of an empty histogram."""
    ordered = sorted(hist.items())
    total = sum(n for _, n in ordered)
    out: dict[str, float | None] = {}
    for p in points:
        key = f"p{p:g}"
        if not total:
            out[key] = None
            continue
        rank = p / 100 * total
        seen = 0
        value = bucket_us(ordered[-1][0])
        for b, n in ordered:
            seen += n
            if seen >= rank:
                value = bucket_us(b)
                break
        out[key] = round(value / 1000, 3)
    return out


def mean_ms(hist: Mapping[int, int]) -> float | None:
    total = count(hist)
    if not total:
        return None
    return round(sum(bucket_us(b) * n for b, n in hist.items()) / total / 1000, 3)


def cdf(hist: Mapping[int, int]) -> tuple[list[float], list[float]]:
    """Latencies (ms) and the fraction of samples at or below each, for a CDF plot."""
    ordered = sorted(hist.items())
    total = sum(n for _, n in ordered) or 1
    xs: list[float] = []
    ys: list[float] = []
    seen = 0
    for b, n in ordered:
        seen += n
        xs.append(bucket_us(b) / 1000)
        ys.append(seen / total)
    return xs, ys


class Counters:
    """Per-second event counts of one process, keyed by the wall-clock second."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds: dict[int, dict[str, int]] = {}

    def add(self, second: int, name: str, n: int = 1) -> None:
        row = self.seconds.get(second)
        if row is None:
            row = self.seconds[second] = {}
        row[name] = row.get(name, 0) + n


def merge_counters(parts: Iterable[Mapping[int, Mapping[str, int]]]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for part in parts:
        for second, row in part.items():
            target = out.setdefault(int(second), {})
            for name, n in row.items():
                target[name] = target.get(name, 0) + n
    return out


def merge_timelines(
    parts: Iterable[Mapping[int, Mapping[int, int]]],
) -> dict[int, Histogram]:
    """Per-second histograms of several processes, added second by second."""
    out: dict[int, Histogram] = {}
    for part in parts:
        for second, hist in part.items():
            target = out.setdefault(int(second), {})
            for b, n in hist.items():
                target[int(b)] = target.get(int(b), 0) + n
    return out
