"""From what the coordinator and the load processes saw to the figures of a run (no I/O).

Throughput counts whole wall-clock seconds inside the measured window; latencies count
every delivery that arrived in the window or its drain. The issue's targets are judged
here, each with its margin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from bench.load import stats
from bench.load.profiles import Profile
from bench.load.server import SERVER_HISTOGRAMS, histogram_quantiles

# The targets (2-core machine, generator on the same host).
FANOUT_MIN_PER_S = 100_000.0
FANOUT_MIN_CEILING_RATIO = 0.5
P99_AT_10K_MS = 5.0
LYNC_P99_MS = 100.0
SIGNIN_MIN_PER_S = 2_000.0
IDLE_MAX_KB = 50.0
KEEPING_UP = 0.95  # a ramp step keeps up when this share of the posts asked is accepted


def _seconds(start: float, end: float) -> range:
    """The whole wall-clock seconds inside [start, end)."""
    return range(math.ceil(start), math.floor(end))


def _rate(by_second: Mapping[int, float], seconds: range) -> float:
    if not len(seconds):
        return 0.0
    return sum(by_second.get(s, 0) for s in seconds) / len(seconds)


def _latency(hist: Mapping[int, int]) -> dict[str, Any]:
    out: dict[str, Any] = dict(stats.percentiles(hist))
    out["mean"] = stats.mean_ms(hist)
    out["max"] = round(stats.bucket_us(max(hist)) / 1000, 3) if hist else None
    out["count"] = stats.count(hist)
    return out


def _near(samples: list[dict[str, float]], t: float, key: str) -> float:
    best = min(samples, key=lambda row: abs(row["t"] - t), default=None)
    return float(best.get(key, 0.0)) if best is not None else 0.0


def _mean(samples: Iterable[dict[str, float]], key: str) -> float | None:
    values = [row[key] for row in samples if key in row]
    return round(sum(values) / len(values), 1) if values else None


class Merged:
    """The load processes' records added together."""

    def __init__(self, agents: list[dict[str, Any]]) -> None:
        self.counters = stats.merge_counters(a["counters"] for a in agents)
        self.timeline = stats.merge_timelines(a["deliveries"] for a in agents)
        names = {name for a in agents for name in a["hists"]}
        self.hists = {n: stats.merge(a["hists"].get(n, {}) for a in agents) for n in names}
        self.errors: dict[str, int] = {}
        for a in agents:
            for key, n in a["errors"].items():
                self.errors[key] = self.errors.get(key, 0) + n
        classes = {name for a in agents for name in a.get("by_class", {})}
        self.by_class = {
            name: stats.merge(a.get("by_class", {}).get(name, {}) for a in agents)
            for name in classes
        }
        self.sessions = sum(a["sessions"] for a in agents)
        self.retries_503 = sum(a["retries_503"] for a in agents)
        received = sum(a["posts_received"] for a in agents)
        self.message_bytes = (
            round(sum(a["post_bytes"] for a in agents) / received) if received else 0
        )
        self.cpu_s = sum(a["cpu_s"] for a in agents)
        self.gc = agents[0].get("gc", {}) if agents else {}  # each load process tunes alike
        windows = [a["signin_window"] for a in agents if a["signin_window"][1]]
        self.signin_window = (
            (min(w[0] for w in windows), max(w[1] for w in windows)) if windows else (0.0, 0.0)
        )

    def per_second(self, name: str) -> dict[int, float]:
        if name == "deliveries":
            return {s: float(stats.count(h)) for s, h in self.timeline.items()}
        return {s: float(row.get(name, 0)) for s, row in self.counters.items()}

    def latency_between(self, start: float, end: float) -> dict[int, int]:
        return stats.merge(h for s, h in self.timeline.items() if start <= s < end)


