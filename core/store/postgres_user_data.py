"""The chat store's per-user and per-room extras on PostgreSQL: invitations, preferences
and the room file store's records (part of ``PostgresStore``, core/store/postgres.py)."""

from __future__ import annotations

import msgspec

from core.store.base import FileRecord, InvitationRecord, OutboxEvent, PrefRecord
from core.store.postgres_pool import INSERT_OUTBOX, PgQueries
from core.store.rows import FILE_COLS, INVITATION_COLS, file_from_row, file_row, invitation_from_row


class PgUserData(PgQueries):
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

    # -- files
    async def add_file(self, record: FileRecord, outbox: list[OutboxEvent]) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO files ({FILE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                *file_row(record),
            )
            if outbox:
                await conn.executemany(
                    INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in outbox]
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
