"""The bus on a Redis Cluster against one Redis: CPU per delivery and p99, in one run.

    python -m bench.cluster_cost [--duration 15] [--workers 2] [--rate 50]

Runs the fanout-10k profile (1,000 sessions in 5 rooms of 200; rooms are owned by one
worker and have members on every worker, so every post crosses the bus) on one private
redis-server and on a private Redis Cluster (3 masters + 3 replicas, sharded pub/sub),
--rounds times each in A B B A order on the same box, and averages each side. Each run is
an ordinary bench.load run (its own result directory and runs.jsonl line); this writes
the two side by side, with ratios, to bench/results/cluster-cost-<time>/result.json. CPU
is the pchat workers' (Redis's own CPU is left out). The box is shared: compare the
ratios of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.load import report

PROFILE = "fanout-10k"


def _run(name: str, out: Path, args: argparse.Namespace, cluster: bool) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench.load", "--profile", PROFILE, "--ceiling", "0",
        "--no-plots", "--quiet", "--workers", str(args.workers),
        "--duration", str(args.duration), "--rate", str(args.rate),
        "--out", str(out / name), "--name", name,
    ]  # fmt: skip
    if cluster:
        command.append("--redis-cluster")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads((out / name / "result.json").read_text())
    latency = result["deliveries"]["latency_ms"]
    return {
        "deliveries_per_s": result["deliveries"]["per_s"],
        "server_us_per_delivery": result["cost"]["server_us_per_delivery"],
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "retries_503": result["posts"]["retries_503"],
        "errors": result["errors"],
        "others_cpu": result["machine"].get("others_cpu_percent_mean"),
    }


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("deliveries_per_s", "server_us_per_delivery", "p50_ms", "p99_ms", "others_cpu")
    return {key: round(sum(r[key] or 0 for r in runs) / len(runs), 3) for key in keys} | {
        "retries_503": sum(r["retries_503"] for r in runs)
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    p.add_argument("--workers", type=int, default=2, help="pchat workers")
    p.add_argument("--rate", type=float, default=50.0, help="posts/s (x199 deliveries)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each, in A B B A order")
    args = p.parse_args()
    out = (Path("bench/results") / time.strftime("cluster-cost-%Y%m%d-%H%M%S")).resolve()
    # A B B A ...: the box's other load drifts during a run; the pairs cancel its trend.
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for i in range(args.rounds):
        for cluster_first in (False, True) if i % 2 == 0 else (True, False):
            name = f"{'redis-cluster' if cluster_first else 'single-redis'}-{i + 1}"
            runs[cluster_first].append(_run(name, out, args, cluster=cluster_first))
    single, cluster = _mean(runs[False]), _mean(runs[True])
    result = {
        "profile": PROFILE,
        "workers": args.workers,
        "rate": args.rate,
        "duration_s": args.duration,
        "git": report.git_state(),
        "rounds": args.rounds,
        "single_redis": single,
        "redis_cluster": cluster,
        "runs": {"single_redis": runs[False], "redis_cluster": runs[True]},
        "ratio_cluster_to_single": {
            key: round(cluster[key] / single[key], 3) if single[key] else None
            for key in ("server_us_per_delivery", "p50_ms", "p99_ms", "deliveries_per_s")
        },
        "note": "one run on a shared 2-core box: the ratios, not the absolute figures",
    }
    report.write_small(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
