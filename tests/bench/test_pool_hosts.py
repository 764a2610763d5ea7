"""Pure pieces of bench/pool_hosts.py: its arguments, the order of its rows, the CPU-per-
delivery arithmetic and the ratios, where shards should sit, and the CPU meter."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from bench.pool_figures import (
    BASELINE,
    Config,
    baseline_of,
    cpu_percent,
    misplaced,
    parse_hosts,
    per_delivery_us,
    plan,
    ratios,
    remote_share,
    summary_md,
    window_delta,
)
from bench.pool_hosts import CpuMeter, parser
from shards.placement import Placement, node_id


def test_hosts_are_parsed_sorted_and_bounded_by_the_addresses() -> None:
    assert parse_hosts("3,1,2,2") == [1, 2, 3]
    assert parse_hosts("2") == [2]
    for bad in ("", "0,1", "1,4", "one", "1;2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_hosts(bad)
    args = parser().parse_args(["--hosts", "1,3", "--cluster", "--workers-per-host", "2"])
    assert (args.hosts, args.cluster, args.workers_per_host) == ([1, 3], True, 2)
    defaults = parser().parse_args([])
    assert defaults.hosts == [1, 2, 3] and not defaults.cluster and defaults.duration == 15.0
    with pytest.raises(SystemExit):
        parser().parse_args(["--hosts", "5"])


def test_the_baseline_runs_first_and_last_and_the_cluster_rows_only_when_asked() -> None:
    assert plan([1, 2, 3], cluster=False) == [
        BASELINE, Config(2, False), Config(3, False), BASELINE,
    ]  # fmt: skip
    assert plan([1, 2, 3], cluster=True) == [
        BASELINE, Config(1, True), Config(2, False), Config(2, True), Config(3, False),
        Config(3, True), BASELINE,
    ]  # fmt: skip
    assert plan([3], cluster=False) == [BASELINE, Config(3, False), BASELINE]
    assert Config(2, True).slug == "2-host-redis-cluster" and BASELINE.label == "1 host, one Redis"


def test_cpu_per_delivery_is_the_cpu_rate_over_the_window_per_delivery_rate() -> None:
    samples = [
        {"t": 99.5, "pchat_cpu_s": 1.0},  # before the window: left out
        {"t": 100.2, "pchat_cpu_s": 2.0},
        {"t": 105.2, "pchat_cpu_s": 3.0},
        {"t": 110.2, "pchat_cpu_s": 4.5},
        {"t": 111.0, "pchat_cpu_s": 9.0},  # after it: left out
        {"t": 110.5},  # a sample without the key: ignored
    ]
    cpu_s, seconds = window_delta(samples, 100.0, 110.5, "pchat_cpu_s")
    assert cpu_s == pytest.approx(2.5) and seconds == pytest.approx(10.0)
    # 2.5 CPU s over 10 s is 25 % of a core; at 10,000 deliveries/s that is 25 µs each.
    assert cpu_percent(cpu_s, seconds) == 25.0
    assert per_delivery_us(cpu_s, seconds, 10_000) == 25.0
    assert window_delta(samples, 100.0, 101.0, "pchat_cpu_s") == (0.0, 0.0)  # one sample
    assert per_delivery_us(1.0, 0.0, 10_000) is None and per_delivery_us(1.0, 5.0, 0) is None
    assert cpu_percent(1.0, 0.0) is None


def test_ratios_are_against_the_mean_of_the_baseline_rows() -> None:
    def row(hosts: int, cluster: bool, us: float, p99: float | None) -> dict[str, object]:
        return {"hosts": hosts, "cluster": cluster, "pchat_us_per_delivery": us, "p99_ms": p99}

    rows = [row(1, False, 30.0, 10.0), row(3, False, 45.0, None), row(1, True, 99.0, 99.0),
            row(1, False, 40.0, 30.0)]  # fmt: skip
    base = baseline_of(rows)
    assert base["pchat_us_per_delivery"] == 35.0 and base["p99_ms"] == 20.0
    assert base["deliveries_per_s"] is None  # no row has it
    got = ratios(rows[1], base)
    assert got["pchat_us_per_delivery"] == round(45 / 35, 3)
    assert got["p99_ms"] is None and got["deliveries_per_s"] is None


def test_a_shard_is_placed_when_its_holder_is_the_placement_target() -> None:
    placement = Placement({node_id(h, i): 2 for h in (1, 2, 3) for i in range(2)})
    wanted = []
    for shard in range(64):
        target = placement.target(shard)
        assert target is not None
        wanted.append(f"{target[0]}/incarnation")
    assert misplaced(wanted, hosts=3, workers=2) == 0
    moved = list(wanted)
    moved[5] = None  # nobody holds it
    moved[9] = f"{node_id(9, 0)}/x"  # a host outside the pool
    assert misplaced(moved, hosts=3, workers=2) == 2
    assert misplaced(wanted, hosts=2, workers=2) > 0  # three hosts' placement is not two's


def test_remote_share_counts_the_seats_on_other_hosts_than_the_owner() -> None:
    seats = [[0, 1], [0], [1], [0, 1]]  # users 0..3 -> rooms
    user_host = [1, 2, 1, 2]
    owners = [1, 2]  # room 0 on host 1, room 1 on host 2
    # room 0: users 0 (1, local), 1 (2, remote), 3 (2, remote); room 1: 0 (1, remote),
    # 2 (1, remote), 3 (2, local): 4 of 6 seats are remote.
    assert remote_share(seats, user_host, owners) == round(4 / 6, 3)
    assert remote_share(seats, [1, 1, 1, 1], [1, 1]) == 0.0
    assert remote_share([], [], []) == 0.0


def test_the_cpu_meter_keeps_an_exited_process_cpu() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass"
    proc = subprocess.Popen([sys.executable, "-c", burn + "\nimport sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    meter = CpuMeter()
    try:
        reading = 0.0
        for _ in range(200):  # until the child has burnt its 0.2 s (at most ~10 s)
            reading = meter.read([proc.pid])
            if reading >= 0.2:
                break
            subprocess.run([sys.executable, "-c", "import time; time.sleep(0.05)"], check=True)
        assert reading >= 0.2
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    assert meter.read([proc.pid]) == reading  # gone: its last reading stays in the total
    assert meter.read([]) == reading


def test_the_summary_has_a_row_and_a_ratio_line_per_configuration() -> None:
    row = {
        "config": "2 hosts, one Redis", "sessions": 1000, "errors_total": 3,
        "deliveries_per_s": 10_000.0, "p50_ms": 5.0,
        "p99_ms": 20.0, "p99.9_ms": 30.0, "pchat_us_per_delivery": 40.0,
        "redis_us_per_delivery": 1.5, "redis_cpu_percent": 1.5,
        "postgres_us_per_delivery": 3.0, "remote_share": 0.5, "retries_503": 0,
        "others_cpu_percent": 12.0, "ratios": {"pchat_us_per_delivery": 1.2},
    }  # fmt: skip
    text = summary_md({
        "stamp": "s", "command": "python -m bench.pool_hosts", "git": {"sha": "abc"},
        "workers_per_host": 1, "loadavg_at_start": [1.0, 1.0, 1.0], "cores": 2, "note": "n",
        "rows": [row],
    })  # fmt: skip
    assert (
        "| 1 | 2 hosts, one Redis | 1000 | 10000.0 | 5.0 / 20.0 / 30.0 | 40.0 | 1.5 (1.5) |" in text
    )
    assert "| 0.5 | 0 | 3 | 12.0 |" in text
    assert "| 1 | 2 hosts, one Redis | None | None | None | None | 1.2 |" in text
