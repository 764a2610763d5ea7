"""The synchronous half of the SQLite chat store: one connection on the store's thread.

`SqliteDb` runs every statement; `core.store.sqlite.SqliteStore` hops each call
onto the one thread that owns it.
"""

from __future__ import annotations

import sqlite3

from core.errors import Conflict, NotFound, StoreError, StoreMissing
from core.store.base import (
    CategoryRecord,
    ClientKey,
    MessageRecord,
    NewMessage,
    OutboxEvent,
    OutboxRecord,
    RoomRecord,
    RoomRole,
    SigninRooms,
    UserRecord,
)
from core.store.fencing import check_tokens, tokens_of
from core.store.rows import (
    CATEGORY_COLS,
    CATEGORY_FIELDS,
    CATEGORY_ROLES,
    MESSAGE_COLS,
    ROOM_COLS,
    ROOM_FIELDS,
    ROOM_ROLES,
    USER_COLS,
    Assembly,
    category_principals,
    ha1_text,
    message_from_row,
    room_principals,
    user_from_row,
)
from core.store.sqlite_checkpoint import WAL_KEEP_BYTES
from core.store.sqlite_lock import BUSY_TIMEOUT_MS
from core.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from core.store.sqlite_user_data import INSERT_OUTBOX, SqliteUserData, json_list

# Every statement text below is a constant, so the sqlite3 statement cache keeps
# them all prepared (about 40); 128 leaves room without evicting hot ones.
STATEMENT_CACHE_SIZE = 128

