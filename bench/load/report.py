"""A run's files: result.json, summary.md, PNG plots, and its line in runs.jsonl (HS-15)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from bench.load import stats

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPO = Path(__file__).resolve().parents[2]


def _run(*cmd: str, cwd: Path = REPO, strip: bool = True) -> str:
    try:
        out = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip() if strip else out


def git_state(path: Path = REPO) -> dict[str, Any]:
    """The commit and whether the tree differs from it (files changed, not their content)."""
    status = _run("git", "status", "--porcelain", cwd=path, strip=False)  # 'XY path' lines
    changed = [line[3:] for line in status.splitlines() if len(line) > 3]
    return {"sha": _run("git", "rev-parse", "HEAD", cwd=path), "dirty": changed}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in ("pchat", "uvloop", "msgspec", "redis", "hiredis", "psutil", "locust"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    from shards.redis_server import redis_binary

    try:
        out["redis-server"] = _run(redis_binary(), "--version").split(" v=")[1].split()[0]
    except (RuntimeError, IndexError):
        pass
    return out


def host() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "cpu": model,
        "cores": os.cpu_count(),
        "mem_gb": round(mem_kb / 2**20, 1),
        "loadavg_at_start": list(os.getloadavg()),
    }


def write_small(out: Path, result: dict[str, Any]) -> None:
    """A one-shot bench's result.json (bench/hostile.py, bench/resp_cost.py), also printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"results in {out}")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """--server-src, --name and --out of a one-shot bench (bench/files.py, hostile.py,
    mixed.py)."""
    p.add_argument("--server-src", type=Path, help="run the server from this source tree")
    p.add_argument("--name", default="", help="suffix of the results folder")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="results go here")


def named_dir(args: argparse.Namespace, bench: str) -> Path:
    """``<--out>/<stamp>-<bench>[-<--name>]``: where a one-shot bench's results go."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(args.out) / f"{stamp}-{bench}{'-' + args.name if args.name else ''}"


def write_named(args: argparse.Namespace, bench: str, result: dict[str, Any]) -> None:
    """`write_small` into `named_dir`."""
    write_small(named_dir(args, bench), result)


