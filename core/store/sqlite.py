"""SQLite chat store, the embedded default (store layer, ARCHITECTURE §5).

One ``sqlite3`` connection lives on one dedicated thread owned by the store;
every call hops there through a `ThreadLane`, so the event loop never waits
on the disk and the connection is never shared between threads. The statements
themselves are in `core.store.sqlite_db`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import msgspec

from core.errors import StoreError, StoreMissing
from core.store.base import (
    CategoryRecord,
    ClientKey,
    FileRecord,
    InvitationRecord,
    MessageRecord,
    NewMessage,
    OutboxEvent,
    OutboxRecord,
    PrefRecord,
    RoomRecord,
    RoomRole,
    SigninRooms,
    UserRecord,
)
from core.store.sqlite_checkpoint import WalCheckpointer
from core.store.sqlite_db import (
    HISTORY_AFTER,
    HISTORY_BEFORE,
    HISTORY_LAST,
    HISTORY_SEARCH,
    SqliteDb,
    fts_query,
)
from core.store.thread_lane import ThreadLane

_Ts = TypeVarTuple("_Ts")
_T = TypeVar("_T")


class SqliteStore:
    """``ChatStore`` on one SQLite file; several processes may open the same file.

    Its commits never checkpoint the WAL: a `WalCheckpointer` thread does, beside them.
    ``background_checkpoints=False`` leaves them to SQLite's own, in the commit that takes
    the WAL past 1,000 pages (what bench/wal_checkpoint.py compares against).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, background_checkpoints: bool = True
    ) -> None:
        self._path = os.fspath(path)
        self._background = background_checkpoints
        self._db: SqliteDb | None = None
        self._lane: ThreadLane | None = None
        self._checkpointer: WalCheckpointer | None = None

    async def _call(self, fn: Callable[[SqliteDb, *_Ts], _T], *args: *_Ts) -> _T:
        db, lane = self._db, self._lane
        if db is None or lane is None:
            raise StoreError("the SQLite store is not open")
        try:
            return await lane.call(fn, db, *args)
        except (sqlite3.Error, msgspec.ValidationError) as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    async def open(self, *, create: bool = True) -> None:
        if self._db is not None:
            return
        if not create and not os.path.exists(self._path):
            raise StoreMissing(f"no chat store at {self._path}")
        # One thread: sqlite3 connections must not be shared, and one writer per
        # process is all WAL allows anyway; group commit keeps it busy enough.
        lane = ThreadLane("pchat-sqlite")
        db: SqliteDb | None = None
        try:
            autocheckpoint = not self._background
            db = await lane.call(lambda: SqliteDb(self._path, autocheckpoint=autocheckpoint))
            await lane.call(db.migrate, create)
        except BaseException as exc:
            if db is not None:
                lane.call(db.close)  # not awaited: we may be here on cancellation
            lane.stop(wait=False)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"sqlite: cannot open {self._path}: {exc}") from exc
            raise
        self._db, self._lane = db, lane
        if self._background:
            self._checkpointer = WalCheckpointer(self._path)
            self._checkpointer.start()

    async def close(self) -> None:
        db, lane = self._db, self._lane
        if db is None or lane is None:
            return
        self._db = self._lane = None
        checkpointer, self._checkpointer = self._checkpointer, None
        try:
            if checkpointer is not None:  # joined on the lane: a last round may sync
                await lane.call(checkpointer.stop)
            # Queued behind any call still running, so those finish first.
            await lane.call(db.close)
        finally:
            lane.stop()

    # -- change tracking
    async def revision(self) -> int:
        return await self._call(SqliteDb.revision)

    async def bump_revision(self) -> int:
        return await self._call(SqliteDb.bump_revision)

    async def claim_domain(self, domain: str, *, record: bool = True) -> str:
        return await self._call(SqliteDb.claim_domain, domain, record)

    # -- users
    async def get_user(self, uri: str) -> UserRecord | None:
        return await self._call(SqliteDb.get_user, uri)

    async def put_user(self, user: UserRecord) -> None:
        await self._call(SqliteDb.put_user, user)

    async def put_users(self, users: list[UserRecord], *, replace: bool) -> int:
        return await self._call(SqliteDb.put_users, users, replace)

    async def set_admin(self, uri: str, admin: bool) -> bool:
        return await self._call(SqliteDb.set_admin, uri, admin)

    async def list_users(self) -> list[UserRecord]:
        return await self._call(SqliteDb.list_users)

    async def delete_user(self, uri: str) -> bool:
        return await self._call(SqliteDb.delete_user, uri)

    # -- categories
    async def put_category(self, category: CategoryRecord) -> None:
        await self._call(SqliteDb.put_category, category)

    async def get_category(self, category_id: str) -> CategoryRecord | None:
        return await self._call(SqliteDb.get_category, category_id)

    async def get_category_by_name(self, name: str) -> CategoryRecord | None:
        return await self._call(SqliteDb.get_category_by_name, name)

    async def list_categories(self) -> list[CategoryRecord]:
        return await self._call(SqliteDb.list_categories)

    async def delete_category(self, category_id: str) -> bool:
        return await self._call(SqliteDb.delete_category, category_id)

    # -- rooms
    async def put_room(self, room: RoomRecord) -> None:
        await self._call(SqliteDb.put_room, room)

    async def get_room(self, room_id: str) -> RoomRecord | None:
        return await self._call(SqliteDb.get_room, room_id)

    async def get_room_by_name(self, name: str) -> RoomRecord | None:
        return await self._call(SqliteDb.get_room_by_name, name)

    async def list_rooms(self) -> list[RoomRecord]:
        return await self._call(SqliteDb.list_rooms)

    async def search_rooms(self, text: str, limit: int) -> list[RoomRecord]:
        if limit <= 0:
            return []
        return await self._call(SqliteDb.search_rooms, text, limit)

    async def rooms_with_principal(self, principals: list[str], role: RoomRole) -> list[RoomRecord]:
        if not principals:
            return []
        return await self._call(SqliteDb.rooms_with_principal, principals, role)

    async def delete_room(self, room_id: str) -> bool:
        return await self._call(SqliteDb.delete_room, room_id)

    # -- messages
    async def append_messages(
        self, messages: list[NewMessage], outbox: list[OutboxEvent] | None = None
    ) -> None:
        if messages or outbox:
            await self._call(SqliteDb.append_messages, messages, outbox or [])

    async def add_outbox(self, events: list[OutboxEvent]) -> None:
        if events:
            await self._call(SqliteDb.add_outbox, events)

    async def claim_shards(self, shards: list[int]) -> dict[int, int]:
        if not shards:
            return {}
        return await self._call(SqliteDb.claim_shards, shards)

    async def outbox_head(self, limit: int) -> list[OutboxRecord]:
        return await self._call(SqliteDb.outbox_head, limit)

    async def delete_outbox(self, ids: list[int]) -> None:
        if ids:
            await self._call(SqliteDb.delete_outbox, ids)

    async def outbox_stats(self) -> tuple[int, int]:
        return await self._call(SqliteDb.outbox_stats)

    async def max_seq(self, room_id: str) -> int:
        return await self._call(SqliteDb.max_seq, room_id)

    async def recent_client_keys(self, room_id: str, since_ms: int) -> list[ClientKey]:
        return await self._call(SqliteDb.recent_client_keys, room_id, since_ms)

    # SQLite reads a negative LIMIT as "no limit": count <= 0 never reaches SQL.
    async def history_last(self, room_id: str, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        return await self._call(SqliteDb.history, HISTORY_LAST, (room_id, count), False)

    async def history_before(self, room_id: str, seq: int, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        return await self._call(SqliteDb.history, HISTORY_BEFORE, (room_id, seq, count), False)

    async def history_after(self, room_id: str, seq: int, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        return await self._call(SqliteDb.history, HISTORY_AFTER, (room_id, seq, count), True)

    async def history_search(self, room_id: str, text: str, count: int) -> list[MessageRecord]:
        query = fts_query(text)
        if query is None or count <= 0:
            return []
        return await self._call(SqliteDb.history, HISTORY_SEARCH, (query, room_id, count), False)

    async def delete_message(self, room_id: str, seq: int) -> bool:
        return await self._call(SqliteDb.delete_message, room_id, seq)

    # -- invitations
    async def add_invitations(self, invitations: list[InvitationRecord]) -> list[InvitationRecord]:
        if not invitations:
            return []
        return await self._call(SqliteDb.add_invitations, invitations)

    async def pending_invitations(self, invitee: str) -> list[InvitationRecord]:
        return await self._call(SqliteDb.pending_invitations, invitee)

    async def mark_invitations_delivered(self, ids: list[int]) -> None:
        if ids:
            await self._call(SqliteDb.mark_invitations_delivered, ids)

    async def invitations_after(self, last_id: int, limit: int) -> list[InvitationRecord]:
        return await self._call(SqliteDb.invitations_after, last_id, limit)

    # -- followed rooms
    async def follow(self, user: str, room_id: str) -> None:
        await self._call(SqliteDb.follow, user, room_id)

    async def unfollow(self, user: str, room_id: str) -> None:
        await self._call(SqliteDb.unfollow, user, room_id)

    async def followed(self, user: str) -> list[str]:
        return await self._call(SqliteDb.followed, user)

    async def followed_rooms(self, user: str) -> list[RoomRecord]:
        return await self._call(SqliteDb.followed_rooms, user)

    async def signin_rooms(self, user: str, principals: list[str]) -> SigninRooms:
        return await self._call(SqliteDb.signin_rooms, user, principals)  # one thread hop

    # -- preferences
    async def get_pref(self, user: str, label: str) -> PrefRecord | None:
        return await self._call(SqliteDb.get_pref, user, label)

    async def set_pref(
        self, user: str, label: str, seqid: int, content: bytes
    ) -> PrefRecord | None:
        return await self._call(SqliteDb.set_pref, user, label, seqid, content)

    async def add_file(self, record: FileRecord, outbox: list[OutboxEvent]) -> None:
        await self._call(SqliteDb.add_file, record, outbox)

    async def get_file(self, file_id: str) -> FileRecord | None:
        return await self._call(SqliteDb.get_file, file_id)

    async def room_files(self, room_id: str) -> list[FileRecord]:
        return await self._call(SqliteDb.room_files, room_id)

    async def room_file_bytes(self, room_id: str) -> int:
        return await self._call(SqliteDb.room_file_bytes, room_id)

    async def set_file_post(self, file_id: str, seq: int) -> None:
        await self._call(SqliteDb.set_file_post, file_id, seq)

    async def delete_file(self, file_id: str) -> bool:
        return await self._call(SqliteDb.delete_file, file_id)
