"""SQLite chat store, the embedded default (store layer, ARCHITECTURE §5).

One ``sqlite3`` connection lives on one dedicated thread owned by the store;
every call hops there with ``run_in_executor``, so the event loop never waits
on the disk and the connection is never shared between threads.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar, TypeVarTuple

import msgspec

from core.errors import Conflict, NotFound, StoreError
from core.store.base import (
    CategoryRecord,
    ClientKey,
    InvitationRecord,
    MessageRecord,
    NewMessage,
    OutboxEvent,
    OutboxRecord,
    PrefRecord,
    RoomRecord,
    RoomRole,
    UserRecord,
)

SCHEMA_VERSION = 1
# A `pchat admin` edit and a server commit queue behind each other for up to this
# long; both hold the write lock for milliseconds, so waiting 5 s means a stuck peer.
BUSY_TIMEOUT_MS = 5000
# Every statement text below is a constant, so the sqlite3 statement cache keeps
# them all prepared (about 40); 128 leaves room without evicting hot ones.
STATEMENT_CACHE_SIZE = 128

_Ts = TypeVarTuple("_Ts")
_T = TypeVar("_T")

_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS users (uri TEXT PRIMARY KEY, display_name TEXT NOT NULL,"
    " ha1 TEXT NOT NULL DEFAULT '{}', enabled INTEGER NOT NULL DEFAULT 0,"
    " admin INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS categories (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " name_key TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',"
    " invitations INTEGER NOT NULL DEFAULT 1, file_upload INTEGER NOT NULL DEFAULT 1,"
    " history INTEGER NOT NULL DEFAULT 1)",
    "CREATE INDEX IF NOT EXISTS categories_name_key ON categories (name_key)",
    "CREATE TABLE IF NOT EXISTS category_principals ("
    " category_id TEXT NOT NULL REFERENCES categories (id) ON DELETE CASCADE,"
    " principal TEXT NOT NULL,"
    " role TEXT NOT NULL CHECK (role IN ('allowed', 'denied', 'creator')),"
    " PRIMARY KEY (category_id, role, principal))",
    # name_key is str.casefold(name), computed by the store: one Unicode-aware
    # rule on both backends, where lower()/NOCASE would fold only ASCII here.
    "CREATE TABLE IF NOT EXISTS rooms (id TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " name_key TEXT NOT NULL UNIQUE, category_id TEXT NOT NULL REFERENCES categories (id),"
    " description TEXT NOT NULL DEFAULT '', topic TEXT NOT NULL DEFAULT '',"
    " privacy TEXT NOT NULL CHECK (privacy IN ('open', 'closed', 'secret')),"
    " type TEXT NOT NULL CHECK (type IN ('normal', 'auditorium')),"
    " invitations TEXT NOT NULL CHECK (invitations IN ('inherit', 'off')),"
    " disabled INTEGER NOT NULL DEFAULT 0, created_by TEXT NOT NULL DEFAULT '',"
    " created_ms INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS rooms_category ON rooms (category_id)",
    "CREATE TABLE IF NOT EXISTS room_principals ("
    " room_id TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,"
    " principal TEXT NOT NULL,"
    " role TEXT NOT NULL CHECK (role IN ('member', 'manager', 'presenter')),"
    " PRIMARY KEY (room_id, role, principal))",
    "CREATE INDEX IF NOT EXISTS room_principals_principal ON room_principals (principal, role)",
    # (room_id, seq) is the key; the explicit INTEGER PRIMARY KEY is there because
    # the FTS5 external content table needs a rowid that VACUUM never renumbers.
    # No FK to rooms: one group commit carries many rooms, and a room deleted by
    # an admin meanwhile must not fail the other rooms' posts.
    "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, room_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL, author TEXT NOT NULL, ts_ms INTEGER NOT NULL, text TEXT NOT NULL,"
    " client_key TEXT NOT NULL DEFAULT '', UNIQUE (room_id, seq))",
    "CREATE INDEX IF NOT EXISTS messages_client_key ON messages (room_id, author, client_key)",
    # remove_diacritics 0 matches PostgreSQL's 'simple' configuration.
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(text, content='messages',"
    " content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN"
    " INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN"
    " INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    " END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF text ON messages BEGIN"
    " INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    " INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TABLE IF NOT EXISTS invitations (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " room_id TEXT NOT NULL, invitee TEXT NOT NULL, inviter TEXT NOT NULL,"
    " ts_ms INTEGER NOT NULL, delivered INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS invitations_pending ON invitations (invitee) WHERE NOT delivered",
    "CREATE INDEX IF NOT EXISTS invitations_room ON invitations (room_id)",
    "CREATE TABLE IF NOT EXISTS follows (user_uri TEXT NOT NULL, room_id TEXT NOT NULL,"
    " PRIMARY KEY (user_uri, room_id))",
    "CREATE INDEX IF NOT EXISTS follows_room ON follows (room_id)",
    "CREATE TABLE IF NOT EXISTS prefs (user_uri TEXT NOT NULL, label TEXT NOT NULL,"
    " seqid INTEGER NOT NULL, content BLOB NOT NULL, PRIMARY KEY (user_uri, label))",
    "CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, room_id TEXT NOT NULL,"
    " name TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
    " uploader TEXT NOT NULL, ts_ms INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS files_room ON files (room_id)",
    "CREATE TABLE IF NOT EXISTS compliance_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL, payload TEXT NOT NULL, ts_ms INTEGER NOT NULL)",
)
# _MIGRATIONS[v] takes schema version v to v + 1; version 0 is an empty file.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (_SCHEMA,)

_USER_COLS = "uri, display_name, ha1, enabled, admin"
_CATEGORY_COLS = "id, name, description, invitations, file_upload, history"
_ROOM_COLS = (
    "id, name, category_id, description, topic, privacy, type, invitations, disabled,"
    " created_by, created_ms"
)
_ROOM_FIELDS = tuple(col.strip() for col in _ROOM_COLS.split(","))
_MESSAGE_COLS = "room_id, seq, author, ts_ms, text"
_HISTORY_LAST = f"SELECT {_MESSAGE_COLS} FROM messages WHERE room_id = ? ORDER BY seq DESC LIMIT ?"
_HISTORY_BEFORE = (
    f"SELECT {_MESSAGE_COLS} FROM messages WHERE room_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
)
_HISTORY_AFTER = (
    f"SELECT {_MESSAGE_COLS} FROM messages WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
# The n newest matches; the planner walks the FTS hits, then the rows by rowid.
_HISTORY_SEARCH = (
    "SELECT m.room_id, m.seq, m.author, m.ts_ms, m.text"
    " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
    " WHERE messages_fts MATCH ? AND m.room_id = ? ORDER BY m.seq DESC LIMIT ?"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (room_id, seq, author, ts_ms, text, client_key) VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_OUTBOX = "INSERT INTO compliance_outbox (kind, payload, ts_ms) VALUES (?, ?, ?)"
_CATEGORY_ROLES = {"allowed": "allowed", "denied": "denied", "creator": "creators"}
_ROOM_ROLES = {"member": "members", "manager": "managers", "presenter": "presenters"}

_json_encoder = msgspec.json.Encoder()
_ha1_decoder = msgspec.json.Decoder(dict[str, str])


def fts_query(text: str) -> str | None:
    """User text as an FTS5 query: each word a quoted string, ANDed like plainto_tsquery.

    Quoting turns FTS5 syntax (``AND``, ``NEAR(``, ``*``, ``col:``) into plain words.
    None when no word holds a letter or digit: nothing can match such a query.
    """
    words = [w for w in text.split() if any(c.isalnum() for c in w)]
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def _json_list(values: Iterable[object]) -> str:
    return _json_encoder.encode(list(values)).decode()


def _user(row: Any) -> UserRecord:
    ha1 = _ha1_decoder.decode(row[2])
    return UserRecord(
        uri=row[0], display_name=row[1], ha1=ha1, enabled=bool(row[3]), admin=bool(row[4])
    )


def _message(row: Any) -> MessageRecord:
    return MessageRecord(room_id=row[0], seq=row[1], author=row[2], ts_ms=row[3], text=row[4])


def _invitation(row: Any) -> InvitationRecord:
    return InvitationRecord(
        id=row[0],
        room_id=row[1],
        invitee=row[2],
        inviter=row[3],
        ts_ms=row[4],
        delivered=bool(row[5]),
    )


class _Db:
    """The synchronous half: lives on the store's one thread and owns the connection."""

    __slots__ = ("conn",)

    def __init__(self, path: str) -> None:
        # isolation_level=None: no implicit BEGIN. Writes say BEGIN IMMEDIATE, so two
        # processes queue on busy_timeout instead of failing a read-to-write upgrade.
        self.conn = sqlite3.connect(
            path, isolation_level=None, cached_statements=STATEMENT_CACHE_SIZE
        )
        conn = self.conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        # With WAL, NORMAL syncs at checkpoints rather than at each commit: a commit
        # survives a process crash or kill -9 (it is in the WAL file); only an OS crash
        # or power cut can lose the last few. That is the durability pchat promises.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Used in queries only, never in the schema, so other tools can open the file.
        conn.create_function("pchat_casefold", 1, str.casefold, deterministic=True)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # a failed COMMIT can leave it open
                self.conn.execute("ROLLBACK")
            raise

    def migrate(self) -> None:
        with self.write() as c:
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)")
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreError(f"store schema {version} is newer than this pchat's")
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    c.execute(statement)
            c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
            c.execute("INSERT OR IGNORE INTO meta VALUES ('revision', 0)")

    def close(self) -> None:
        self.conn.close()

    # -- change tracking
    def revision(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])

    def bump_revision(self) -> int:
        sql = "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value"
        with self.write() as c:
            return int(c.execute(sql).fetchone()[0])

    # -- users
    def get_user(self, uri: str) -> UserRecord | None:
        row = self.conn.execute(f"SELECT {_USER_COLS} FROM users WHERE uri = ?", (uri,)).fetchone()
        return None if row is None else _user(row)

    def put_user(self, u: UserRecord) -> None:
        ha1 = _json_encoder.encode(u.ha1).decode()
        self.conn.execute(
            f"INSERT OR REPLACE INTO users ({_USER_COLS}) VALUES (?, ?, ?, ?, ?)",
            (u.uri, u.display_name, ha1, u.enabled, u.admin),
        )

    def list_users(self) -> list[UserRecord]:
        return [_user(r) for r in self.conn.execute(f"SELECT {_USER_COLS} FROM users ORDER BY uri")]

    # -- categories
    def put_category(self, cat: CategoryRecord) -> None:
        roles = (("allowed", cat.allowed), ("denied", cat.denied), ("creator", cat.creators))
        with self.write() as c:
            c.execute(
                f"INSERT INTO categories ({_CATEGORY_COLS}, name_key) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                " name_key = excluded.name_key, description = excluded.description,"
                " invitations = excluded.invitations, file_upload = excluded.file_upload,"
                " history = excluded.history",
                (cat.id, cat.name, cat.description, cat.invitations, cat.file_upload)
                + (cat.history, cat.name.casefold()),
            )
            c.execute("DELETE FROM category_principals WHERE category_id = ?", (cat.id,))
            c.executemany(
                "INSERT INTO category_principals (category_id, role, principal) VALUES (?, ?, ?)",
                [(cat.id, role, p) for role, principals in roles for p in set(principals)],
            )

    def _categories(self, where: str, params: tuple[object, ...]) -> list[CategoryRecord]:
        sql = f"SELECT {_CATEGORY_COLS} FROM categories {where} ORDER BY name_key, id"
        cats: dict[str, dict[str, Any]] = {
            r[0]: dict(zip(("id", "name", "description"), r[:3], strict=True))
            | {"invitations": bool(r[3]), "file_upload": bool(r[4]), "history": bool(r[5])}
            | {"allowed": [], "denied": [], "creators": []}
            for r in self.conn.execute(sql, params)
        }
        if cats:
            for cat_id, role, principal in self.conn.execute(
                "SELECT category_id, role, principal FROM category_principals"
                " WHERE category_id IN (SELECT value FROM json_each(?)) ORDER BY principal",
                (_json_list(cats),),
            ):
                cats[cat_id][_CATEGORY_ROLES[role]].append(principal)
        return [msgspec.convert(cat, CategoryRecord) for cat in cats.values()]

    def get_category(self, category_id: str) -> CategoryRecord | None:
        found = self._categories("WHERE id = ?", (category_id,))
        return found[0] if found else None

    def get_category_by_name(self, name: str) -> CategoryRecord | None:
        found = self._categories("WHERE name_key = ?", (name.casefold(),))
        return found[0] if found else None

    def list_categories(self) -> list[CategoryRecord]:
        return self._categories("", ())

    def delete_category(self, category_id: str) -> bool:
        with self.write() as c:
            if c.execute("SELECT 1 FROM rooms WHERE category_id = ?", (category_id,)).fetchone():
                return False
            return c.execute("DELETE FROM categories WHERE id = ?", (category_id,)).rowcount > 0

    # -- rooms
    def put_room(self, room: RoomRecord) -> None:
        key = room.name.casefold()
        roles = (
            ("member", room.members),
            ("manager", room.managers),
            ("presenter", room.presenters),
        )
        with self.write() as c:
            if c.execute(
                "SELECT 1 FROM rooms WHERE name_key = ? AND id <> ?", (key, room.id)
            ).fetchone():
                raise Conflict(f"another room is named {room.name!r}")
            if not c.execute(
                "SELECT 1 FROM categories WHERE id = ?", (room.category_id,)
            ).fetchone():
                raise NotFound(f"no category {room.category_id!r}")
            c.execute(
                f"INSERT INTO rooms ({_ROOM_COLS}, name_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " name = excluded.name, name_key = excluded.name_key,"
                " category_id = excluded.category_id, description = excluded.description,"
                " topic = excluded.topic, privacy = excluded.privacy, type = excluded.type,"
                " invitations = excluded.invitations, disabled = excluded.disabled,"
                " created_by = excluded.created_by, created_ms = excluded.created_ms",
                (room.id, room.name, room.category_id, room.description, room.topic, room.privacy)
                + (room.type, room.invitations, room.disabled, room.created_by, room.created_ms)
                + (key,),
            )
            c.execute("DELETE FROM room_principals WHERE room_id = ?", (room.id,))
            c.executemany(
                "INSERT INTO room_principals (room_id, role, principal) VALUES (?, ?, ?)",
                [(room.id, role, p) for role, principals in roles for p in set(principals)],
            )

    def _rooms(self, where: str, params: tuple[object, ...], limit: int = -1) -> list[RoomRecord]:
        sql = f"SELECT {_ROOM_COLS} FROM rooms {where} ORDER BY name_key, id LIMIT ?"
        rooms: dict[str, dict[str, Any]] = {
            r[0]: dict(zip(_ROOM_FIELDS, r, strict=True))
            | {"disabled": bool(r[8]), "members": [], "managers": [], "presenters": []}
            for r in self.conn.execute(sql, (*params, limit))
        }
        if rooms:
            for room_id, role, principal in self.conn.execute(
                "SELECT room_id, role, principal FROM room_principals"
                " WHERE room_id IN (SELECT value FROM json_each(?)) ORDER BY principal",
                (_json_list(rooms),),
            ):
                rooms[room_id][_ROOM_ROLES[role]].append(principal)
        return [msgspec.convert(room, RoomRecord) for room in rooms.values()]

    def get_room(self, room_id: str) -> RoomRecord | None:
        found = self._rooms("WHERE id = ?", (room_id,))
        return found[0] if found else None

    def get_room_by_name(self, name: str) -> RoomRecord | None:
        found = self._rooms("WHERE name_key = ?", (name.casefold(),))
        return found[0] if found else None

    def list_rooms(self) -> list[RoomRecord]:
        return self._rooms("", ())

    def search_rooms(self, text: str, limit: int) -> list[RoomRecord]:
        # instr, not LIKE: the user's % and _ stay literal.
        where = "WHERE instr(name_key, ?) > 0 OR instr(pchat_casefold(description), ?) > 0"
        key = text.casefold()
        return self._rooms(where, (key, key), limit)

    def rooms_with_principal(self, principals: list[str], role: RoomRole) -> list[RoomRecord]:
        where = (
            "WHERE id IN (SELECT room_id FROM room_principals WHERE role = ?"
            " AND principal IN (SELECT value FROM json_each(?)))"
        )
        return self._rooms(where, (role, _json_list(principals)))

    def delete_room(self, room_id: str) -> bool:
        with self.write() as c:
            # The messages_fts_delete trigger removes each message's FTS row.
            for table in ("messages", "follows", "invitations"):
                c.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
            return c.execute("DELETE FROM rooms WHERE id = ?", (room_id,)).rowcount > 0

    # -- messages
    def append_messages(self, messages: list[NewMessage], outbox: list[OutboxEvent]) -> None:
        rows = [(m.room_id, m.seq, m.author, m.ts_ms, m.text, m.client_key) for m in messages]
        try:
            with self.write() as c:
                c.executemany(_INSERT_MESSAGE, rows)
                if outbox:
                    c.executemany(_INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in outbox])
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"a message seq is already stored ({exc})") from exc

    def add_outbox(self, events: list[OutboxEvent]) -> None:
        with self.write() as c:
            c.executemany(_INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in events])

    def outbox_head(self, limit: int) -> list[OutboxRecord]:
        rows = self.conn.execute(
            "SELECT id, kind, payload, ts_ms FROM compliance_outbox ORDER BY id LIMIT ?", (limit,)
        )
        return [OutboxRecord(id=r[0], kind=r[1], payload=r[2], ts_ms=r[3]) for r in rows]

    def delete_outbox(self, ids: list[int]) -> None:
        with self.write() as c:
            sql = "DELETE FROM compliance_outbox WHERE id IN (SELECT value FROM json_each(?))"
            c.execute(sql, (_json_list(ids),))

    def outbox_stats(self) -> tuple[int, int]:
        row = self.conn.execute("SELECT count(*), min(ts_ms) FROM compliance_outbox").fetchone()
        return int(row[0]), int(row[1] or 0)

    def max_seq(self, room_id: str) -> int:
        sql = "SELECT max(seq) FROM messages WHERE room_id = ?"
        return int(self.conn.execute(sql, (room_id,)).fetchone()[0] or 0)

    def recent_client_keys(self, room_id: str, since_ms: int) -> list[ClientKey]:
        rows = self.conn.execute(
            "SELECT author, client_key, seq, ts_ms FROM messages"
            " WHERE room_id = ? AND ts_ms >= ? AND client_key <> '' ORDER BY seq",
            (room_id, since_ms),
        )
        return [ClientKey(author=r[0], client_key=r[1], seq=r[2], ts_ms=r[3]) for r in rows]

    def history(
        self, sql: str, params: tuple[object, ...], oldest_first: bool
    ) -> list[MessageRecord]:
        found = [_message(r) for r in self.conn.execute(sql, params)]
        if not oldest_first:
            found.reverse()
        return found

    def delete_message(self, room_id: str, seq: int) -> bool:
        sql = "DELETE FROM messages WHERE room_id = ? AND seq = ?"
        return self.conn.execute(sql, (room_id, seq)).rowcount > 0

    # -- invitations
    def add_invitations(self, invitations: list[InvitationRecord]) -> list[InvitationRecord]:
        sql = (
            "INSERT INTO invitations (room_id, invitee, inviter, ts_ms, delivered)"
            " VALUES (?, ?, ?, ?, ?)"
        )
        stored: list[InvitationRecord] = []
        with self.write() as c:
            for inv in invitations:
                params = (inv.room_id, inv.invitee, inv.inviter, inv.ts_ms, inv.delivered)
                new_id = c.execute(sql, params).lastrowid
                assert new_id is not None  # an INSERT into a rowid table always sets it
                stored.append(msgspec.structs.replace(inv, id=new_id))
        return stored

    def pending_invitations(self, invitee: str) -> list[InvitationRecord]:
        rows = self.conn.execute(
            "SELECT id, room_id, invitee, inviter, ts_ms, delivered FROM invitations"
            " WHERE invitee = ? AND NOT delivered ORDER BY id",
            (invitee,),
        )
        return [_invitation(r) for r in rows]

    def invitations_after(self, last_id: int, limit: int) -> list[InvitationRecord]:
        rows = self.conn.execute(
            "SELECT id, room_id, invitee, inviter, ts_ms, delivered FROM invitations"
            " WHERE id > ? AND NOT delivered ORDER BY id LIMIT ?",
            (last_id, limit),
        )
        return [_invitation(r) for r in rows]

    def mark_invitations_delivered(self, ids: list[int]) -> None:
        sql = "UPDATE invitations SET delivered = 1 WHERE id IN (SELECT value FROM json_each(?))"
        self.conn.execute(sql, (_json_list(ids),))

    # -- followed rooms
    def follow(self, user: str, room_id: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO follows VALUES (?, ?)", (user, room_id))

    def unfollow(self, user: str, room_id: str) -> None:
        self.conn.execute("DELETE FROM follows WHERE user_uri = ? AND room_id = ?", (user, room_id))

    def followed(self, user: str) -> list[str]:
        sql = "SELECT room_id FROM follows WHERE user_uri = ? ORDER BY room_id"
        return [r[0] for r in self.conn.execute(sql, (user,))]

    # -- preferences
    def get_pref(self, user: str, label: str) -> PrefRecord | None:
        sql = "SELECT seqid, content FROM prefs WHERE user_uri = ? AND label = ?"
        row = self.conn.execute(sql, (user, label)).fetchone()
        if row is None:
            return None
        return PrefRecord(user=user, label=label, seqid=row[0], content=bytes(row[1]))

    def set_pref(self, user: str, label: str, seqid: int, content: bytes) -> PrefRecord | None:
        # One statement either way: the compare-and-set is atomic without BEGIN.
        if seqid == 0:
            sql = "INSERT INTO prefs VALUES (?, ?, 1, ?) ON CONFLICT DO NOTHING"
            cur = self.conn.execute(sql, (user, label, content))
        else:
            sql = (
                "UPDATE prefs SET seqid = seqid + 1, content = ?"
                " WHERE user_uri = ? AND label = ? AND seqid = ?"
            )
            cur = self.conn.execute(sql, (content, user, label, seqid))
        if cur.rowcount != 1:
            return None
        return PrefRecord(user=user, label=label, seqid=seqid + 1, content=content)


class SqliteStore:
    """``ChatStore`` on one SQLite file; several processes may open the same file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._db: _Db | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _call(self, fn: Callable[[_Db, *_Ts], _T], *args: *_Ts) -> _T:
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise StoreError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, functools.partial(fn, db, *args))
        except (sqlite3.Error, msgspec.ValidationError) as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    async def open(self) -> None:
        if self._db is not None:
            return
        # One thread: sqlite3 connections must not be shared, and one writer per
        # process is all WAL allows anyway; group commit keeps it busy enough.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pchat-sqlite")
        loop = asyncio.get_running_loop()
        db: _Db | None = None
        try:
            db = await loop.run_in_executor(executor, _Db, self._path)
            await loop.run_in_executor(executor, db.migrate)
        except BaseException as exc:
            if db is not None:
                executor.submit(db.close)  # not awaited: we may be here on cancellation
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"sqlite: cannot open {self._path}: {exc}") from exc
            raise
        self._db, self._executor = db, executor

    async def close(self) -> None:
        db, executor = self._db, self._executor
        if db is None or executor is None:
            return
        self._db = self._executor = None
        try:
            # Queued behind any call still running, so those finish first.
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        finally:
            executor.shutdown(wait=True)

    # -- change tracking
    async def revision(self) -> int:
        return await self._call(_Db.revision)

    async def bump_revision(self) -> int:
        return await self._call(_Db.bump_revision)

    # -- users
    async def get_user(self, uri: str) -> UserRecord | None:
        return await self._call(_Db.get_user, uri)

    async def put_user(self, user: UserRecord) -> None:
        await self._call(_Db.put_user, user)

    async def list_users(self) -> list[UserRecord]:
        return await self._call(_Db.list_users)

    # -- categories
    async def put_category(self, category: CategoryRecord) -> None:
        await self._call(_Db.put_category, category)

    async def get_category(self, category_id: str) -> CategoryRecord | None:
        return await self._call(_Db.get_category, category_id)

    async def get_category_by_name(self, name: str) -> CategoryRecord | None:
        return await self._call(_Db.get_category_by_name, name)

    async def list_categories(self) -> list[CategoryRecord]:
        return await self._call(_Db.list_categories)

    async def delete_category(self, category_id: str) -> bool:
        return await self._call(_Db.delete_category, category_id)

    # -- rooms
    async def put_room(self, room: RoomRecord) -> None:
        await self._call(_Db.put_room, room)

    async def get_room(self, room_id: str) -> RoomRecord | None:
        return await self._call(_Db.get_room, room_id)

    async def get_room_by_name(self, name: str) -> RoomRecord | None:
        return await self._call(_Db.get_room_by_name, name)

    async def list_rooms(self) -> list[RoomRecord]:
        return await self._call(_Db.list_rooms)

    async def search_rooms(self, text: str, limit: int) -> list[RoomRecord]:
        if limit <= 0:
            return []
        return await self._call(_Db.search_rooms, text, limit)

    async def rooms_with_principal(self, principals: list[str], role: RoomRole) -> list[RoomRecord]:
        if not principals:
            return []
        return await self._call(_Db.rooms_with_principal, principals, role)

    async def delete_room(self, room_id: str) -> bool:
        return await self._call(_Db.delete_room, room_id)

    # -- messages
    async def append_messages(
        self, messages: list[NewMessage], outbox: list[OutboxEvent] | None = None
    ) -> None:
        if messages or outbox:
            await self._call(_Db.append_messages, messages, outbox or [])

    async def add_outbox(self, events: list[OutboxEvent]) -> None:
        if events:
            await self._call(_Db.add_outbox, events)

    async def outbox_head(self, limit: int) -> list[OutboxRecord]:
        return await self._call(_Db.outbox_head, limit)

    async def delete_outbox(self, ids: list[int]) -> None:
        if ids:
            await self._call(_Db.delete_outbox, ids)

    async def outbox_stats(self) -> tuple[int, int]:
        return await self._call(_Db.outbox_stats)

    async def max_seq(self, room_id: str) -> int:
        return await self._call(_Db.max_seq, room_id)

    async def recent_client_keys(self, room_id: str, since_ms: int) -> list[ClientKey]:
        return await self._call(_Db.recent_client_keys, room_id, since_ms)

    # SQLite reads a negative LIMIT as "no limit": count <= 0 never reaches SQL.
    async def history_last(self, room_id: str, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        return await self._call(_Db.history, _HISTORY_LAST, (room_id, count), False)

    async def history_before(self, room_id: str, seq: int, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        return await self._call(_Db.history, _HISTORY_BEFORE, (room_id, seq, count), False)

    async def history_after(self, room_id: str, seq: int, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        return await self._call(_Db.history, _HISTORY_AFTER, (room_id, seq, count), True)

    async def history_search(self, room_id: str, text: str, count: int) -> list[MessageRecord]:
        query = fts_query(text)
        if query is None or count <= 0:
            return []
        return await self._call(_Db.history, _HISTORY_SEARCH, (query, room_id, count), False)

    async def delete_message(self, room_id: str, seq: int) -> bool:
        return await self._call(_Db.delete_message, room_id, seq)

    # -- invitations
    async def add_invitations(self, invitations: list[InvitationRecord]) -> list[InvitationRecord]:
        if not invitations:
            return []
        return await self._call(_Db.add_invitations, invitations)

    async def pending_invitations(self, invitee: str) -> list[InvitationRecord]:
        return await self._call(_Db.pending_invitations, invitee)

    async def mark_invitations_delivered(self, ids: list[int]) -> None:
        if ids:
            await self._call(_Db.mark_invitations_delivered, ids)

    async def invitations_after(self, last_id: int, limit: int) -> list[InvitationRecord]:
        return await self._call(_Db.invitations_after, last_id, limit)

    # -- followed rooms
    async def follow(self, user: str, room_id: str) -> None:
        await self._call(_Db.follow, user, room_id)

    async def unfollow(self, user: str, room_id: str) -> None:
        await self._call(_Db.unfollow, user, room_id)

    async def followed(self, user: str) -> list[str]:
        return await self._call(_Db.followed, user)

    # -- preferences
    async def get_pref(self, user: str, label: str) -> PrefRecord | None:
        return await self._call(_Db.get_pref, user, label)

    async def set_pref(
        self, user: str, label: str, seqid: int, content: bytes
    ) -> PrefRecord | None:
        return await self._call(_Db.set_pref, user, label, seqid, content)