def write(
    run_dir: Path, result: dict[str, Any], *, plots: bool = True, runs_log: Path | None = None
) -> list[Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "result.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    (run_dir / "summary.md").write_text(summary(result))
    made = [run_dir / "result.json", run_dir / "summary.md"]
    if plots:
        made += draw(run_dir, result)
    line = {
        k: result.get(k) for k in ("run", "started", "profile", "git", "versions", "loop", "host")
    }
    line["settings"] = result.get("settings")
    line["headline"] = headline(result)
    with (runs_log or RESULTS / "runs.jsonl").open("ab") as out:
        out.write(orjson.dumps(line) + b"\n")
    return made


def headline(r: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a table of runs shows."""
    d = r.get("deliveries", {})
    lat = d.get("latency_ms", {})
    ceiling = r.get("ceiling", {})
    return {
        "sessions": r.get("sessions"),
        "signins_per_s": r.get("signin", {}).get("per_s"),
        "posts_per_s": r.get("posts", {}).get("accepted_per_s"),
        "deliveries_per_s": d.get("per_s"),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "p999_ms": lat.get("p99.9"),
        "retries_503": r.get("posts", {}).get("retries_503"),
        "errors": sum(r.get("errors", {}).values()),
        "ceiling_per_s": ceiling.get("batch_1", {}).get("per_s"),
        "ceiling_ratio": ceiling.get("batch_1", {}).get("fanout_ratio"),
        "kb_per_session": r.get("idle", {}).get("kb_per_session"),
        "server_cpu": r.get("server", {}).get("cpu_percent_mean"),
        "loadgen_cpu": r.get("loadgen", {}).get("cpu_percent_mean"),
        "others_cpu": r.get("machine", {}).get("others_cpu_percent_mean"),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def summary(r: dict[str, Any]) -> str:
    """summary.md: the headline table, then whatever the profile measured."""
    p = r["profile"]
    lines = [
        f"# {r['run']}",
        "",
        f"Profile `{p['name']}` (scale {p['scale']:g}), {r['started']}, git "
        f"`{r['git']['sha'][:10]}`{' (dirty)' if r['git']['dirty'] else ''}, "
        f"{r['host']['cores']} cores, {r['host']['cpu']}.",
        f"Server: {r['settings']['server']}. Load: {r['settings']['agents']} processes.",
    ]
    lines += _table(["figure", "value"], [[k, v] for k, v in headline(r).items()])
    lines += _summary_deliveries(r) + _summary_ceiling(r)
    if r.get("targets"):
        rows = [
            [t["target"], t["goal"], t["value"], "yes" if t["met"] else "NO", t["margin"]]
            for t in r["targets"]
        ]
        lines += _table(["target", "goal", "value", "met", "margin"], rows)
    if any(any(v.values()) for v in r.get("server_latency_ms", {}).values()):
        lines += ["", "Server-side latencies (ms, from its histograms: bucket-interpolated):"]
        for name, q in r["server_latency_ms"].items():
            lines.append(f"- `{name}`: p50 {_fmt(q['p50'])}, p99 {_fmt(q['p99'])}")
    if r.get("cost"):
        cost = ", ".join(f"{k} {v}" for k, v in r["cost"].items())
        lines += ["", f"CPU per unit of work: {cost}"]
    if r.get("errors"):
        lines += ["", "Errors: " + ", ".join(f"{k} × {n}" for k, n in r["errors"].items())]
    return "\n".join(lines) + "\n"


def _summary_deliveries(r: dict[str, Any]) -> list[str]:
    d = r.get("deliveries")
    if not d:
        return []
    lat = d["latency_ms"]
    points = ", ".join(f"{k} {_fmt(lat.get(k))}" for k in ("p50", "p90", "p99", "p99.9", "max"))
    lines = ["", f"Post-to-delivery latency (ms): {points}"]
    if d.get("by_class"):
        rows = [
            [name, c["people"], c["count"], c["p50"], c["p99"], c["max"]]
            for name, c in d["by_class"].items()
        ]
        header = ["room class", "people", "deliveries", "p50 ms", "p99 ms", "max ms"]
        lines += _table(header, rows)
    if r.get("ramp"):
        keys: tuple[str, ...] = ("posts_per_s", "accepted_per_s", "deliveries_per_s")
        keys += ("p50_ms", "p99_ms", "retries_503", "server_cpu", "loadgen_cpu", "others_cpu")
        header = ["posts/s asked", "accepted/s", "deliveries/s", "p50 ms", "p99 ms", "503"]
        header += ["server CPU %", "loadgen CPU %", "others CPU %"]
        lines += _table(header, [[s[k] for k in keys] for s in r["ramp"]])
        up = d.get("keeping_up")
        best = f"{_fmt(up['deliveries_per_s'])} at p99 {_fmt(up['p99_ms'])} ms" if up else "none"
        lines += [
            "",
            "Most deliveries/s while keeping up (>= 95 % of the posts asked accepted, "
            f"p99 < 100 ms): {best}.",
        ]
    return lines


def _summary_ceiling(r: dict[str, Any]) -> list[str]:
    c = r.get("ceiling")
    if not c:
        return []
    return [
        "",
        f"Ceiling ({c['writers']} raw writers, {c['connections']:,} connections, "
        f"{c['message_bytes']} B messages): one message per write "
        f"{_fmt(c['batch_1']['per_s'])}/s, 8 per write {_fmt(c['batch_8']['per_s'])}/s; "
        f"fan-out = {_fmt(c['batch_1']['fanout_ratio'])} and "
        f"{_fmt(c['batch_8']['fanout_ratio'])} of them.",
    ]


def draw(run_dir: Path, r: dict[str, Any]) -> list[Path]:
    """latency_cdf.png (when posts were delivered), throughput.png, latency.png; [] without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed; no plots", file=sys.stderr)
        return []
    made = []
    if r.get("deliveries_histogram"):
        made.append(_draw_cdf(plt, run_dir / "latency_cdf.png", r))
    made.append(_draw_throughput(plt, run_dir / "throughput.png", r))
    made.append(_draw_latency(plt, run_dir / "latency.png", r))
    return made


def _draw_cdf(plt: Any, path: Path, r: dict[str, Any]) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    curves = [(r["deliveries_histogram"], "whole run")]
    if r.get("ramp"):  # one curve per ramp step, by its deliveries/s
        curves = [(s["histogram"], f"{s['deliveries_per_s']:,.0f}/s") for s in r["ramp"]]
    for curve, label in curves:
        if curve:
            xs, ys = stats.cdf({int(k): v for k, v in curve.items()})
            ax.plot(xs, ys, label=label)
    if len(curves) > 1:
        ax.legend(fontsize="x-small", title="deliveries", title_fontsize="x-small")
    ax.set_xscale("log")
    ax.set_xlabel("post-to-delivery latency (ms)")
    ax.set_ylabel("fraction of deliveries")
    ax.set_title(f"{r['run']}: latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    return _save(plt, fig, path)


def _draw_throughput(plt: Any, path: Path, r: dict[str, Any]) -> Path:
    rows = r["timeline"]
    ts = [row["t"] for row in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(ts, [row["deliveries"] for row in rows], label="deliveries/s")
    ax.plot(ts, [row["posts_ok"] for row in rows], label="posts accepted/s")
    ax.plot(ts, [row["signins"] for row in rows], label="sign-ins/s")
    ax.set_yscale("symlog")
    ax.set_xlabel("seconds since the load processes started")
    ax.legend()
    ax2 = ax.twinx()
    ax2.plot(ts, [row["server_cpu"] for row in rows], "k:", label="server CPU %")
    ax2.set_ylabel("server CPU % (dotted)")
    ax.set_title(f"{r['run']}: throughput")
    return _save(plt, fig, path)


def _draw_latency(plt: Any, path: Path, r: dict[str, Any]) -> Path:
    rows = r["timeline"]
    ts = [row["t"] for row in rows]
    nan = float("nan")
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in ("p50_ms", "p99_ms"):
        ax.plot(ts, [nan if row[key] is None else row[key] for row in rows], label=key[:-3])
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load processes started")
    ax.set_ylabel("post-to-delivery latency (ms)")
    ax.legend()
    ax.set_title(f"{r['run']}: latency over time")
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
