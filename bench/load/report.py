"""A run's files: result.json, summary.md, PNG plots, and its line in runs.jsonl (HS-15)."""

from __future__ import annotations

import os
import platform
import socket
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from bench.load import stats

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPO = Path(__file__).resolve().parents[2]


def _run(*cmd: str, cwd: Path = REPO) -> str:
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_state(path: Path = REPO) -> dict[str, Any]:
    """The commit and whether the tree differs from it (files changed, not their content)."""
    changed = [line[3:] for line in _run("git", "status", "--porcelain", cwd=path).splitlines()]
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


def summary(r: dict[str, Any]) -> str:
    p = r["profile"]
    lines = [
        f"# {r['run']}",
        "",
        f"Profile `{p['name']}` (scale {p['scale']:g}), {r['started']}, git "
        f"`{r['git']['sha'][:10]}`{' (dirty)' if r['git']['dirty'] else ''}, "
        f"{r['host']['cores']} cores, {r['host']['cpu']}.",
        f"Server: {r['settings']['server']}. Load: {r['settings']['agents']} processes.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key, value in headline(r).items():
        lines.append(f"| {key} | {_fmt(value)} |")
    if r.get("deliveries"):
        lat = r["deliveries"]["latency_ms"]
        lines += ["", "Post-to-delivery latency (ms): " + ", ".join(
            f"{k} {_fmt(lat.get(k))}" for k in ("p50", "p90", "p99", "p99.9", "max")
        )]  # fmt: skip
    by_class = r.get("deliveries", {}).get("by_class")
    if by_class:
        lines += ["", "| room class | people | deliveries | p50 ms | p99 ms | max ms |"]
        lines.append("|---|---|---|---|---|---|")
        for name, c in by_class.items():
            lines.append(
                f"| {name} | {_fmt(c['people'])} | {_fmt(c['count'])} | {_fmt(c['p50'])} | "
                f"{_fmt(c['p99'])} | {_fmt(c['max'])} |"
            )
    if r.get("ramp"):
        lines += [
            "",
            "| posts/s asked | accepted/s | deliveries/s | p50 ms | p99 ms | 503 | server CPU % "
            "| loadgen CPU % | others CPU % |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in r["ramp"]:
            lines.append(
                f"| {_fmt(s['posts_per_s'])} | {_fmt(s['accepted_per_s'])} | "
                f"{_fmt(s['deliveries_per_s'])} | {_fmt(s['p50_ms'])} | {_fmt(s['p99_ms'])} | "
                f"{_fmt(s['retries_503'])} | {_fmt(s['server_cpu'])} | {_fmt(s['loadgen_cpu'])} | "
                f"{_fmt(s['others_cpu'])} |"
            )
    up = r.get("deliveries", {}).get("keeping_up")
    if r.get("ramp"):
        lines += [
            "",
            "Most deliveries/s while keeping up (>= 95 % of the posts asked accepted, p99 < "
            f"100 ms): {_fmt(up['deliveries_per_s']) if up else 'none'}"
            + (f" at p99 {_fmt(up['p99_ms'])} ms." if up else "."),
        ]
    if r.get("ceiling"):
        c = r["ceiling"]
        lines += [
            "",
            f"Ceiling ({c['writers']} raw writers, {c['connections']:,} connections, "
            f"{c['message_bytes']} B messages): one message per write "
            f"{_fmt(c['batch_1']['per_s'])}/s, 8 per write {_fmt(c['batch_8']['per_s'])}/s; "
            f"fan-out = {_fmt(c['batch_1']['fanout_ratio'])} and "
            f"{_fmt(c['batch_8']['fanout_ratio'])} of them.",
        ]
    if r.get("targets"):
        lines += ["", "| target | goal | value | met | margin |", "|---|---|---|---|---|"]
        for t in r["targets"]:
            lines.append(
                f"| {t['target']} | {t['goal']} | {_fmt(t['value'])} | "
                f"{'yes' if t['met'] else 'NO'} | {t['margin']} |"
            )
    if any(any(v.values()) for v in r.get("server_latency_ms", {}).values()):
        lines += ["", "Server-side latencies (ms, from its histograms: bucket-interpolated):"]
        for name, q in r["server_latency_ms"].items():
            lines.append(f"- `{name}`: p50 {_fmt(q['p50'])}, p99 {_fmt(q['p99'])}")
    if r.get("cost"):
        lines += [
            "",
            "CPU per unit of work: " + ", ".join(f"{k} {v}" for k, v in r["cost"].items()),
        ]
    if r.get("errors"):
        lines += ["", "Errors: " + ", ".join(f"{k} × {n}" for k, n in r["errors"].items())]
    return "\n".join(lines) + "\n"


def draw(run_dir: Path, r: dict[str, Any]) -> list[Path]:
    """latency_cdf.png, throughput.png, latency.png (and signins.png); [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed; no plots", file=sys.stderr)
        return []
    made = []
    rows = r["timeline"]
    ts = [row["t"] for row in rows]
    hist = r.get("deliveries_histogram")
    if hist:
        fig, ax = plt.subplots(figsize=(7, 4))
        curves = [(hist, "whole run")]
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
        made.append(_save(fig, run_dir / "latency_cdf.png"))
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
    made.append(_save(fig, run_dir / "throughput.png"))
    fig, ax = plt.subplots(figsize=(8, 4))
    nan = float("nan")
    ax.plot(ts, [nan if row["p50_ms"] is None else row["p50_ms"] for row in rows], label="p50")
    ax.plot(ts, [nan if row["p99_ms"] is None else row["p99_ms"] for row in rows], label="p99")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the load processes started")
    ax.set_ylabel("post-to-delivery latency (ms)")
    ax.legend()
    ax.set_title(f"{r['run']}: latency over time")
    made.append(_save(fig, run_dir / "latency.png"))
    return made


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
