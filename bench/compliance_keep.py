"""What keeping an upload for compliance adds to the upload's own path, in one run.

    python -m bench.compliance_keep [--sizes-mb 1,20] [--rounds 10]

With compliance on, an upload's bytes are kept in the compliance file store before the
upload is recorded (shards/web/files.py ``_keep_for_compliance``). For each size this
times, interleaved round by round on one disk: the upload's own durable write (the
directory backend: write in 64 KiB chunks with sha256, fsync, rename, folder fsync), the
keep as a hard link (both folders on one file system, the default layout), and the keep
as a copy (the fallback across file systems). Wall-clock medians; the figure to quote is
each keep's ratio to the write. Writes bench/results/compliance-keep-<time>/result.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.load import report
from core.compliance import file_store
from core.compliance.file_store import ComplianceFileStore
from core.files.directory import DirectoryStorage
from core.files.names import new_file_id, stored_name

CHUNK = 64 * 1024  # files.chunk_bytes' default


async def _write(storage: DirectoryStorage, name: str, data: bytes) -> None:
    writer = await storage.create(name)
    for i in range(0, len(data), CHUNK):
        await writer.write(data[i : i + CHUNK])
    await writer.commit()


def _timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _copy_only(store: ComplianceFileStore, source: Path, name: str) -> None:
    linked = file_store._linked
    file_store._linked = lambda _s, _t: False  # the fallback, as across file systems
    try:
        store.keep(source, name)
    finally:
        file_store._linked = linked


async def measure(folder: Path, size: int, rounds: int) -> dict[str, float]:
    storage = DirectoryStorage(str(folder / "files"))
    store = ComplianceFileStore(folder / "compliance-files")
    data = os.urandom(size)
    times: dict[str, list[float]] = {"write": [], "link": [], "copy": []}
    for _ in range(rounds):
        names = [stored_name(new_file_id(), "f.bin") for _ in range(2)]
        for name in names:
            start = time.perf_counter()
            await _write(storage, name, data)
            times["write"].append(time.perf_counter() - start)
        (a, b), (src_a, src_b) = names, [Path(storage.local_path(n)) for n in names]
        times["link"].append(_timed(lambda: store.keep(src_a, a)))  # noqa: B023 (called at once)
        times["copy"].append(_timed(lambda: _copy_only(store, src_b, b)))  # noqa: B023
        await storage.remove(names)
        store.remove(names)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    return {
        "write_ms": round(med["write"], 3),
        "link_ms": round(med["link"], 3),
        "copy_ms": round(med["copy"], 3),
        "link_to_write": round(med["link"] / med["write"], 4),
        "copy_to_write": round(med["copy"] / med["write"], 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", default="1,20", help="file sizes, comma-separated MB (10^6)")
    p.add_argument("--rounds", type=int, default=10, help="rounds per size (bounded work)")
    args = p.parse_args()
    sizes = [int(float(s) * 1_000_000) for s in args.sizes_mb.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pchat-keep-", dir=".") as tmp:
        runs = {
            f"{s // 1_000_000}MB": asyncio.run(measure(Path(tmp), s, args.rounds)) for s in sizes
        }
    result = {
        "bench": "compliance_keep",
        "rounds": args.rounds,
        "sizes": runs,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "git": report.git_state(),
        "host": report.host(),
    }
    for label, r in runs.items():
        print(label, r)
    print("load average before/after:", load_before, result["loadavg_after"])
    report.write_small(
        Path("bench/results") / time.strftime("compliance-keep-%Y%m%d-%H%M%S"), result
    )


if __name__ == "__main__":
    main()
