"""Taking SQLite's write lock with short sleeps between tries, when another process holds it.

Several workers of one host write one SQLite file, and each holds the write lock for one
group commit (~0.2 ms). SQLite's own busy handler sleeps 1, 2, 5, 10 ms … between tries,
so a commit that met another worker's paid 1–3 ms for a 0.2 ms wait: with two workers at
fanout-10k's rooms of 20 the commit's p90 was 1.2 ms against 0.25 ms with one (bench/
README.md, 2026-12-04 late). Here the lock is tried with no busy timeout, and the sleeps
between tries start at 50 µs and double up to 2 ms, within the same overall wait.
"""

from __future__ import annotations

import sqlite3
import time

# A `pchat admin` edit and a server commit queue behind each other for up to this long;
# both hold the write lock for milliseconds, so waiting 5 s means a stuck peer.
BUSY_TIMEOUT_MS = 5000
FIRST_SLEEP_S = 0.00005  # a quarter of a commit's lock: most waits end within a few tries
LONGEST_SLEEP_S = 0.002  # past this, a long holder (an admin edit, a backup step) is waited
# for in steps that cost no more CPU than SQLite's own handler.


def begin_immediate(conn: sqlite3.Connection, wait_s: float = BUSY_TIMEOUT_MS / 1000) -> None:
    """``BEGIN IMMEDIATE`` on ``conn``, retried while the lock is busy, for up to ``wait_s``;
    then the last "database is locked" error is raised. The connection's busy timeout is
    0 while it tries and ``BUSY_TIMEOUT_MS`` again after, for its other statements."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + wait_s
        sleep_s = FIRST_SLEEP_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # extended codes too
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(sleep_s)
            sleep_s = min(sleep_s * 2, LONGEST_SLEEP_S)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
