"""PostgreSQL chat store for pools of servers (store layer, ARCHITECTURE §5), on asyncpg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import msgspec

from core.errors import Conflict, NotFound, StoreError
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
from core.store.fencing import check_tokens, tokens_of
from core.store.postgres_schema import migrate
from core.store.rows import (
    CATEGORY_COLS,
    CATEGORY_FIELDS,
    CATEGORY_ROLES,
    FILE_COLS,
    INVITATION_COLS,
    MESSAGE_COLS,
    ROOM_COLS,
    ROOM_FIELDS,
    ROOM_ROLES,
    USER_COLS,
    Assembly,
    category_principals,
    file_from_row,
    file_row,
    ha1_text,
    invitation_from_row,
    message_from_row,
    room_principals,
    user_from_row,
)

# Defaults of Settings.store_pool_min/max (core/config.py says why these values).
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 4
CONNECT_TIMEOUT_S = 10.0
# A process paused (SIGSTOP, a VM stall) inside a transaction keeps its locks; a fenced
# write holds FOR SHARE on its shard's epoch row, which would block the claim of the
# worker taking over. The server ends such a transaction after this long instead.
IDLE_IN_TRANSACTION_MS = 5000
# What the driver raises for a failed connection or statement: surfaced as StoreError.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


async def connect_pool(
    dsn: str, size: tuple[int, int], what: str, server_settings: dict[str, str] | None = None
) -> Any:
    """A pool of ``size`` (min, max) connections; ``StoreError`` names ``what`` and the
    cause. The chat and the compliance stores both connect through it."""
    try:
        return await asyncpg.create_pool(
            dsn, min_size=size[0], max_size=size[1], timeout=CONNECT_TIMEOUT_S,
            server_settings=server_settings,
        )  # fmt: skip
    except DRIVER_ERRORS as exc:
        raise StoreError(f"{what}cannot connect: {exc}") from exc


@asynccontextmanager
async def pooled(pool: Any, not_open: str, what: str) -> AsyncIterator[Any]:
    """A connection of ``pool``: ``StoreError(not_open)`` while there is no pool, driver
    and network failures as ``StoreError`` naming ``what``."""
    if pool is None:
        raise StoreError(not_open)
    try:
        async with pool.acquire() as conn:
            yield conn
    except DRIVER_ERRORS as exc:
        raise StoreError(f"{what}{exc}") from exc


_INSERT_OUTBOX = "INSERT INTO compliance_outbox (kind, payload, ts_ms) VALUES ($1, $2, $3)"
# COLLATE "C" orders by code point, as SQLite does, whatever the database locale.
_BY_NAME = 'ORDER BY name_key COLLATE "C", id COLLATE "C"'


async def _check_fences(conn: Any, tokens: list[tuple[int, int]]) -> None:
    """Inside the write's transaction. FOR SHARE conflicts with a claim's UPDATE: a claim
    waits for this commit, or this read waits for the claim and sees its new epoch."""
    if tokens:
        rows = await conn.fetch(
            "SELECT shard, epoch FROM shard_epochs WHERE shard = ANY($1::integer[]) FOR SHARE",
            [shard for shard, _ in tokens],
        )
        check_tokens(tokens, {int(r[0]): int(r[1]) for r in rows})


class PostgresStore:
    """``ChatStore`` on a PostgreSQL database; any number of servers may share it."""

    def __init__(self, dsn: str, pool: tuple[int, int] = (POOL_MIN_SIZE, POOL_MAX_SIZE)) -> None:
        self._dsn = dsn
        self._pool_size = pool  # (min, max) connections of this process
        self._pool: Any = None  # asyncpg.Pool once open

    def _conn(self) -> AbstractAsyncContextManager[Any]:
        """A pooled connection; driver and network failures leave as ``StoreError``."""
        return pooled(self._pool, "the PostgreSQL store is not open", "postgres: ")

    async def open(self, *, create: bool = True) -> None:
        if self._pool is not None:
            return
        pool = await connect_pool(
            self._dsn, self._pool_size, "postgres: ",
            {"idle_in_transaction_session_timeout": str(IDLE_IN_TRANSACTION_MS)},
        )  # fmt: skip
        self._pool = pool
        try:
            async with self._conn() as conn:
                await migrate(conn, create=create)
        except BaseException:
            self._pool = None
            pool.terminate()  # not awaited: we may be here on cancellation
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        async with self._conn() as conn:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

    async def _fetchval(self, sql: str, *args: object) -> Any:
        async with self._conn() as conn:
            return await conn.fetchval(sql, *args)

    async def _execute(self, sql: str, *args: object) -> int:
        """Runs one statement; returns the affected row count from its status tag."""
        async with self._conn() as conn:
            status: str = await conn.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    # -- change tracking
    async def revision(self) -> int:
        return int(await self._fetchval("SELECT value FROM meta WHERE key = 'revision'"))

    async def bump_revision(self) -> int:
        sql = "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value"
        return int(await self._fetchval(sql))

    async def claim_domain(self, domain: str, *, record: bool = True) -> str:
        async with self._conn() as conn, conn.transaction():
            if record:
                await conn.execute(
                    "INSERT INTO store_info VALUES ('domain', $1) ON CONFLICT (key) DO NOTHING",
                    domain,
                )
            found = await conn.fetchval("SELECT value FROM store_info WHERE key = 'domain'")
            return "" if found is None else str(found)

    # -- users
    async def get_user(self, uri: str) -> UserRecord | None:
        rows = await self._fetch(f"SELECT {USER_COLS} FROM users WHERE uri = $1", uri)
        return user_from_row(rows[0]) if rows else None

    async def put_user(self, user: UserRecord) -> None:
        await self._execute(
            f"INSERT INTO users ({USER_COLS}) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (uri) DO UPDATE SET display_name = excluded.display_name,"
            " ha1 = excluded.ha1, enabled = excluded.enabled, admin = excluded.admin",
            user.uri,
            user.display_name,
            ha1_text(user),
            user.enabled,
            user.admin,
        )

    async def put_users(self, users: list[UserRecord], *, replace: bool) -> int:
        conflict = (
            "DO UPDATE SET display_name = excluded.display_name, ha1 = excluded.ha1,"
            " enabled = excluded.enabled, admin = excluded.admin"
            if replace
            else "DO NOTHING"
        )
        # RETURNING counts what was written: executemany cannot, and one statement over
        # arrays is one round trip for the whole batch.
        sql = (
            f"INSERT INTO users ({USER_COLS}) SELECT * FROM unnest($1::text[], $2::text[],"
            f" $3::text[], $4::boolean[], $5::boolean[]) ON CONFLICT (uri) {conflict} RETURNING uri"
        )
        rows = await self._fetch(
            sql,
            [u.uri for u in users],
            [u.display_name for u in users],
            [ha1_text(u) for u in users],
            [u.enabled for u in users],
            [u.admin for u in users],
        )
        return len(rows)

    async def set_admin(self, uri: str, admin: bool) -> bool:
        rows = await self._fetch(
            "UPDATE users SET admin = $2 WHERE uri = $1 RETURNING uri", uri, admin
        )
        return bool(rows)

    async def delete_user(self, uri: str) -> bool:
        rows = await self._fetch("DELETE FROM users WHERE uri = $1 RETURNING uri", uri)
        return bool(rows)

    async def list_users(self) -> list[UserRecord]:
        rows = await self._fetch(f'SELECT {USER_COLS} FROM users ORDER BY uri COLLATE "C"')
        return [user_from_row(row) for row in rows]

    # -- categories
    async def put_category(self, category: CategoryRecord) -> None:
        c = category
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO categories ({CATEGORY_COLS}, name_key)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET"
                " name = excluded.name, name_key = excluded.name_key,"
                " description = excluded.description, invitations = excluded.invitations,"
                " file_upload = excluded.file_upload, history = excluded.history",
                *(c.id, c.name, c.description, c.invitations, c.file_upload, c.history),
                c.name.casefold(),
            )
            await conn.execute("DELETE FROM category_principals WHERE category_id = $1", c.id)
            await conn.executemany(
                "INSERT INTO category_principals (category_id, role, principal)"
                " VALUES ($1, $2, $3)",
                category_principals(c),
            )

    async def _categories(self, where: str, *args: object) -> list[CategoryRecord]:
        sql = f"SELECT {CATEGORY_COLS} FROM categories {where} {_BY_NAME}"
        async with self._conn() as conn:
            cats = Assembly(await conn.fetch(sql, *args), CATEGORY_FIELDS, CATEGORY_ROLES)
            principals = await conn.fetch(
                "SELECT category_id, role, principal FROM category_principals"
                ' WHERE category_id = ANY($1::text[]) ORDER BY principal COLLATE "C"',
                cats.ids,
            )
        cats.add_principals(principals)
        return cats.records(CategoryRecord)

    async def get_category(self, category_id: str) -> CategoryRecord | None:
        found = await self._categories("WHERE id = $1", category_id)
        return found[0] if found else None

    async def get_category_by_name(self, name: str) -> CategoryRecord | None:
        found = await self._categories("WHERE name_key = $1", name.casefold())
        return found[0] if found else None

    async def list_categories(self) -> list[CategoryRecord]:
        return await self._categories("")

    async def delete_category(self, category_id: str) -> bool:
        async with self._conn() as conn, conn.transaction():
            # Locks the category row, so no room can be put into it meanwhile.
            sql = "SELECT 1 FROM categories WHERE id = $1 FOR UPDATE"
            if await conn.fetchval(sql, category_id) is None:
                return False
            if await conn.fetchval("SELECT 1 FROM rooms WHERE category_id = $1", category_id):
                return False
            await conn.execute("DELETE FROM categories WHERE id = $1", category_id)
            return True

    # -- rooms
    async def put_room(self, room: RoomRecord) -> None:
        r, key = room, room.name.casefold()
        async with self._conn() as conn, conn.transaction():
            sql = "SELECT 1 FROM rooms WHERE name_key = $1 AND id <> $2"
            if await conn.fetchval(sql, key, r.id):
                raise Conflict(f"another room is named {r.name!r}")
            sql = "SELECT 1 FROM categories WHERE id = $1 FOR SHARE"
            if await conn.fetchval(sql, r.category_id) is None:
                raise NotFound(f"no category {r.category_id!r}")
            try:
                await conn.execute(
                    f"INSERT INTO rooms ({ROOM_COLS}, name_key) VALUES"
                    " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                    " name_key = excluded.name_key, category_id = excluded.category_id,"
                    " description = excluded.description, topic = excluded.topic,"
                    " privacy = excluded.privacy, type = excluded.type,"
                    " invitations = excluded.invitations, disabled = excluded.disabled,"
                    " created_by = excluded.created_by, created_ms = excluded.created_ms,"
                    " file_upload = excluded.file_upload",
                    *(r.id, r.name, r.category_id, r.description, r.topic, r.privacy, r.type),
                    *(r.invitations, r.disabled, r.created_by, r.created_ms, r.file_upload, key),
                )
            except asyncpg.UniqueViolationError as exc:  # a concurrent put took the name
                raise Conflict(f"another room is named {r.name!r}") from exc
            await conn.execute("DELETE FROM room_principals WHERE room_id = $1", r.id)
            await conn.executemany(
                "INSERT INTO room_principals (room_id, role, principal) VALUES ($1, $2, $3)",
                room_principals(r),
            )

    async def _rooms(self, where: str, *args: object, limit: int | None = None) -> list[RoomRecord]:
        # LIMIT NULL is no limit; a parameter keeps one prepared statement per query.
        sql = f"SELECT {ROOM_COLS} FROM rooms {where} {_BY_NAME} LIMIT ${len(args) + 1}"
        async with self._conn() as conn:
            rooms = Assembly(await conn.fetch(sql, *args, limit), ROOM_FIELDS, ROOM_ROLES)
            principals = await conn.fetch(
                "SELECT room_id, role, principal FROM room_principals"
                ' WHERE room_id = ANY($1::text[]) ORDER BY principal COLLATE "C"',
                rooms.ids,
            )
        rooms.add_principals(principals)
        return rooms.records(RoomRecord)

    async def get_room(self, room_id: str) -> RoomRecord | None:
        found = await self._rooms("WHERE id = $1", room_id)
        return found[0] if found else None

    async def get_room_by_name(self, name: str) -> RoomRecord | None:
        found = await self._rooms("WHERE name_key = $1", name.casefold())
        return found[0] if found else None

    async def list_rooms(self) -> list[RoomRecord]:
        return await self._rooms("")

    async def search_rooms(self, text: str, limit: int) -> list[RoomRecord]:
        if limit <= 0:
            return []
        # strpos, not LIKE: the user's % and _ stay literal. lower() on the
        # description folds what the database locale knows (all of Unicode under
        # C.UTF-8 or a UTF-8 locale), close to the casefold() used for names.
        where = "WHERE strpos(name_key, $1) > 0 OR strpos(lower(description), $1) > 0"
        return await self._rooms(where, text.casefold(), limit=limit)

    async def rooms_with_principal(self, principals: list[str], role: RoomRole) -> list[RoomRecord]:
        if not principals:
            return []
        where = (
            "WHERE id IN (SELECT room_id FROM room_principals"
            " WHERE role = $1 AND principal = ANY($2::text[]))"
        )
        return await self._rooms(where, role, principals)

    async def delete_room(self, room_id: str) -> bool:
        async with self._conn() as conn, conn.transaction():
            for table in ("messages", "follows", "invitations", "files"):
                await conn.execute(f"DELETE FROM {table} WHERE room_id = $1", room_id)
            status: str = await conn.execute("DELETE FROM rooms WHERE id = $1", room_id)
        return status != "DELETE 0"

    # -- messages
    async def append_messages(
        self, messages: list[NewMessage], outbox: list[OutboxEvent] | None = None
    ) -> None:
        if not messages and not outbox:
            return
        rows = [(m.room_id, m.seq, m.author, m.ts_ms, m.text, m.client_key) for m in messages]
        events = [(e.kind, e.payload, e.ts_ms) for e in outbox or []]
        tokens = tokens_of(messages, outbox or [])
        async with self._conn() as conn:
            try:
                async with conn.transaction():
                    await _check_fences(conn, tokens)
                    if rows:
                        await conn.executemany(
                            "INSERT INTO messages (room_id, seq, author, ts_ms, text, client_key)"
                            " VALUES ($1, $2, $3, $4, $5, $6)",
                            rows,
                        )
                    if events:
                        await conn.executemany(_INSERT_OUTBOX, events)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"a message seq is already stored ({exc})") from exc

    async def add_outbox(self, events: list[OutboxEvent]) -> None:
        if events:
            async with self._conn() as conn, conn.transaction():
                await _check_fences(conn, tokens_of(events))
                await conn.executemany(
                    _INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in events]
                )

    async def claim_shards(self, shards: list[int]) -> dict[int, int]:
        if not shards:
            return {}
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                "INSERT INTO shard_epochs SELECT unnest($1::integer[]), 1"
                " ON CONFLICT (shard) DO UPDATE SET epoch = shard_epochs.epoch + 1"
                " RETURNING shard, epoch",
                shards,
            )
        return {int(r[0]): int(r[1]) for r in rows}

    async def outbox_head(self, limit: int) -> list[OutboxRecord]:
        rows = await self._fetch(
            "SELECT id, kind, payload, ts_ms FROM compliance_outbox ORDER BY id LIMIT $1", limit
        )
        return [OutboxRecord(id=r[0], kind=r[1], payload=r[2], ts_ms=r[3]) for r in rows]

    async def delete_outbox(self, ids: list[int]) -> None:
        if ids:
            await self._execute("DELETE FROM compliance_outbox WHERE id = ANY($1::bigint[])", ids)

    async def outbox_stats(self) -> tuple[int, int]:
        rows = await self._fetch("SELECT count(*), min(ts_ms) FROM compliance_outbox")
        return int(rows[0][0]), int(rows[0][1] or 0)

    async def max_seq(self, room_id: str) -> int:
        sql = "SELECT max(seq) FROM messages WHERE room_id = $1"
        return int(await self._fetchval(sql, room_id) or 0)

    async def recent_client_keys(self, room_id: str, since_ms: int) -> list[ClientKey]:
        rows = await self._fetch(
            "SELECT author, client_key, seq, ts_ms FROM messages"
            " WHERE room_id = $1 AND ts_ms >= $2 AND client_key <> '' ORDER BY seq",
            room_id,
            since_ms,
        )
        return [ClientKey(author=r[0], client_key=r[1], seq=r[2], ts_ms=r[3]) for r in rows]

    async def _history(self, sql: str, *args: object) -> list[MessageRecord]:
        return [message_from_row(row) for row in await self._fetch(sql, *args)]

    async def history_last(self, room_id: str, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        sql = f"SELECT {MESSAGE_COLS} FROM messages WHERE room_id = $1 ORDER BY seq DESC LIMIT $2"
        return (await self._history(sql, room_id, count))[::-1]

    async def history_before(self, room_id: str, seq: int, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        sql = (
            f"SELECT {MESSAGE_COLS} FROM messages WHERE room_id = $1 AND seq < $2"
            " ORDER BY seq DESC LIMIT $3"
        )
        return (await self._history(sql, room_id, seq, count))[::-1]

    async def history_after(self, room_id: str, seq: int, count: int) -> list[MessageRecord]:
        if count <= 0:
            return []
        sql = (
            f"SELECT {MESSAGE_COLS} FROM messages WHERE room_id = $1 AND seq > $2"
            " ORDER BY seq LIMIT $3"
        )
        return await self._history(sql, room_id, seq, count)

    async def history_search(self, room_id: str, text: str, count: int) -> list[MessageRecord]:
        # Same guard as SQLite: text without a letter or digit has no lexeme to match.
        if count <= 0 or not any(c.isalnum() for c in text):
            return []
        sql = (
            f"SELECT {MESSAGE_COLS} FROM messages WHERE room_id = $1"
            " AND tsv @@ plainto_tsquery('simple', $2) ORDER BY seq DESC LIMIT $3"
        )
        return (await self._history(sql, room_id, text, count))[::-1]

    async def delete_message(self, room_id: str, seq: int) -> bool:
        sql = "DELETE FROM messages WHERE room_id = $1 AND seq = $2"
        return await self._execute(sql, room_id, seq) > 0

    # -- invitations
    async def add_invitations(self, invitations: list[InvitationRecord]) -> list[InvitationRecord]:
        sql = (
            "INSERT INTO invitations (room_id, invitee, inviter, ts_ms, delivered)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id"
        )
        stored: list[InvitationRecord] = []
        async with self._conn() as conn, conn.transaction():
            for inv in invitations:
                args = (inv.room_id, inv.invitee, inv.inviter, inv.ts_ms, inv.delivered)
                new_id = int(await conn.fetchval(sql, *args))
                stored.append(msgspec.structs.replace(inv, id=new_id))
        return stored

    async def pending_invitations(self, invitee: str) -> list[InvitationRecord]:
        rows = await self._fetch(
            f"SELECT {INVITATION_COLS} FROM invitations"
            " WHERE invitee = $1 AND NOT delivered ORDER BY id",
            invitee,
        )
        return [invitation_from_row(row) for row in rows]

    async def invitations_after(self, last_id: int, limit: int) -> list[InvitationRecord]:
        rows = await self._fetch(
            f"SELECT {INVITATION_COLS} FROM invitations"
            " WHERE id > $1 AND NOT delivered ORDER BY id LIMIT $2",
            last_id,
            limit,
        )
        return [invitation_from_row(row) for row in rows]

    async def mark_invitations_delivered(self, ids: list[int]) -> None:
        if ids:
            sql = "UPDATE invitations SET delivered = true WHERE id = ANY($1::bigint[])"
            await self._execute(sql, ids)

    # -- followed rooms
    async def follow(self, user: str, room_id: str) -> None:
        await self._execute(
            "INSERT INTO follows VALUES ($1, $2) ON CONFLICT DO NOTHING", user, room_id
        )

    async def unfollow(self, user: str, room_id: str) -> None:
        await self._execute(
            "DELETE FROM follows WHERE user_uri = $1 AND room_id = $2", user, room_id
        )

    async def followed(self, user: str) -> list[str]:
        sql = 'SELECT room_id FROM follows WHERE user_uri = $1 ORDER BY room_id COLLATE "C"'
        return [row[0] for row in await self._fetch(sql, user)]

    async def followed_rooms(self, user: str) -> list[RoomRecord]:
        return await self._rooms(
            "WHERE id IN (SELECT room_id FROM follows WHERE user_uri = $1)", user
        )

    async def signin_rooms(self, user: str, principals: list[str]) -> SigninRooms:
        # No thread hop here (asyncpg): four queries on the pool (five with invitations),
        # one call for the worker.
        invitations = await self.pending_invitations(user)
        invited = sorted({inv.room_id for inv in invitations})
        return SigninRooms(
            member=await self.rooms_with_principal(principals, "member"),
            manager=await self.rooms_with_principal(principals, "manager"),
            follower=await self.followed_rooms(user),
            invitations=invitations,
            invited=await self._rooms("WHERE id = ANY($1::text[])", invited) if invited else [],
        )

    # -- preferences
    async def get_pref(self, user: str, label: str) -> PrefRecord | None:
        sql = "SELECT seqid, content FROM prefs WHERE user_uri = $1 AND label = $2"
        rows = await self._fetch(sql, user, label)
        if not rows:
            return None
        return PrefRecord(user=user, label=label, seqid=rows[0][0], content=bytes(rows[0][1]))

    async def set_pref(
        self, user: str, label: str, seqid: int, content: bytes
    ) -> PrefRecord | None:
        # One statement either way, so the compare-and-set is atomic.
        if seqid == 0:
            sql = "INSERT INTO prefs VALUES ($1, $2, 1, $3) ON CONFLICT DO NOTHING RETURNING seqid"
            stored = await self._fetchval(sql, user, label, content)
        else:
            sql = (
                "UPDATE prefs SET seqid = seqid + 1, content = $3"
                " WHERE user_uri = $1 AND label = $2 AND seqid = $4 RETURNING seqid"
            )
            stored = await self._fetchval(sql, user, label, content, seqid)
        if stored is None:
            return None
        return PrefRecord(user=user, label=label, seqid=int(stored), content=content)

    async def add_file(self, record: FileRecord, outbox: list[OutboxEvent]) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO files ({FILE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                *file_row(record),
            )
            if outbox:
                await conn.executemany(
                    _INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in outbox]
                )

    async def get_file(self, file_id: str) -> FileRecord | None:
        rows = await self._fetch(f"SELECT {FILE_COLS} FROM files WHERE id = $1", file_id)
        return file_from_row(rows[0]) if rows else None

    async def room_files(self, room_id: str) -> list[FileRecord]:
        sql = f"SELECT {FILE_COLS} FROM files WHERE room_id = $1 ORDER BY ts_ms, id"
        return [file_from_row(row) for row in await self._fetch(sql, room_id)]

    async def room_file_bytes(self, room_id: str) -> int:
        rows = await self._fetch(
            "SELECT coalesce(sum(size), 0) FROM files WHERE room_id = $1", room_id
        )
        return int(rows[0][0])

    async def set_file_post(self, file_id: str, seq: int) -> None:
        await self._execute("UPDATE files SET post_seq = $2 WHERE id = $1", file_id, seq)

    async def delete_file(self, file_id: str) -> bool:
        return await self._execute("DELETE FROM files WHERE id = $1", file_id) > 0
