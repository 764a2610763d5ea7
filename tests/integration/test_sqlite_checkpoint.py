"""The SQLite store's WAL is checkpointed beside its commits, never inside one (real files)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from core.store import sqlite as sqlite_store
from core.store.base import CategoryRecord, NewMessage, RoomRecord
from core.store.sqlite import SqliteStore
from core.store.sqlite_checkpoint import WalCheckpointer

PAGE = 4096
TEXT = "x" * 3000  # ~1 page per post with its index and full-text rows


def posts(first: int, count: int) -> list[NewMessage]:
    return [
        NewMessage(room_id="r1", seq=s, author="sip:a@x", ts_ms=s, text=f"{s} {TEXT}")
        for s in range(first, first + count)
    ]


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    await store.put_category(CategoryRecord(id="cat", name="Main"))
    await store.put_room(RoomRecord(id="r1", name="Lobby", category_id="cat"))
    return store


def checkpointers(interval_s: float) -> Callable[[str], WalCheckpointer]:
    return lambda path: WalCheckpointer(path, interval_s=interval_s)


def recorded(monkeypatch: pytest.MonkeyPatch, interval_s: float) -> list[WalCheckpointer]:
    """The stores opened from here on use checkpointers every ``interval_s``, listed."""
    made: list[WalCheckpointer] = []

    def make(path: str) -> WalCheckpointer:
        made.append(WalCheckpointer(path, interval_s=interval_s))
        return made[-1]

    monkeypatch.setattr(sqlite_store, "WalCheckpointer", make)
    return made


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)


async def test_commits_leave_the_wal_to_the_checkpointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's own default checkpoints in the commit that passes 1,000 pages, which
    # restarts the WAL from its start: it would never grow far past 1,000 pages.
    monkeypatch.setattr(sqlite_store, "WalCheckpointer", checkpointers(3600))
    db = tmp_path / "chat.db"
    store = await opened(db)
    try:
        for first in range(1, 3001, 250):
            await store.append_messages(posts(first, 250))
        wal = Path(f"{db}-wal").stat().st_size
        assert wal > 2500 * PAGE, wal
        assert db.stat().st_size < 1000 * PAGE  # nothing was copied back yet
    finally:
        await store.close()


async def test_the_checkpointer_copies_the_wal_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = recorded(monkeypatch, 0.05)
    db = tmp_path / "chat.db"
    store = await opened(db)
    try:
        for first in range(1, 2001, 250):
            await store.append_messages(posts(first, 250))
        await until(lambda: db.stat().st_size > 2000 * PAGE)
        assert made[0].rounds > 0
        assert len(await store.history_last("r1", 5)) == 5
    finally:
        await store.close()


async def test_a_long_read_neither_blocks_commits_nor_the_checkpointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = recorded(monkeypatch, 0.05)
    db = tmp_path / "chat.db"
    store = await opened(db)
    await store.append_messages(posts(1, 10))
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM messages").fetchone() == (10,)
        size = db.stat().st_size
        rounds = made[0].rounds
        for first in range(11, 1511, 250):
            await store.append_messages(posts(first, 250))
        await until(lambda: made[0].rounds >= rounds + 3)  # rounds end while it reads
        assert db.stat().st_size < size + 500 * PAGE  # the pinned snapshot stays in the WAL
        reader.execute("COMMIT")
        await until(lambda: db.stat().st_size > size + 1000 * PAGE)
    finally:
        reader.close()
        await store.close()


def wal_threads() -> int:
    return [t.name for t in threading.enumerate()].count("pchat-sqlite-wal")


async def test_close_ends_the_checkpointer_thread(tmp_path: Path) -> None:
    before = wal_threads()  # other tests' stores may still be open
    store = await opened(tmp_path / "chat.db")
    assert wal_threads() == before + 1
    await store.close()
    assert wal_threads() == before


async def test_the_wal_stays_bounded_under_back_to_back_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PASSIVE alone never finds the WAL wholly copied while commits keep landing, so the
    # next commit never starts it over: it grew to the size of everything written.
    monkeypatch.setattr(sqlite_store, "WalCheckpointer", checkpointers(0.02))
    db = tmp_path / "chat.db"
    store = await opened(db)
    wal = Path(f"{db}-wal")
    largest = 0
    try:
        for first in range(1, 12001, 40):  # ~21,000 WAL pages in all, at disk speed
            await store.append_messages(posts(first, 40))
            largest = max(largest, wal.stat().st_size)
        assert largest < 12_000 * PAGE, largest // PAGE  # 4,000-8,000 seen
    finally:
        await store.close()
