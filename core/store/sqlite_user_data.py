"""The SQLite chat store's per-user and per-room extras: invitations, preferences and
the room file store's records, with the connection's write transaction (the base of
``SqliteDb``, core/store/sqlite_db.py; on the store's one thread like it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import msgspec

from core.store.base import FileRecord, InvitationRecord, OutboxEvent, PrefRecord
from core.store.rows import FILE_COLS, INVITATION_COLS, file_from_row, file_row, invitation_from_row
from core.store.sqlite_lock import begin_immediate

INSERT_OUTBOX = "INSERT INTO compliance_outbox (kind, payload, ts_ms) VALUES (?, ?, ?)"

_json_encoder = msgspec.json.Encoder()


def json_list(values: Iterable[object]) -> str:
    return _json_encoder.encode(list(values)).decode()


class SqliteUserData:
    __slots__ = ("conn",)

    conn: sqlite3.Connection  # opened and set up by SqliteDb

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        begin_immediate(self.conn)
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # a failed COMMIT can leave it open
                self.conn.execute("ROLLBACK")
            raise

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
            f"SELECT {INVITATION_COLS} FROM invitations"
            " WHERE invitee = ? AND NOT delivered ORDER BY id",
            (invitee,),
        )
        return [invitation_from_row(r) for r in rows]

    def invitations_after(self, last_id: int, limit: int) -> list[InvitationRecord]:
        rows = self.conn.execute(
            f"SELECT {INVITATION_COLS} FROM invitations"
            " WHERE id > ? AND NOT delivered ORDER BY id LIMIT ?",
            (last_id, limit),
        )
        return [invitation_from_row(r) for r in rows]

    def mark_invitations_delivered(self, ids: list[int]) -> None:
        sql = "UPDATE invitations SET delivered = 1 WHERE id IN (SELECT value FROM json_each(?))"
        self.conn.execute(sql, (json_list(ids),))

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

    # -- files
    def add_file(self, record: FileRecord, outbox: list[OutboxEvent]) -> None:
        with self.write() as c:
            c.execute(
                f"INSERT INTO files ({FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", file_row(record)
            )
            c.executemany(INSERT_OUTBOX, [(e.kind, e.payload, e.ts_ms) for e in outbox])

    def get_file(self, file_id: str) -> FileRecord | None:
        row = self.conn.execute(
            f"SELECT {FILE_COLS} FROM files WHERE id = ?", (file_id,)
        ).fetchone()
        return None if row is None else file_from_row(row)

    def room_files(self, room_id: str) -> list[FileRecord]:
        sql = f"SELECT {FILE_COLS} FROM files WHERE room_id = ? ORDER BY ts_ms, id"
        return [file_from_row(row) for row in self.conn.execute(sql, (room_id,))]

    def room_file_bytes(self, room_id: str) -> int:
        sql = "SELECT coalesce(sum(size), 0) FROM files WHERE room_id = ?"
        return int(self.conn.execute(sql, (room_id,)).fetchone()[0])

    def set_file_post(self, file_id: str, seq: int) -> None:
        self.conn.execute("UPDATE files SET post_seq = ? WHERE id = ?", (seq, file_id))

    def delete_file(self, file_id: str) -> bool:
        return self.conn.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0
