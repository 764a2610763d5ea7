"""The command line of the load generator: profile, overrides, server, output."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.load import report
from bench.load.analysis import analyse
from bench.load.coordinator import Coordinator, Target
from bench.load.population import (
    PASSWORD_FILE,
    depopulate,
    kept_password,
    populate,
    read_password,
    seat,
)
from bench.load.profiles import PROFILES, Profile, build

DEFAULT_MESSAGE_BYTES = 500  # the ceiling's message size when no post was delivered


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="pchat load generator: sign-ins, joins, posts and deliveries over SIP.",
    )
    p.add_argument("--profile", choices=PROFILES, help="required but with --cleanup")
    p.add_argument("--scale", type=float, default=1.0, help="lync-model factor / session scale")
    p.add_argument("--users", type=int, help="sessions (fanout, signin-storm, idle)")
    p.add_argument("--duration", type=float, help="seconds of the measured phase")
    p.add_argument("--warmup", type=float, help="first seconds left out of the figures")
    p.add_argument("--rate", type=float, help="posts/s in all (steady profiles)")
    p.add_argument("--ramp-start", type=float, help="fanout-max: first posts/s")
    p.add_argument("--ramp-step", type=float, help="fanout-max: seconds per step")
    p.add_argument("--room-size", type=int, help="fanout profiles: people per room")
    p.add_argument("--signin-rate", type=float, help="sign-ins/s in all (0: as fast as accepted)")
    p.add_argument("--signin-concurrency", type=int, help="sign-ins in flight per process")
    p.add_argument("--signin-timeout", type=float, help="seconds the sign-in phase may take")
    p.add_argument("--text-bytes", type=int, help="characters per post")
    p.add_argument("--agents", type=int, help="load processes (default: by sessions, >= 2)")
    p.add_argument("--workers", type=int, help="server workers when the bench starts it")
    p.add_argument("--ceiling", type=float, help="seconds per raw-writer run (0: none)")
    p.add_argument("--target", help="HOST:PORT of a running server (default: start one)")
    p.add_argument("--domain", default="example.com")
    p.add_argument("--server-data-dir", help="the running server's data dir (worker pids)")
    p.add_argument("--http-port", type=int, help="the running server's HTTP port (/metrics)")
    p.add_argument("--populate", metavar="STORE_URL", help="with --target: write users/rooms")
    p.add_argument(
        "--populate-only", action="store_true", help="write --populate's users/rooms and exit"
    )
    p.add_argument(
        "--password-file", type=Path, default=Path(PASSWORD_FILE),
        help="the bench users' random password for --populate/--target (made if missing)",
    )  # fmt: skip
    p.add_argument(
        "--cleanup", metavar="STORE_URL",
        help="remove the bench users, rooms and category from the store, and the password file",
    )  # fmt: skip
    p.add_argument("--server-src", type=Path, help="run the server from this source tree")
    p.add_argument(
        "--server-set", action="append", default=[], metavar="PCHAT_KEY=VALUE",
        help="environment for the server it starts, e.g. PCHAT_LIMITS__ADMISSION_QUEUE=4000",
    )  # fmt: skip
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        help="the server's bus on a private Redis Cluster (3 masters + 3 replicas, Redis 7)",
    )
    p.add_argument("--out", type=Path, help="result directory (default bench/results/<run>)")
    p.add_argument("--name", default="", help="suffix of the run's name")
    p.add_argument(
        "--runs-log", type=Path, help="where the run's JSON line goes (bench/results/runs.jsonl)"
    )
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--keep-data", action="store_true", help="keep the server's data dir")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def profile_from(args: argparse.Namespace) -> Profile:
    profile = build(args.profile, args.scale)
    changes: dict[str, Any] = {}
    for flag, field in (
        ("duration", "duration_s"),
        ("warmup", "warmup_s"),
        ("signin_rate", "signin_rate"),
        ("signin_concurrency", "signin_concurrency"),
        ("signin_timeout", "signin_timeout_s"),
        ("text_bytes", "text_bytes"),
        ("agents", "agents"),
        ("workers", "workers"),
        ("ceiling", "ceiling_s"),
        ("users", "users"),
    ):
        value = getattr(args, flag)
        if value is not None:
            changes[field] = value
    rooms = profile.rooms
    users = changes.get("users", profile.users)
    if args.room_size and rooms:
        rooms = [msgspec.structs.replace(rooms[0], size=args.room_size)]
    if profile.name.startswith("fanout") and rooms:
        size = min(rooms[0].size, users)
        rate = rooms[0].post_rate
        if profile.name == "fanout-10k":
            rate = 10_000 / max(1, size - 1)  # held at 10k deliveries/s whatever the shape
        rooms = [msgspec.structs.replace(rooms[0], size=size, count=users // size, post_rate=rate)]
    if args.rate is not None and rooms:
        total = sum(c.post_rate for c in rooms) or 1.0
        rooms = [
            msgspec.structs.replace(c, post_rate=c.post_rate * args.rate / total) for c in rooms
        ]
    changes["rooms"] = rooms
    ramp = profile.ramp
    if args.ramp_start is not None:
        ramp = msgspec.structs.replace(ramp, start=args.ramp_start)
    if args.ramp_step is not None:
        ramp = msgspec.structs.replace(ramp, step_s=args.ramp_step)
    changes["ramp"] = ramp
    return msgspec.structs.replace(profile, **changes)


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("PCHAT_"):
            raise SystemExit(f"--server-set wants PCHAT_KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _tidy(run_dir: Path, *, keep: bool) -> None:
    """Keeps the server's log next to the results (when it says anything) and drops its
    data directory: a lync-model store is hundreds of megabytes."""
    data = run_dir / "tmp" / "data"
    log = data / "server.log"
    if log.exists() and log.stat().st_size:
        shutil.copy(log, run_dir / "server.log")
    if not keep:
        shutil.rmtree(run_dir / "tmp", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cleanup:
        users, rooms = asyncio.run(depopulate(args.cleanup, args.domain))
        args.password_file.unlink(missing_ok=True)
        print(f"removed {users} bench users and {rooms} bench rooms; {args.password_file} deleted")
        return 0
    if not args.profile:
        raise SystemExit("--profile is required (or --cleanup STORE_URL)")
    profile = profile_from(args)
    # SIGTERM (timeout, CI) unwinds like Ctrl-C, so the server and load processes stop too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.populate_only:
        if not args.populate:
            raise SystemExit("--populate-only needs --populate STORE_URL")
        password = kept_password(args.password_file)
        seating = seat(profile)
        seconds = asyncio.run(populate(args.populate, args.domain, profile, seating, password))
        print(
            f"{profile.users} users, {len(seating.rooms)} rooms in {seconds:.1f} s;"
            f" their password is in {args.password_file}"
        )
        return 0
    suffix = f"-{args.name}" if args.name else ""
    meta: dict[str, Any] = {
        "run": time.strftime("%Y%m%d-%H%M%S-") + profile.name + suffix,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": report.host(),  # before the run: its load average says if the host was quiet
    }
    run_dir = args.out or report.RESULTS / meta["run"]
    coord = Coordinator(profile, run_dir, quiet=args.quiet)
    try:
        raw, ceiling = _drive(coord, args, profile)
    finally:
        coord.shutdown()
    result = analyse(profile, raw, coord.events, coord.samples, coord.info, ceiling)
    result = {**meta, **_settings(args, profile, coord), **result}
    report.write(run_dir, result, plots=not args.no_plots, runs_log=args.runs_log)
    _tidy(run_dir, keep=args.keep_data)
    print(report.summary(result))
    print(f"results in {run_dir}", file=sys.stderr)
    return 0


def _drive(
    coord: Coordinator, args: argparse.Namespace, profile: Profile
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The server (started or found), the phases, then the ceiling on the same sessions."""
    if args.target:
        target_host, _, port = args.target.rpartition(":")
        if args.populate:
            coord.password = kept_password(args.password_file)
            asyncio.run(
                populate(args.populate, args.domain, profile, coord.seating, coord.password)
            )
        else:
            coord.password = read_password(args.password_file)
        coord.use_server(
            Target(
                host=target_host,
                port=int(port),
                domain=args.domain,
                data_dir=args.server_data_dir,
                http_port=args.http_port,
            )  # fmt: skip
        )
    else:
        coord.start_server(
            args.domain, args.server_src, _env(args.server_set), redis_cluster=args.redis_cluster
        )
    raw = coord.run_phases()
    sessions = [a["sessions"] for a in raw["agents"]]
    if profile.ceiling_s <= 0 or profile.mode not in ("steady", "ramp") or not sum(sessions):
        return raw, None
    if coord.server is not None:
        coord.server.stop()  # idle by now, but the writers get the machine to themselves
    received = sum(a["posts_received"] for a in raw["agents"])
    size = sum(a["post_bytes"] for a in raw["agents"]) // received if received else 0
    return raw, coord.ceiling(sessions, size or DEFAULT_MESSAGE_BYTES)


def _settings(args: argparse.Namespace, profile: Profile, coord: Coordinator) -> dict[str, Any]:
    """What a runs.jsonl line needs to tell runs apart (HS-15)."""
    source = args.server_src or report.REPO
    redis = "Redis Cluster, 3+3 nodes" if args.redis_cluster else "redis-server"
    server = (
        f"target {args.target}"
        if args.target
        else f"pchat serve --workers {profile.workers} (SQLite, private {redis})"
    )
    return {
        "profile": msgspec.to_builtins(profile),
        "settings": {
            "server": server,
            "server_env": _env(args.server_set),
            "server_source": {"path": str(source), **report.git_state(source)},
            "agents": profile.agent_count(),
            "populate_s": coord.info.get("populate_s"),
        },
        "git": report.git_state(),
        "versions": report.versions(),
        "loop": "uvloop",
    }
