"""Commit latency of the SQLite store with its WAL checkpoints beside the commits (the
checkpointer thread, core/store/sqlite_checkpoint.py) and inside them (SQLite's own), in
one run.

    python -m bench.wal_checkpoint [--order tsst] [--rounds 2] [--seconds 10]
                                   [--posts-per-s 500] [--batch 2] [--text-bytes 300]

Each phase opens a new store file on this disk and commits batches of posts through it at
a fixed rate, as a worker's group commit does (fanout-10k with rooms of 20 makes ~500
posts/s); "t" phases run with the checkpointer thread, "s" phases with SQLite's own
checkpoints, interleaved so the disk's drift falls on both alike. It reports each mode's
commit p50 / p99 / p99.9 / max (the time of ``append_messages``, from the event loop) and
the largest WAL file seen, and the ratio of the two modes' p99 and p99.9. Writes
bench/results/wal-checkpoint-<time>/result.json; removes its files.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load import report
from bench.phase_stats import quantile
from core.store.base import CategoryRecord, NewMessage, RoomRecord
from core.store.sqlite import SqliteStore

MODES = {"t": "thread", "s": "sqlite"}


async def phase(folder: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    db = folder / f"chat-{time.monotonic_ns()}.db"
    store = SqliteStore(db, background_checkpoints=mode == "t")
    await store.open()
    await store.put_category(CategoryRecord(id="cat", name="Main"))
    await store.put_room(RoomRecord(id="r1", name="Lobby", category_id="cat"))
    text = "x" * args.text_bytes
    gap = args.batch / args.posts_per_s
    times: list[float] = []
    wal, largest, seq = Path(f"{db}-wal"), 0, 0
    start = time.perf_counter()
    due = start
    try:
        while due - start < args.seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            batch = [
                NewMessage(room_id="r1", seq=seq + i, author="sip:a@x", ts_ms=seq, text=text)
                for i in range(1, args.batch + 1)
            ]
            seq += args.batch
            began = time.perf_counter()
            await store.append_messages(batch)
            times.append(time.perf_counter() - began)
            largest = max(largest, wal.stat().st_size)
            due += gap  # a late commit does not shift the schedule: the rate holds
    finally:
        await store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    ms = [t * 1000 for t in times]
    return {**figures(ms, largest / 1e6), "_ms": ms}  # "_ms": pooled per mode, then dropped


def figures(ms: list[float], wal_max_mb: float) -> dict[str, float]:
    return {
        "commits": len(ms),
        "p50_ms": quantile(ms, 0.50),
        "p99_ms": quantile(ms, 0.99),
        "p999_ms": quantile(ms, 0.999),
        "max_ms": max(ms, default=0.0),
        "wal_max_mb": wal_max_mb,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--order", default="tsst", help="phases per round: t thread, s sqlite")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0, help="per phase (bounded work)")
    p.add_argument("--posts-per-s", type=float, default=500.0)
    p.add_argument("--batch", type=int, default=2, help="posts per commit")
    p.add_argument("--text-bytes", type=int, default=300)
    args = p.parse_args()
    if set(args.order) - set(MODES) or not set(MODES) <= set(args.order):
        p.error("--order is a string of t and s holding both")
    load_before = os.getloadavg()
    phases: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="pchat-wal-", dir=".") as tmp:
        for mode in args.order * args.rounds:
            r = asyncio.run(phase(Path(tmp), mode, args))
            pooled = r.pop("_ms")
            phases.append({"mode": MODES[mode], **r, "ms": pooled})
            print(MODES[mode], {k: round(v, 3) for k, v in r.items()}, flush=True)
    modes: dict[str, dict[str, float]] = {}
    for name in MODES.values():
        ms = [v for ph in phases if ph["mode"] == name for v in ph["ms"]]  # type: ignore[union-attr]
        wal = max(float(ph["wal_max_mb"]) for ph in phases if ph["mode"] == name)  # type: ignore[arg-type]
        modes[name] = figures(ms, wal)
    t, s = modes["thread"], modes["sqlite"]
    ratios = {q: t[q] / s[q] if s[q] else 0.0 for q in ("p50_ms", "p99_ms", "p999_ms")}
    for ph in phases:
        del ph["ms"]
    result = {
        "bench": "wal_checkpoint",
        "settings": vars(args),
        "phases": phases,
        "modes": modes,
        "thread_over_sqlite": ratios,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "git": report.git_state(),
        "host": report.host(),
    }
    for name, m in modes.items():
        print(name, {k: round(v, 3) for k, v in m.items()})
    print("thread / sqlite:", {k: round(v, 3) for k, v in ratios.items()})
    print("load average before/after:", load_before, result["loadavg_after"])
    report.write_small(
        Path("bench/results") / time.strftime("wal-checkpoint-%Y%m%d-%H%M%S"), result
    )


if __name__ == "__main__":
    main()
