"""The benchmark tools run end to end on tiny numbers, so they never rot (HS-15).

The real profiles take minutes and stay out of the suite; see bench/README.md.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.load.population import PASSWORD_FILE, kept_password, populate, seat
from bench.load.profiles import build
from bench.load.server import BenchServer

REPO = Path(__file__).resolve().parents[2]
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
HAS_LOCUST = importlib.util.find_spec("locust") is not None


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}


def bench_result(out: Path, pattern: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Runs ``python -m <args>`` (which writes into ``out``) and reads the one
    ``result.json`` found by the glob ``pattern`` under ``out``."""
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [result_file] = out.glob(pattern)
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def test_load_generator_smoke(tmp_path: Path) -> None:
    """4 users, 2 rooms of 2, 2 s of posts against a server it starts, then the ceiling."""
    run_dir, runs = tmp_path / "run", tmp_path / "runs.jsonl"
    args = [sys.executable, "-m", "bench.load", "--profile", "smoke", "--quiet"]
    args += ["--out", str(run_dir), "--runs-log", str(runs)]
    if not HAS_MATPLOTLIB:
        args.append("--no-plots")
    done = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["sessions"] == 4 and not result["errors"]
    assert result["posts"]["accepted"] > 0 and result["posts"]["accepted_per_s"] > 0
    # The load processes tune their collector as a worker does (bench/load/agent.py).
    assert result["loadgen"]["gc"]["gen0_threshold"] == 20_000
    assert result["loadgen"]["gc"]["frozen"] > 10_000  # the modules and the set-up
    deliveries = result["deliveries"]
    assert deliveries["per_s"] > 0 and deliveries["message_bytes"] > 0
    lat = deliveries["latency_ms"]
    assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert result["server_counters"]["pchat_fanout_deliveries_total"] > 0
    ceiling = result["ceiling"]
    assert ceiling["connections"] == 4
    assert ceiling["batch_1"]["per_s"] > 0 and ceiling["batch_8"]["per_s"] > 0
    line = json.loads(runs.read_text().splitlines()[-1])
    assert line["git"]["sha"] and line["loop"] == "uvloop" and line["host"]["cores"]
    assert line["headline"]["deliveries_per_s"] == deliveries["per_s"]
    assert (run_dir / "summary.md").read_text().startswith("# ")
    if HAS_MATPLOTLIB:
        for name in ("latency_cdf.png", "throughput.png", "latency.png"):
            assert (run_dir / name).stat().st_size > 1000


@pytest.mark.skipif(not HAS_LOCUST, reason="locust is not installed (pip install -e '.[bench]')")
def test_locust_user_smoke(tmp_path: Path) -> None:
    """locust headless for 3 s with 2 users in one room: sign-ins, posts and deliveries."""
    profile = build("smoke")
    server = BenchServer(tmp_path / "data", 1, "example.com")
    (tmp_path / "data").mkdir()
    password = kept_password(tmp_path / PASSWORD_FILE)  # locust runs in tmp_path and reads it
    asyncio.run(populate(server.store_url, "example.com", profile, seat(profile), password))
    server.start()
    try:
        args = [sys.executable, "-m", "locust", "-f", str(REPO / "bench" / "locustfile.py")]
        args += ["--headless", "-u", "2", "-r", "2", "-t", "3s", "--only-summary"]
        args += ["--host", f"127.0.0.1:{server.sip_port}", "--pchat-rooms", "1"]
        args += ["--csv", str(tmp_path / "locust")]
        done = subprocess.run(
            args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=40
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    with (tmp_path / "locust_stats.csv").open() as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    assert int(rows[("SIP", "signin")]["Request Count"]) == 2
    for key in (("SIP", "signin"), ("XCCOS", "join"), ("XCCOS", "grpchat")):
        assert int(rows[key]["Failure Count"]) == 0, rows[key]
    assert int(rows[("XCCOS", "grpchat")]["Request Count"]) > 0
    assert int(rows[("DELIVER", "grpchat")]["Request Count"]) > 0


def test_profiles_are_bounded() -> None:
    """Every profile has a finite size and duration; lync-model keeps the model's shape."""
    for name in ("lync-model", "fanout-max", "fanout-10k", "signin-storm", "idle", "smoke"):
        profile = build(name, 0.01)
        assert 0 < profile.users <= 100_000 and 0 < profile.duration_s <= 600
    full = build("lync-model", 1.0)
    assert full.users == 80_000
    assert [(c.size, c.count) for c in full.rooms] == [(30, 32_000), (150, 1_067), (16_000, 10)]
    assert round(full.post_rate, 2) == 24.04
    small = build("lync-model", 0.01)
    seating = seat(small)
    assert all(seats for seats in seating.seats)
    for index, room in enumerate(seating.rooms):
        holders = [u for u, seats in enumerate(seating.seats) if index in seats]
        assert len(holders) == len(set(holders)), room
    assert msgspec.json.decode(msgspec.json.encode(small), type=type(small)) == small


def test_hostile_envelope_bench_smoke(tmp_path: Path) -> None:
    """bench/hostile.py end to end on tiny numbers: over-cap envelopes get 413, the probe
    keeps posting, the worker's memory is measured."""
    args = ["bench.hostile", "--seconds", "3", "--history", "40"]
    args += ["--attackers", "1", "--out", str(tmp_path)]
    result = bench_result(tmp_path, "*-hostile/result.json", args, 90)
    assert set(result["envelope_answers"]) == {"413"}  # 300 items: over the envelope cap
    assert result["probe_posts"] > 0 and result["calm_p50_ms"] > 0
    assert result["rss_peak_mb"] >= result["rss_before_mb"] > 0


def test_answer_cost_bench_smoke(tmp_path: Path) -> None:
    """bench/answer_cost.py on tiny numbers: every post answered 200, its SIP answer no later
    than its rpl (the answer goes out first)."""
    args = ["bench.answer_cost", "--posts", "40", "--in-flight", "4"]
    args += ["--out", str(tmp_path), "--label", "smoke"]
    result = bench_result(tmp_path, "answer-cost-smoke-*/result.json", args, 90)
    assert result["statuses"] == [200] and result["posts"] == 40
    assert result["answer_ms"]["p50"] <= result["rpl_ms"]["p50"]


def test_mixed_websocket_and_sip_bench_smoke(tmp_path: Path) -> None:
    """bench/mixed.py end to end on tiny numbers: every post reaches the other 3 people of
    its room, 2 SIP and 1 browser or the reverse, and each kind has its figures."""
    args = ["bench.mixed", "--sessions", "4", "--room-size", "4"]
    args += ["--rate", "10", "--seconds", "2", "--out", str(tmp_path)]
    result = bench_result(tmp_path, "*-mixed/result.json", args, 90)
    ok = result["posts"]["ok"]
    assert ok > 0 and result["posts"]["failed"] == 0
    assert result["sip"]["deliveries"] + result["ws"]["deliveries"] == 3 * ok
    for kind in ("sip", "ws"):
        assert result[kind]["deliveries"] > 0 and result[kind]["p99"] > 0


def test_user_import_bench_smoke(tmp_path: Path) -> None:
    """bench/user_import.py on tiny numbers: one import run, two users added one by one."""
    args = [sys.executable, "-m", "bench.user_import", "--users", "50", "--add-sample", "2"]
    args += ["--runs", "1", "--out", str(tmp_path / "run")]
    done = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["users"] == 50 and result["import_users_per_s"] > 0
    assert result["add_s_per_user"] > 0 and result["speedup"] > 0
