"""Taking SQLite's write lock while another connection holds it (real files, real locks)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from core.store.sqlite_lock import BUSY_TIMEOUT_MS, begin_immediate


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    return conn


def begins(conn: sqlite3.Connection) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("BEGIN") else None)
    return seen


def hold_lock(path: Path, release: threading.Event) -> threading.Thread:
    holder = connect(path)
    holder.execute("BEGIN IMMEDIATE")

    def run() -> None:
        release.wait(10)
        holder.execute("COMMIT")
        holder.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def locked_by_another(db: Path) -> tuple[sqlite3.Connection, threading.Thread, threading.Event]:
    """A connection to ``db``, and a thread holding its write lock until the event is set."""
    connect(db).execute("CREATE TABLE t (x)")
    release = threading.Event()
    return connect(db), hold_lock(db, release), release


def test_a_held_lock_is_tried_again_in_short_steps_until_it_is_free(tmp_path: Path) -> None:
    conn, holder, release = locked_by_another(tmp_path / "t.db")
    tries = begins(conn)
    threading.Timer(0.1, release.set).start()
    begin_immediate(conn)  # returns once the holder has committed
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("COMMIT")
    holder.join()
    # SQLite's own busy handler would have waited inside one BEGIN; here each try is a
    # statement of its own, at most 2 ms apart after the first few.
    assert len(tries) >= 10, tries
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (BUSY_TIMEOUT_MS,)


def test_a_lock_held_past_the_wait_is_the_busy_error(tmp_path: Path) -> None:
    conn, holder, release = locked_by_another(tmp_path / "t.db")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            begin_immediate(conn, wait_s=0.05)
        assert not conn.in_transaction
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (BUSY_TIMEOUT_MS,)
    finally:
        release.set()
        holder.join()


def test_other_errors_are_not_tried_again(tmp_path: Path) -> None:
    conn = connect(tmp_path / "t.db")
    conn.execute("BEGIN")
    tries = begins(conn)
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        begin_immediate(conn)
    assert len(tries) == 1
