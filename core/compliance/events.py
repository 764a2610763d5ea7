"""Activity events recorded for compliance: what happened, to whom, where, when.

Each event travels as an outbox row (kind + JSON payload) written in the chat store's
transaction, then moves to the compliance store and on to the adapters.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from core.files.names import stored_name
from core.store.base import ChatStore, FileRecord, NewMessage, OutboxEvent

Kind = Literal["JOIN", "PART", "CHAT", "BACKCHAT", "FILEUPLOAD", "FILEDOWNLOAD"]
KINDS: tuple[Kind, ...] = ("JOIN", "PART", "CHAT", "BACKCHAT", "FILEUPLOAD", "FILEDOWNLOAD")


class Activity(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """One recorded action; ``ts_ms`` is the server's clock."""

    kind: Kind
    user: str
    room_id: str
    ts_ms: int
    session: str = ""  # the session (device) that acted
    msgid: int = 0  # CHAT: the post's id in its room
    # CHAT: the post; BACKCHAT: the history query; FILEUPLOAD/FILEDOWNLOAD: the stored file name
    text: str = ""
    room_name: str = ""
    # FILEUPLOAD/FILEDOWNLOAD: the file (its id, the uploader's name for it, bytes, hex sha256)
    file_id: str = ""
    file_name: str = ""
    file_size: int = 0
    sha256: str = ""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Activity).decode


def to_outbox(activity: Activity) -> OutboxEvent:
    return OutboxEvent(kind=activity.kind, payload=_encode(activity).decode(), ts_ms=activity.ts_ms)


def from_payload(payload: str | bytes) -> Activity:
    return _decode(payload)


def chat_event(message: NewMessage) -> OutboxEvent:
    """The CHAT row written in the same transaction as the post itself."""
    return to_outbox(
        Activity(
            kind="CHAT",
            user=message.author,
            room_id=message.room_id,
            ts_ms=message.ts_ms,
            session=message.session,
            msgid=message.seq,
            text=message.text,
        )
    )


def file_event(kind: Kind, record: FileRecord, user: str, ts_ms: int) -> OutboxEvent:
    """A FILEUPLOAD (with the file's record, one transaction) or FILEDOWNLOAD row (before
    the first byte is sent); ``text`` is the stored name, as the original records it."""
    return to_outbox(
        Activity(
            kind=kind,
            user=user,
            room_id=record.room_id,
            ts_ms=ts_ms,
            text=stored_name(record.id, record.name),
            file_id=record.id,
            file_name=record.name,
            file_size=record.size,
            sha256=record.sha256,
        )
    )


class PostWriter:
    """The posts' group-commit write: with compliance on, each post's CHAT record goes
    in the same transaction (a post is never stored without it, nor the reverse)."""

    __slots__ = ("_store", "_record")

    def __init__(self, store: ChatStore, *, record: bool) -> None:
        self._store = store
        self._record = record

    async def __call__(self, batch: list[NewMessage]) -> None:
        outbox = [chat_event(m) for m in batch] if self._record else None
        await self._store.append_messages(batch, outbox)
