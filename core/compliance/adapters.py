"""Compliance adapters: turn a batch of activity into archive files.

An adapter writes every file of a batch or raises; the service deletes the batch's rows
only when every configured adapter returned. File names depend only on the batch id (and
room), so a run repeated after a crash overwrites its files instead of adding copies.

Custom adapters are Python entry points in the group ``pchat.compliance_adapters``: a
callable taking ``AdapterOptions`` and returning an object with ``name`` and
``write(batch_id, conversations, out_dir) -> list[Path]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import msgspec

from core.compliance.events import Activity, from_payload
from core.compliance.file_store import replace_durably
from core.store.base import OutboxRecord


class AdapterOptions(msgspec.Struct, frozen=True, kw_only=True):
    domain: str
    file_per_room: bool = False
    room_details: bool = True
    user_details: bool = False
    display_names: dict[str, str] = {}
    attach: bool = False  # XML adapter: .ATTACH manifests and uploaded files in out_dir
    files_dir: str = ""  # the compliance file store (copies of the uploads); "": none


class Event(msgspec.Struct, frozen=True):
    """An archived event: its compliance id and what happened."""

    id: int
    activity: Activity


class Conversation(msgspec.Struct, frozen=True):
    """A batch's events of one room, oldest first."""

    room_id: str
    room_name: str
    events: list[Event]


class Adapter(Protocol):
    name: str

    def write(self, batch_id: int, conversations: list[Conversation], out_dir: Path) -> list[Path]:
        """Writes the batch (atomically, file by file); raises when it cannot."""


def conversations(rows: list[OutboxRecord]) -> list[Conversation]:
    """Groups a batch by room, keeping event order (by compliance id)."""
    rooms: dict[str, list[Event]] = {}
    names: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r.id):
        activity = from_payload(row.payload)
        rooms.setdefault(activity.room_id, []).append(Event(row.id, activity))
        if activity.room_name:
            names[activity.room_id] = activity.room_name
    return [
        Conversation(room, names.get(room, ""), events) for room, events in sorted(rooms.items())
    ]


def write_atomically(path: Path, data: bytes) -> None:
    """``data`` as ``path``, all of it or nothing (`replace_durably`)."""
    replace_durably(path, lambda f: f.write(data))


class JsonLinesAdapter:
    """One JSON object per event and line, for log pipelines."""

    name = "jsonl"

    def __init__(self, options: AdapterOptions) -> None:
        self._options = options

    def write(self, batch_id: int, conversations: list[Conversation], out_dir: Path) -> list[Path]:
        encode = msgspec.json.Encoder().encode
        lines = [
            encode({"id": e.id, **msgspec.structs.asdict(e.activity)})
            for c in conversations
            for e in c.events
        ]
        path = out_dir / f"pchat-compliance-{batch_id:08d}.jsonl"
        write_atomically(path, b"\n".join(lines) + b"\n")
        return [path]
