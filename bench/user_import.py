"""`pchat admin user import` against `pchat admin user add`: users per second, one command.

    python -m bench.user_import [--users 10000] [--add-sample 20] [--runs 3]

A fresh SQLite store per run; the import is one process for all users (JSON Lines with
passwords, so the digest hashes are computed too), `user add` one process per user as an
operator's loop would run it (timed on --add-sample users and given per user). Writes
bench/results/user-import-<time>/result.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import report


def _pchat(data: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    cmd = [sys.executable, "-m", "shards.cli", "admin", *args, "--data-dir", str(data)]
    subprocess.run(cmd, check=True, capture_output=True, env=env)


def _import_run(users: int) -> float:
    with tempfile.TemporaryDirectory(prefix="pchat-import-") as folder:
        data, path = Path(folder) / "data", Path(folder) / "users.jsonl"
        with path.open("w") as f:
            for n in range(users):
                f.write(json.dumps({"address": f"u{n:06d}@example.com", "password": f"p{n}"}))
                f.write("\n")
        _pchat(data, "init")
        started = time.perf_counter()
        _pchat(data, "user", "import", str(path))
        return time.perf_counter() - started


def _add_run(users: int) -> float:
    with tempfile.TemporaryDirectory(prefix="pchat-add-") as folder:
        data = Path(folder) / "data"
        _pchat(data, "init")
        started = time.perf_counter()
        for n in range(users):
            _pchat(data, "user", "add", f"a{n}@example.com", "--password", f"p{n}")
        return (time.perf_counter() - started) / users


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=10_000, help="users per import")
    p.add_argument("--add-sample", type=int, default=20, help="users added one process each")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, help="result directory (default bench/results/<run>)")
    args = p.parse_args()
    host = report.host()  # before the runs: its load average says if the host was quiet
    imports = [_import_run(args.users) for _ in range(args.runs)]
    median = statistics.median(imports)
    add_s = _add_run(args.add_sample)
    result = {
        "users": args.users,
        "import_s": [round(t, 2) for t in imports],
        "import_users_per_s": round(args.users / median),
        "add_s_per_user": round(add_s, 3),
        "add_users_per_s": round(1 / add_s, 1),
        "speedup": round(add_s * args.users / median, 1),
        "git": report.git_state(),
        "host": host,
    }
    out = args.out or report.RESULTS / time.strftime("user-import-%Y%m%d-%H%M%S")
    report.write_small(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
