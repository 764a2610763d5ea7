"""The pure pieces of bench/pool_hosts.py: its rows, their order, the CPU-per-delivery
arithmetic, the ratios, where shards should sit, and the summary table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import msgspec

from shards.placement import Placement, node_id

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # one loopback address per host
AGENTS = 6  # load processes: a multiple of 1, 2 and 3, so every host gets an equal share


class Config(msgspec.Struct, frozen=True):
    hosts: int
    cluster: bool

    @property
    def label(self) -> str:
        return f"{self.hosts} host{'s' if self.hosts > 1 else ''}, " + (
            "Redis Cluster 3+3" if self.cluster else "one Redis"
        )

    @property
    def slug(self) -> str:
        return f"{self.hosts}-host-{'redis-cluster' if self.cluster else 'one-redis'}"


BASELINE = Config(1, False)


def parse_hosts(text: str) -> list[int]:
    """``"1,2,3"`` -> [1, 2, 3]: distinct host counts, each 1..3 (one address per host)."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hosts wants counts like 1,2,3; got {text!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > len(ADDRESSES):
        raise argparse.ArgumentTypeError(f"--hosts: each count 1..{len(ADDRESSES)}; got {text!r}")
    return counts


def plan(hosts: Sequence[int], cluster: bool) -> list[Config]:
    """The rows in the order they run: the baseline (1 host, one Redis) first and last,
    each host count on one Redis and, with ``cluster``, on the cluster right after it."""
    rows = [BASELINE]
    for n in hosts:
        rows += [c for c in (Config(n, False), Config(n, True)) if c != BASELINE]
    rows = [c for c in rows if cluster or not c.cluster]
    return [*rows, BASELINE]


def window_delta(
    samples: Sequence[dict[str, float]], start: float, end: float, key: str
) -> tuple[float, float]:
    """(growth of the cumulative ``key``, seconds) between the first sample at or after
    ``start`` and the last one at or before ``end``; (0, 0) without two such samples."""
    inside = [s for s in samples if start <= s["t"] <= end and key in s]
    if len(inside) < 2:
        return 0.0, 0.0
    return inside[-1][key] - inside[0][key], inside[-1]["t"] - inside[0]["t"]


def per_delivery_us(cpu_s: float, seconds: float, deliveries_per_s: float) -> float | None:
    """CPU µs per delivery: the CPU rate over the window divided by the delivery rate."""
    if seconds <= 0 or deliveries_per_s <= 0:
        return None
    return round(cpu_s / seconds / deliveries_per_s * 1e6, 2)


def cpu_percent(cpu_s: float, seconds: float) -> float | None:
    """CPU in % of one core (200 % = both cores of two)."""
    return round(cpu_s / seconds * 100, 1) if seconds > 0 else None


RATIO_KEYS = (
    "deliveries_per_s", "p50_ms", "p99_ms", "p99.9_ms", "pchat_us_per_delivery",
    "redis_us_per_delivery", "postgres_us_per_delivery",
)  # fmt: skip


def baseline_of(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The mean of the baseline rows (first and last) for each ratio key."""
    base = [r for r in rows if r["hosts"] == 1 and not r["cluster"]]
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        values = [r[key] for r in base if r.get(key) is not None]
        out[key] = sum(values) / len(values) if values else None
    return out


def ratios(row: dict[str, Any], base: dict[str, float | None]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        value, ref = row.get(key), base.get(key)
        out[key] = round(value / ref, 3) if value is not None and ref else None
    return out


def misplaced(holders: Sequence[str | None], hosts: int, workers: int) -> int:
    """Shards whose lease holder is not the worker the placement wants, all workers up."""
    placement = Placement(
        {node_id(h, i): workers for h in range(1, hosts + 1) for i in range(workers)}
    )
    out = 0
    for shard, holder in enumerate(holders):
        target = placement.target(shard)
        if holder is None or target is None or holder.split("/")[0] != str(target[0]):
            out += 1
    return out


def remote_share(
    seats: Sequence[Sequence[int]], user_host: Sequence[int], owner: Sequence[int]
) -> float:
    """The share of seats whose member's host is not its room's owner's host: of every
    room's deliveries, the share that crosses the bus to another host."""
    seats_n = sum(len(rooms) for rooms in seats)
    remote = sum(1 for u, rooms in enumerate(seats) for r in rooms if user_host[u] != owner[r])
    return round(remote / seats_n, 3) if seats_n else 0.0


def summary_md(result: dict[str, Any]) -> str:
    lines = [
        f"# pool_hosts {result['stamp']}",
        "",
        f"`{result['command']}`; git {result['git']['sha'][:10]}; {result['workers_per_host']}"
        f" worker(s) per host; load average at start {result['loadavg_at_start']} on"
        f" {result['cores']} shared cores. {result['note']}",
        "",
        "| row | config | sessions | deliveries/s | p50 / p99 / p99.9 ms | pchat µs/delivery"
        " | Redis µs/delivery (CPU %) | PostgreSQL µs/delivery | remote share | 503s | errors"
        " | others CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["rows"]):
        lines.append(
            f"| {i + 1} | {r['config']} | {r.get('sessions')} | {r['deliveries_per_s']}"
            f" | {r['p50_ms']} / {r['p99_ms']}"
            f" / {r['p99.9_ms']} | {r['pchat_us_per_delivery']} | {r['redis_us_per_delivery']}"
            f" ({r['redis_cpu_percent']}) | {r['postgres_us_per_delivery']} | {r['remote_share']}"
            f" | {r['retries_503']} | {r.get('errors_total')} | {r['others_cpu_percent']} |"
        )
    lines += ["", "Ratios against the mean of the two 1-host one-Redis rows:", ""]
    lines += [
        "| row | config | " + " | ".join(RATIO_KEYS) + " |",
        "|---|---|" + "---|" * len(RATIO_KEYS),
    ]
    for i, r in enumerate(result["rows"]):
        cells = " | ".join(str(r["ratios"].get(k)) for k in RATIO_KEYS)
        lines.append(f"| {i + 1} | {r['config']} | {cells} |")
    if result.get("baseline_drift"):
        drift = ", ".join(f"{k} {v}" for k, v in result["baseline_drift"].items())
        lines += ["", f"The last baseline row against the first (the box's drift): {drift}."]
    lines += [
        "",
        "Remote share: of the rooms' seats, those on another host than the room's owner (their"
        " deliveries cross the bus). Others CPU %: the machine's busy CPU less pchat's and the"
        " load generator's (Redis, PostgreSQL and other jobs).",
    ]
    return "\n".join(lines) + "\n"
