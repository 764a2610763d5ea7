"""PostgreSQL chat store for pools of servers (store layer, ARCHITECTURE §5), on asyncpg."""

from __future__ import annotations

from typing import Any

import asyncpg

from core.errors import Conflict, NotFound
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
from core.store.postgres_pool import (
    IDLE_IN_TRANSACTION_MS,
    INSERT_OUTBOX,
    POOL_MAX_SIZE,
    POOL_MIN_SIZE,
    connect_pool,
)
from core.store.postgres_schema import migrate
from core.store.postgres_user_data import PgUserData
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


class PostgresStore(PgUserData):
    """``ChatStore`` on a PostgreSQL database; any number of servers may share it."""

    def __init__(self, dsn: str, pool: tuple[int, int] = (POOL_MIN_SIZE, POOL_MAX_SIZE)) -> None:
        self._dsn = dsn
        self._pool_size = pool  # (min, max) connections of this process
        self._pool = None  # asyncpg.Pool once open

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
                        await conn.executemany(INSERT_OUTBOX, events)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"a message seq is already stored ({exc})") from exc

    async def add_outbox(self, events: list[OutboxEvent]) -> None:
        if events:
            async with self._conn() as conn, conn.transaction():
                await _check_fences(conn, tokens_of(events))
                await conn.executemany(
                    INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in events]
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
