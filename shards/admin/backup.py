"""`pchat admin backup PATH` and `pchat admin restore PATH`: the SQLite chat store, copied
with SQLite's online backup API (a consistent copy while the server writes, WAL and all).

A PostgreSQL store is PostgreSQL's to back up (pg_dump / pg_restore, or its base backups):
both commands refuse it with the commands to use. Uploaded files' bytes live beside the
store (``files.dir``) and are copied with ordinary tools (docs/operations.md).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path

from core.config import Settings
from core.store.registry import sqlite_path
from core.store.sqlite_schema import SCHEMA_VERSION
from shards.admin.command import AdminError, Out
from shards.claim import CannotStart, InUse, lock_data_dir
from shards.store_claim import open_store

PAGES_PER_STEP = 1024  # 4 MiB a step: the server's writers wait at most one step's copy


def _sqlite_file(s: Settings, verb: str) -> Path:
    scheme = s.store_url.partition(":")[0].lower()
    if scheme != "sqlite":
        raise AdminError(
            f"pchat admin {verb} copies SQLite stores only; for PostgreSQL use its tools: "
            "pg_dump -Fc -f pchat.dump DBNAME to back up, pg_restore -d DBNAME pchat.dump "
            "into an empty database to restore (docs/operations.md)"
        )
    return Path(sqlite_path(s.store_url)).resolve()


def _copy(source: sqlite3.Connection, target: Path) -> None:
    dest = sqlite3.connect(target)
    try:
        source.backup(dest, pages=PAGES_PER_STEP)
    finally:
        dest.close()


async def backup(s: Settings, a: argparse.Namespace, out: Out) -> None:
    """Copies the live store to a new file; the server may keep running."""
    store_file = _sqlite_file(s, "backup")
    target = Path(a.path).resolve()
    if target.exists():
        raise AdminError(f"{target} exists; back up to a new file")
    store = await open_store(s, create=False)  # refuses a missing store or another domain
    await store.close()
    source = sqlite3.connect(f"file:{store_file}?mode=ro", uri=True)
    try:
        _copy(source, target)
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise AdminError(f"backup to {target} failed: {exc}") from None
    finally:
        source.close()
    out(f"chat store {store_file} backed up to {target} ({target.stat().st_size} bytes)")


def _check_backup(path: Path, domain: str) -> None:
    """The file is a pchat chat store of this schema and domain, else one line why not."""
    if not path.is_file():
        raise AdminError(f"no backup file {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            row = version.fetchone()
            info = conn.execute("SELECT value FROM store_info WHERE key = 'domain'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        raise AdminError(f"{path} is not a pchat chat store backup") from None
    if row is None or int(row[0]) > SCHEMA_VERSION:
        raise AdminError(f"{path} is not a chat store this pchat can read (schema {row})")
    if info is not None and info[0] != domain:
        raise AdminError(
            f"{path} is a store of domain {info[0]}, not {domain}: use --domain {info[0]}"
        )


async def restore(s: Settings, a: argparse.Namespace, out: Out) -> None:
    """Replaces the configured store with a backup; no server may run on the data dir."""
    store_file = _sqlite_file(s, "restore")
    source_path = Path(a.path).resolve()
    _check_backup(source_path, s.domain)
    if store_file.exists() and not a.replace:
        raise AdminError(f"a chat store exists at {store_file}; --replace replaces it")
    data_dir = Path(s.data_dir).resolve()
    try:
        lock = lock_data_dir(data_dir)  # held while copying: serve cannot start meanwhile
    except (InUse, CannotStart) as exc:
        raise AdminError(f"{exc}; stop it before restoring") from None
    try:
        store_file.parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        try:
            _copy(source, store_file)
        finally:
            source.close()
    except (OSError, sqlite3.Error) as exc:
        raise AdminError(f"restore into {store_file} failed: {exc}") from None
    finally:
        os.close(lock)
    store = await open_store(s, create=False)  # migrates an older backup, checks the domain
    await store.close()
    out(f"chat store {store_file} restored from {source_path}")