def analyse(
    profile: Profile,
    raw: dict[str, Any],
    events: dict[str, float],
    samples: list[dict[str, float]],
    info: dict[str, Any],
    ceiling: dict[str, Any] | None,
) -> dict[str, Any]:
    m = Merged(raw["agents"])
    result: dict[str, Any] = {"sessions": m.sessions, "errors": m.errors}
    result["signin"] = _signin(profile, m)
    if profile.mode in ("steady", "ramp"):
        result.update(_traffic(profile, m, raw, events, samples))
    result["server"] = _usage(samples, events, "server", info)
    result["loadgen"] = {
        **_usage(samples, events, "loadgen", {}),
        "cpu_s": round(m.cpu_s, 1),
        "gc": m.gc,
    }
    result["machine"] = _others(samples, events)
    before, after = raw["counters_before"], raw["counters_after"]
    result["server_counters"] = {
        k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if "{" not in k
    }
    result["server_latency_ms"] = {
        name: histogram_quantiles(before, after, name, (50.0, 99.0)) for name in SERVER_HISTOGRAMS
    }
    result["cost"] = _cost(profile, result)
    if profile.mode == "idle":
        result["idle"] = _idle(m, events, samples, info)
    if ceiling is not None:
        result["ceiling"] = _ceiling(ceiling, result)
    result["timeline"] = _timeline(m, events, samples)
    result["targets"] = targets(profile, result)
    return result


def _signin(profile: Profile, m: Merged) -> dict[str, Any]:
    start, end = m.signin_window
    per_s = m.per_second("signins")
    return {
        "users": profile.users,
        "sessions": m.sessions,
        "per_s": round(m.sessions / (end - start), 1) if end > start else 0.0,
        "peak_per_s": max(per_s.values(), default=0.0),
        "seconds": round(end - start, 2),
        "latency_ms": _latency(m.hists.get("signin", {})),
        "bjoin_latency_ms": _latency(m.hists.get("bjoin", {})),
        "rooms_joined": int(sum(m.per_second("joins").values())),
    }


def _traffic(
    profile: Profile,
    m: Merged,
    raw: dict[str, Any],
    events: dict[str, float],
    samples: list[dict[str, float]],
) -> dict[str, Any]:
    window = _seconds(events["run"] + profile.warmup_s, events["stop"])
    tail = events["stop"] + profile.drain_s + 1
    out: dict[str, Any] = {
        "window_s": len(window),
        "posts": {
            "sent_per_s": round(_rate(m.per_second("posts_sent"), window), 1),
            "accepted_per_s": round(_rate(m.per_second("posts_ok"), window), 1),
            "accepted": int(sum(m.per_second("posts_ok").values())),
            "skipped": int(sum(m.per_second("posts_skipped").values())),
            "retries_503": m.retries_503,
            "latency_ms": _latency(m.hists.get("post", {})),
        },
        "deliveries": {
            "per_s": round(_rate(m.per_second("deliveries"), window), 1),
            "expected_per_s": round(profile.deliveries_per_s, 1)
            if profile.mode == "steady"
            else None,
            "message_bytes": m.message_bytes,
            "latency_ms": _latency(m.latency_between(window.start, math.ceil(tail))),
        },
        "rejoins": {
            "count": int(sum(m.per_second("rejoins").values())),
            "latency_ms": _latency(m.hists.get("join", {})),
        },
    }
    out["deliveries_histogram"] = m.latency_between(window.start, math.ceil(tail))
    if len(profile.rooms) > 1:  # the whole run, warm-up included: big rooms post rarely
        out["deliveries"]["by_class"] = {
            c.name: {"people": c.size, **_latency(m.by_class.get(c.name, {}))}
            for c in profile.rooms
        }
    if raw["ramp"]:
        out["ramp"] = [_step(step, m, samples) for step in raw["ramp"]]
        out["deliveries"].update(_ramp_best(out["ramp"]))
    return out