HISTORY_LAST = f"SELECT {MESSAGE_COLS} FROM messages WHERE room_id = ? ORDER BY seq DESC LIMIT ?"
HISTORY_BEFORE = (
    f"SELECT {MESSAGE_COLS} FROM messages WHERE room_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
)
HISTORY_AFTER = (
    f"SELECT {MESSAGE_COLS} FROM messages WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
# The n newest matches; the planner walks the FTS hits, then the rows by rowid.
HISTORY_SEARCH = (
    "SELECT m.room_id, m.seq, m.author, m.ts_ms, m.text"
    " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
    " WHERE messages_fts MATCH ? AND m.room_id = ? ORDER BY m.seq DESC LIMIT ?"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (room_id, seq, author, ts_ms, text, client_key) VALUES (?, ?, ?, ?, ?, ?)"
)
_SHARD_EPOCHS = (
    "SELECT shard, epoch FROM shard_epochs WHERE shard IN (SELECT value FROM json_each(?))"
)


def fts_query(text: str) -> str | None:
    """User text as an FTS5 query: each word a quoted string, ANDed like plainto_tsquery.

    Quoting turns FTS5 syntax (``AND``, ``NEAR(``, ``*``, ``col:``) into plain words.
    None when no word holds a letter or digit: nothing can match such a query.
    """
    words = [w for w in text.split() if any(c.isalnum() for c in w)]
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class SqliteDb(SqliteUserData):
    """The synchronous half: lives on the store's one thread and owns the connection."""

    __slots__ = ()

    def __init__(self, path: str, *, autocheckpoint: bool = True) -> None:
        # isolation_level=None: no implicit BEGIN. Writes say BEGIN IMMEDIATE, so two
        # processes queue for the lock (core/store/sqlite_lock.py) instead of failing a
        # read-to-write upgrade.
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
        if not autocheckpoint:  # a WalCheckpointer does it, off the commit path
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_KEEP_BYTES}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Used in queries only, never in the schema, so other tools can open the file.
        conn.create_function("pchat_casefold", 1, str.casefold, deterministic=True)

    def migrate(self, create: bool = True) -> None:
        with self.write() as c:
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            if not create and c.execute(sql).fetchone() is None:
                raise StoreMissing("the SQLite file holds no pchat store")
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)")
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreError(f"store schema {version} is newer than this pchat's")
            for step in MIGRATIONS[version:]:
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

    def claim_domain(self, domain: str, record: bool) -> str:
        with self.write() as c:
            if record:
                c.execute("INSERT OR IGNORE INTO store_info VALUES ('domain', ?)", (domain,))
            row = c.execute("SELECT value FROM store_info WHERE key = 'domain'").fetchone()
            return "" if row is None else str(row[0])

    # -- users
    def get_user(self, uri: str) -> UserRecord | None:
        row = self.conn.execute(f"SELECT {USER_COLS} FROM users WHERE uri = ?", (uri,)).fetchone()
        return None if row is None else user_from_row(row)

    def put_user(self, u: UserRecord) -> None:
        self.conn.execute(
            f"INSERT OR REPLACE INTO users ({USER_COLS}) VALUES (?, ?, ?, ?, ?)",
            (u.uri, u.display_name, ha1_text(u), u.enabled, u.admin),
        )

    def put_users(self, users: list[UserRecord], replace: bool) -> int:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        rows = [(u.uri, u.display_name, ha1_text(u), u.enabled, u.admin) for u in users]
        with self.write() as c:
            before = c.total_changes
            c.executemany(f"{verb} INTO users ({USER_COLS}) VALUES (?, ?, ?, ?, ?)", rows)
            return c.total_changes - before

    def set_admin(self, uri: str, admin: bool) -> bool:
        sql = "UPDATE users SET admin = ? WHERE uri = ?"
        return self.conn.execute(sql, (admin, uri)).rowcount > 0

    def delete_user(self, uri: str) -> bool:
        return self.conn.execute("DELETE FROM users WHERE uri = ?", (uri,)).rowcount > 0

    def list_users(self) -> list[UserRecord]:
        rows = self.conn.execute(f"SELECT {USER_COLS} FROM users ORDER BY uri")
        return [user_from_row(r) for r in rows]

    # -- categories
    def put_category(self, cat: CategoryRecord) -> None:
        with self.write() as c:
            c.execute(
                f"INSERT INTO categories ({CATEGORY_COLS}, name_key) VALUES (?, ?, ?, ?, ?, ?, ?)"
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
                category_principals(cat),
            )

    def _categories(self, where: str, params: tuple[object, ...]) -> list[CategoryRecord]:
        sql = f"SELECT {CATEGORY_COLS} FROM categories {where} ORDER BY name_key, id"
        cats = Assembly(self.conn.execute(sql, params), CATEGORY_FIELDS, CATEGORY_ROLES)
        if cats.ids:
            cats.add_principals(
                self.conn.execute(
                    "SELECT category_id, role, principal FROM category_principals"
                    " WHERE category_id IN (SELECT value FROM json_each(?)) ORDER BY principal",
                    (json_list(cats.ids),),
                )
            )
        return cats.records(CategoryRecord)

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
                f"INSERT INTO rooms ({ROOM_COLS}, name_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " name = excluded.name, name_key = excluded.name_key,"
                " category_id = excluded.category_id, description = excluded.description,"
                " topic = excluded.topic, privacy = excluded.privacy, type = excluded.type,"
                " invitations = excluded.invitations, disabled = excluded.disabled,"
                " created_by = excluded.created_by, created_ms = excluded.created_ms,"
                " file_upload = excluded.file_upload",
                (room.id, room.name, room.category_id, room.description, room.topic, room.privacy)
                + (room.type, room.invitations, room.disabled, room.created_by, room.created_ms)
                + (room.file_upload, key),
            )
            c.execute("DELETE FROM room_principals WHERE room_id = ?", (room.id,))
            c.executemany(
                "INSERT INTO room_principals (room_id, role, principal) VALUES (?, ?, ?)",
                room_principals(room),
            )

    def _rooms(self, where: str, params: tuple[object, ...], limit: int = -1) -> list[RoomRecord]:
        sql = f"SELECT {ROOM_COLS} FROM rooms {where} ORDER BY name_key, id LIMIT ?"
        rooms = Assembly(self.conn.execute(sql, (*params, limit)), ROOM_FIELDS, ROOM_ROLES)
        if rooms.ids:
            rooms.add_principals(
                self.conn.execute(
                    "SELECT room_id, role, principal FROM room_principals"
                    " WHERE room_id IN (SELECT value FROM json_each(?)) ORDER BY principal",
                    (json_list(rooms.ids),),
                )
            )
        return rooms.records(RoomRecord)

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
        return self._rooms(where, (role, json_list(principals)))

    def delete_room(self, room_id: str) -> bool:
        with self.write() as c:
            # The messages_fts_delete trigger removes each message's FTS row.
            for table in ("messages", "follows", "invitations", "files"):
                c.execute(f"DELETE FROM {table} WHERE room_id = ?", (room_id,))
            return c.execute("DELETE FROM rooms WHERE id = ?", (room_id,)).rowcount > 0

    # -- messages
    def append_messages(self, messages: list[NewMessage], outbox: list[OutboxEvent]) -> None:
        rows = [(m.room_id, m.seq, m.author, m.ts_ms, m.text, m.client_key) for m in messages]
        tokens = tokens_of(messages, outbox)
        try:
            with self.write() as c:
                self._check_fences(tokens)
                c.executemany(_INSERT_MESSAGE, rows)
                if outbox:
                    c.executemany(INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in outbox])
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"a message seq is already stored ({exc})") from exc

    def _check_fences(self, tokens: list[tuple[int, int]]) -> None:
        """Inside the write's BEGIN IMMEDIATE: no claim can slip in before its COMMIT."""
        if tokens:
            rows = self.conn.execute(_SHARD_EPOCHS, (json_list(s for s, _ in tokens),))
            check_tokens(tokens, dict(rows.fetchall()))

    def claim_shards(self, shards: list[int]) -> dict[int, int]:
        with self.write() as c:
            c.executemany(
                "INSERT INTO shard_epochs VALUES (?, 1)"
                " ON CONFLICT (shard) DO UPDATE SET epoch = epoch + 1",
                [(s,) for s in shards],
            )
            return dict(c.execute(_SHARD_EPOCHS, (json_list(shards),)).fetchall())

    def add_outbox(self, events: list[OutboxEvent]) -> None:
        tokens = tokens_of(events)
        with self.write() as c:
            self._check_fences(tokens)
            c.executemany(INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in events])

    def outbox_head(self, limit: int) -> list[OutboxRecord]:
        rows = self.conn.execute(
            "SELECT id, kind, payload, ts_ms FROM compliance_outbox ORDER BY id LIMIT ?", (limit,)
        )
        return [OutboxRecord(id=r[0], kind=r[1], payload=r[2], ts_ms=r[3]) for r in rows]

    def delete_outbox(self, ids: list[int]) -> None:
        with self.write() as c:
            sql = "DELETE FROM compliance_outbox WHERE id IN (SELECT value FROM json_each(?))"
            c.execute(sql, (json_list(ids),))

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
        found = [message_from_row(r) for r in self.conn.execute(sql, params)]
        if not oldest_first:
            found.reverse()
        return found

    def delete_message(self, room_id: str, seq: int) -> bool:
        sql = "DELETE FROM messages WHERE room_id = ? AND seq = ?"
        return self.conn.execute(sql, (room_id, seq)).rowcount > 0

    # -- followed rooms
    def follow(self, user: str, room_id: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO follows VALUES (?, ?)", (user, room_id))

    def unfollow(self, user: str, room_id: str) -> None:
        self.conn.execute("DELETE FROM follows WHERE user_uri = ? AND room_id = ?", (user, room_id))

    def followed(self, user: str) -> list[str]:
        sql = "SELECT room_id FROM follows WHERE user_uri = ? ORDER BY room_id"
        return [r[0] for r in self.conn.execute(sql, (user,))]

    def followed_rooms(self, user: str) -> list[RoomRecord]:
        return self._rooms("WHERE id IN (SELECT room_id FROM follows WHERE user_uri = ?)", (user,))

    def signin_rooms(self, user: str, principals: list[str]) -> SigninRooms:
        invitations = self.pending_invitations(user)
        return SigninRooms(
            member=self.rooms_with_principal(principals, "member") if principals else [],
            manager=self.rooms_with_principal(principals, "manager") if principals else [],
            follower=self.followed_rooms(user),
            invitations=invitations,
            invited=self._rooms(
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json_list(sorted({inv.room_id for inv in invitations})),),
            )
            if invitations
            else [],
        )
