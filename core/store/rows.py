"""What the two SQL stores share: column lists and rows turned into records.

A category or a room is one row of its own table plus rows of a principals
table (``(owner id, role, principal)``). Both backends read them the same way:
fetch the rows, then the principals of those ids, then `Assembly` makes the
records. Only the SQL text (``?`` against ``$1``) stays with each backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import msgspec

from core.errors import StoreError
from core.store.base import (
    CategoryRecord,
    FileRecord,
    InvitationRecord,
    MessageRecord,
    RoomRecord,
    UserRecord,
)

_T = TypeVar("_T")

USER_COLS = "uri, display_name, ha1, enabled, admin"
CATEGORY_COLS = "id, name, description, invitations, file_upload, history"
CATEGORY_FIELDS = tuple(col.strip() for col in CATEGORY_COLS.split(","))
ROOM_COLS = (
    "id, name, category_id, description, topic, privacy, type, invitations, disabled,"
    " created_by, created_ms, file_upload"
)
ROOM_FIELDS = tuple(col.strip() for col in ROOM_COLS.split(","))
MESSAGE_COLS = "room_id, seq, author, ts_ms, text"
INVITATION_COLS = "id, room_id, invitee, inviter, ts_ms, delivered"
FILE_COLS = "id, room_id, name, size, sha256, uploader, ts_ms, post_seq"

# The stored role name -> the record's list field.
CATEGORY_ROLES = {"allowed": "allowed", "denied": "denied", "creator": "creators"}
ROOM_ROLES = {"member": "members", "manager": "managers", "presenter": "presenters"}

_ha1_encoder = msgspec.json.Encoder()
_ha1_decoder = msgspec.json.Decoder(dict[str, str])


def ha1_text(user: UserRecord) -> str:
    """The user's digest hashes as the JSON text both stores keep."""
    return _ha1_encoder.encode(user.ha1).decode()


def user_from_row(row: Sequence[Any]) -> UserRecord:
    """A row of ``USER_COLS``; SQLite's 0/1 and PostgreSQL's booleans both work."""
    return UserRecord(
        uri=row[0],
        display_name=row[1],
        ha1=_ha1_decoder.decode(row[2]),
        enabled=bool(row[3]),
        admin=bool(row[4]),
    )


def message_from_row(row: Sequence[Any]) -> MessageRecord:
    return MessageRecord(room_id=row[0], seq=row[1], author=row[2], ts_ms=row[3], text=row[4])


def invitation_from_row(row: Sequence[Any]) -> InvitationRecord:
    """A row of ``INVITATION_COLS``."""
    return InvitationRecord(
        id=row[0],
        room_id=row[1],
        invitee=row[2],
        inviter=row[3],
        ts_ms=row[4],
        delivered=bool(row[5]),
    )


def file_row(f: FileRecord) -> tuple[str, str, str, int, str, str, int, int]:
    """The values of ``FILE_COLS``, in order."""
    return (f.id, f.room_id, f.name, f.size, f.sha256, f.uploader, f.ts_ms, f.post_seq)


def file_from_row(row: Sequence[Any]) -> FileRecord:
    return FileRecord(
        id=row[0],
        room_id=row[1],
        name=row[2],
        size=row[3],
        sha256=row[4],
        uploader=row[5],
        ts_ms=row[6],
        post_seq=row[7],
    )


def category_principals(cat: CategoryRecord) -> list[tuple[str, str, str]]:
    """``(category id, role, principal)`` rows to insert, duplicates dropped."""
    roles = (("allowed", cat.allowed), ("denied", cat.denied), ("creator", cat.creators))
    return [(cat.id, role, p) for role, principals in roles for p in set(principals)]


def room_principals(room: RoomRecord) -> list[tuple[str, str, str]]:
    """``(room id, role, principal)`` rows to insert, duplicates dropped."""
    roles = (("member", room.members), ("manager", room.managers), ("presenter", room.presenters))
    return [(room.id, role, p) for role, principals in roles for p in set(principals)]


class Assembly:
    """Records built from their rows (first column the id) plus their principal rows."""

    __slots__ = ("_fields", "_records", "_roles")

    def __init__(
        self, rows: Iterable[Sequence[Any]], fields: tuple[str, ...], roles: dict[str, str]
    ) -> None:
        self._fields = fields
        self._roles = roles
        self._records: dict[str, dict[str, Any]] = {
            row[0]: dict(zip(fields, row, strict=True)) | {f: [] for f in roles.values()}
            for row in rows
        }

    @property
    def ids(self) -> list[str]:
        return list(self._records)

    def add_principals(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of ``(owner id, role, principal)``, in the order the lists should keep."""
        for owner, role, principal in rows:
            self._records[owner][self._roles[role]].append(principal)

    def records(self, cls: type[_T]) -> list[_T]:
        try:
            # Not strict: SQLite stores booleans as 0/1.
            return [msgspec.convert(fields, cls, strict=False) for fields in self._records.values()]
        except msgspec.ValidationError as exc:
            raise StoreError(f"bad stored {cls.__name__}: {exc}") from exc