def _ramp_best(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The step with the most deliveries/s, and the most while still keeping up: nearly
    every post asked for accepted, and p99 under the lync-model bound."""

    def brief(step: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in step.items() if k != "histogram"}

    best = max(steps, key=lambda s: s["deliveries_per_s"])
    keeping_up = [
        s
        for s in steps
        if s["accepted_per_s"] >= KEEPING_UP * s["posts_per_s"]
        and s["p99_ms"] is not None
        and s["p99_ms"] < LYNC_P99_MS
    ]
    up = max(keeping_up, key=lambda s: s["deliveries_per_s"]) if keeping_up else None
    return {
        "per_s": best["deliveries_per_s"],
        "best_step": brief(best),
        "keeping_up": brief(up) if up else None,
    }


def _step(step: dict[str, float], m: Merged, samples: list[dict[str, float]]) -> dict[str, Any]:
    seconds = _seconds(step["start"] + 1, step["end"])  # the first second settles
    hist = m.latency_between(seconds.start, seconds.stop) if len(seconds) else {}
    inside = [row for row in samples if step["start"] <= row["t"] <= step["end"]]
    lat = stats.percentiles(hist)
    return {
        "posts_per_s": round(step["posts_per_s"], 1),
        "accepted_per_s": round(_rate(m.per_second("posts_ok"), seconds), 1),
        "deliveries_per_s": round(_rate(m.per_second("deliveries"), seconds), 1),
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "retries_503": _near(samples, step["end"], "retries_503")
        - _near(samples, step["start"], "retries_503"),
        "server_cpu": _mean(inside, "server_cpu"),
        "loadgen_cpu": _mean(inside, "loadgen_cpu"),
        "histogram": hist,
        "others_cpu": _mean(
            [
                {"x": r["machine_cpu"] - r.get("server_cpu", 0.0) - r.get("loadgen_cpu", 0.0)}
                for r in inside
                if "machine_cpu" in r
            ],
            "x",
        ),
    }


def _window(events: dict[str, float]) -> tuple[float, float]:
    """The measured phase: the run of a traffic profile, else the sign-ins (signin-storm),
    else the held sessions (idle)."""
    if "run" in events:
        return events["run"], events["stop"]
    if events["stop"] - events["signed_in"] < 1:
        return events["agents"], events["signed_in"]
    return events["signed_in"], events["stop"]


def _usage(
    samples: list[dict[str, float]], events: dict[str, float], who: str, info: dict[str, Any]
) -> dict[str, Any]:
    start, end = _window(events)
    busy = [r for r in samples if start <= r["t"] <= end]
    rss = [r[f"{who}_rss_mb"] for r in samples if f"{who}_rss_mb" in r]
    out: dict[str, Any] = {
        "cpu_percent_mean": _mean(busy, f"{who}_cpu"),
        "cpu_percent_max": max((r.get(f"{who}_cpu", 0.0) for r in samples), default=None),
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "rss_mb_end": round(rss[-1], 1) if rss else None,
    }
    if "server_rss_before_mb" in info:
        out["rss_mb_before"] = round(info["server_rss_before_mb"], 1)
    return out


def _others(samples: list[dict[str, float]], events: dict[str, float]) -> dict[str, Any]:
    """CPU of the whole machine during the run, and what neither side of the test used:
    another job on the host makes the figures of that run suspect."""
    start, end = _window(events)
    busy = [r for r in samples if start <= r["t"] <= end and "machine_cpu" in r]
    others = [r["machine_cpu"] - r.get("server_cpu", 0.0) - r.get("loadgen_cpu", 0.0) for r in busy]
    return {
        "cpu_percent_mean": _mean(busy, "machine_cpu"),
        "others_cpu_percent_mean": round(sum(others) / len(others), 1) if others else None,
        "others_cpu_percent_max": round(max(others), 1) if others else None,
    }


def _cost(profile: Profile, r: dict[str, Any]) -> dict[str, Any]:
    """CPU per unit of work, from mean CPU over the measured phase: what a core buys."""
    out: dict[str, Any] = {}
    for who in ("server", "loadgen"):
        cpu = r[who].get("cpu_percent_mean")
        if not cpu:
            continue
        if profile.mode == "signin" and r["signin"]["per_s"]:
            out[f"{who}_ms_per_signin"] = round(cpu / 100 * 1000 / r["signin"]["per_s"], 3)
        per_s = r.get("deliveries", {}).get("per_s")
        if profile.mode == "steady" and per_s:
            out[f"{who}_us_per_delivery"] = round(cpu / 100 * 1e6 / per_s, 2)
    return out


def _idle(
    m: Merged, events: dict[str, float], samples: list[dict[str, float]], info: dict[str, Any]
) -> dict[str, Any]:
    held = [r["server_rss_mb"] for r in samples if r["t"] >= events["signed_in"] + 1]
    held = [x for x in held if x] or [0.0]
    before = info.get("server_rss_before_mb", 0.0)
    after = sum(held) / len(held)
    per = (after - before) * 1024 / m.sessions if m.sessions else None
    return {
        "sessions": m.sessions,
        "rss_mb_before": round(before, 1),
        "rss_mb_held": round(after, 1),
        "kb_per_session": round(per, 2) if per is not None else None,
    }


def _ceiling(raw: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: raw[k] for k in ("connections", "writers", "message_bytes")}
    size = max(1, raw["message_bytes"])
    chat = result.get("deliveries", {}).get("per_s", 0.0)
    for key in ("batch_1", "batch_8"):
        run = raw[key]
        seconds = _seconds(run["started"], run["started"] + run["seconds"])
        received = run["bytes_by_second"]
        if len(seconds) >= 2:
            per_s = _rate(received, seconds) / size
        else:
            per_s = sum(received.values()) / size / run["seconds"]
        out[key] = {
            "per_s": round(per_s, 1),
            "written_per_s": round(run["written"] / run["seconds"], 1),
            "fanout_ratio": float(f"{chat / per_s:.4g}") if per_s else None,
        }
    return out


def _timeline(
    m: Merged, events: dict[str, float], samples: list[dict[str, float]]
) -> list[dict[str, Any]]:
    origin = events["agents"]
    deliveries, posts, signins = (
        m.per_second("deliveries"),
        m.per_second("posts_ok"),
        m.per_second("signins"),
    )
    rows = []
    for second in range(math.floor(origin), math.ceil(events["results"])):
        lat = stats.percentiles(m.timeline.get(second, {}), (50.0, 99.0))
        rows.append(
            {
                "t": second - math.floor(origin),
                "deliveries": deliveries.get(second, 0),
                "posts_ok": posts.get(second, 0),
                "signins": signins.get(second, 0),
                "p50_ms": lat["p50"],
                "p99_ms": lat["p99"],
                "server_cpu": _near(samples, second + 0.5, "server_cpu"),
                "server_rss_mb": round(_near(samples, second + 0.5, "server_rss_mb"), 1),
                "loadgen_cpu": _near(samples, second + 0.5, "loadgen_cpu"),
            }
        )
    return rows


def _target(
    name: str, goal: str, value: float | None, limit: float, higher: bool
) -> dict[str, Any]:
    if value is None:
        return {"target": name, "goal": goal, "value": None, "met": False, "margin": "no data"}
    met = value >= limit if higher else value < limit
    margin = value / limit if higher else limit / value if value else math.inf
    return {
        "target": name,
        "goal": goal,
        "value": value,
        "met": met,
        "margin": f"{margin:.2f}x of the goal" if higher else f"{value / limit:.2f}x the limit",
    }


def targets(profile: Profile, r: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets that this profile measures."""
    out = []
    d = r.get("deliveries", {})
    if profile.name == "fanout-max":
        out.append(
            _target("fanout-max deliveries/s", ">= 100,000", d.get("per_s"), FANOUT_MIN_PER_S, True)
        )
        ratio = r.get("ceiling", {}).get("batch_1", {}).get("fanout_ratio")
        out.append(
            _target("fanout-max / raw ceiling", ">= 0.5", ratio, FANOUT_MIN_CEILING_RATIO, True)
        )
    if profile.name == "fanout-10k" and abs((d.get("per_s") or 0) - 10_000) < 1_000:
        p99 = d.get("latency_ms", {}).get("p99")
        out.append(_target("p99 at 10k deliveries/s (ms)", "< 5", p99, P99_AT_10K_MS, False))
    if profile.name == "lync-model":
        p99 = d.get("latency_ms", {}).get("p99")
        out.append(
            _target(f"lync-model {profile.scale:g} p99 (ms)", "< 100", p99, LYNC_P99_MS, False)
        )
        retries = r.get("posts", {}).get("retries_503")
        row = _target("lync-model 503s", "0", retries, 1, False)
        out.append({**row, "margin": f"{retries} seen"})
    if profile.name == "signin-storm":
        out.append(_target("sign-ins/s", ">= 2,000", r["signin"]["per_s"], SIGNIN_MIN_PER_S, True))
    if profile.name == "idle":
        kb = r.get("idle", {}).get("kb_per_session")
        out.append(_target("server KB per idle session", "< 50", kb, IDLE_MAX_KB, False))
    return out
