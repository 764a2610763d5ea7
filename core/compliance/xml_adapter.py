"""The XML archive in the original's shape: Conversations / Conversation / Messages.

Times carry three forms, as the original's DateTimeUTC does: ``since1970`` (ms since
the Unix epoch), ``string`` (ISO 8601 UTC) and ``long`` (.NET ticks: 100 ns since
0001-01-01). FILEUPLOAD and FILEDOWNLOAD messages carry the stored file name in
``content``, as the original's do. With the ``attach`` option each file transfer also
gets an ``.ATTACH`` manifest (an ``Attach`` document) in the output directory, and each
upload's bytes are copied beside it under the stored name, from the compliance file
store. Every name depends only on the batch and the event, so a repeated run rewrites
the same files. The schema of both documents is compliance.xsd beside this file.
"""

from __future__ import annotations

from pathlib import Path

from core.compliance.adapters import AdapterOptions, Conversation, Event, write_atomically
from core.compliance.events import FILE_KINDS
from core.compliance.file_store import ComplianceFileStore, copy_durably
from core.xccos.build import esc
from core.xccos.ids import room_uri, ts_iso

# .NET ticks at the Unix epoch: 621355968000000000 (days 0001-01-01 .. 1970-01-01 × 864e9)
_EPOCH_TICKS = 621_355_968_000_000_000
SCHEMA = Path(__file__).with_name("compliance.xsd")
_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'


def _time(tag: str, ts_ms: int) -> str:
    ticks = _EPOCH_TICKS + ts_ms * 10_000
    return f'<{tag} since1970="{ts_ms}" string="{ts_iso(ts_ms)}" long="{ticks}"/>'


class XmlAdapter:
    name = "xml"

    def __init__(self, options: AdapterOptions) -> None:
        self._o = options

    def _sender(self, uri: str) -> str:
        user = uri.removeprefix("sip:").partition("@")[0]
        attrs = f'UserName="{esc(user)}" uri="{esc(uri)}"'
        if self._o.user_details:
            attrs += f' DisplayName="{esc(self._o.display_names.get(uri, ""))}"'
        return f"<Sender {attrs}/>"

    def _message(self, tag: str, event: Event) -> str:
        a = event.activity
        ident = a.msgid if a.kind == "CHAT" else event.id
        return (
            f'<{tag} type="{a.kind}" content="{esc(a.text)}" id="{ident}">'
            f"{self._sender(a.user)}{_time('DateTimeUTC', a.ts_ms)}</{tag}>"
        )

    def _channel(self, c: Conversation) -> str:
        attrs = f'uri="{room_uri(self._o.domain, c.room_id)}"'
        if self._o.room_details:
            attrs += f' name="{esc(c.room_name)}"'
        return f"<Channel {attrs}/>"

    def _conversation(self, c: Conversation) -> str:
        messages = "".join(self._message("Message", e) for e in c.events)
        return (
            f"<Conversation>{self._channel(c)}{self._message('FirstMessage', c.events[0])}"
            f"{_time('StartTimeUTC', c.events[0].activity.ts_ms)}"
            f"{_time('EndTimeUTC', c.events[-1].activity.ts_ms)}"
            f"<Messages>{messages}</Messages></Conversation>"
        )

    def _document(self, conversations: list[Conversation]) -> bytes:
        body = "".join(self._conversation(c) for c in conversations if c.events)
        return f"{_HEAD}<Conversations>{body}</Conversations>\n".encode()

    def _manifest(self, c: Conversation, event: Event, archived: str) -> bytes:
        a = event.activity
        attrs = (
            f'type="{a.kind}" id="{event.id}" content="{esc(a.text)}" fileId="{esc(a.file_id)}"'
            f' fileName="{esc(a.file_name)}" size="{a.file_size}" sha256="{esc(a.sha256)}"'
        )
        if archived:
            attrs += f' archived="{esc(archived)}"'
        return (
            f"{_HEAD}<Attach {attrs}>{self._channel(c)}{self._sender(a.user)}"
            f"{_time('DateTimeUTC', a.ts_ms)}</Attach>\n"
        ).encode()

    def _attachments(
        self, batch_id: int, conversations: list[Conversation], out: Path
    ) -> list[Path]:
        """One manifest per transfer; an upload's bytes beside it when the copy exists."""
        copies = ComplianceFileStore(self._o.files_dir) if self._o.files_dir else None
        written = []
        for c in conversations:
            for e in c.events:
                if e.activity.kind not in FILE_KINDS:
                    continue
                archived = ""
                if e.activity.kind == "FILEUPLOAD" and copies is not None:
                    archived = self._archive_upload(copies, e.activity.text, out)
                    if archived:
                        written.append(out / archived)
                path = out / f"pchat-compliance-{batch_id:08d}-{e.id}.ATTACH"
                write_atomically(path, self._manifest(c, e, archived))
                written.append(path)
        return written

    @staticmethod
    def _archive_upload(copies: ComplianceFileStore, name: str, out: Path) -> str:
        """The upload's bytes into ``out`` under its stored name; "" when there is no copy
        (the file was deleted before its event was recorded, or the name is not a plain one)."""
        try:
            source = copies.path(name)
        except ValueError:
            return ""
        if not source.exists():
            return ""
        target = out / name
        if not target.exists():  # renamed into place whole: present means finished
            copy_durably(source, target)
        return name

    def write(self, batch_id: int, conversations: list[Conversation], out_dir: Path) -> list[Path]:
        written = self._attachments(batch_id, conversations, out_dir) if self._o.attach else []
        if not self._o.file_per_room:
            path = out_dir / f"pchat-compliance-{batch_id:08d}.xml"
            write_atomically(path, self._document(conversations))
            return [*written, path]
        for c in conversations:
            path = out_dir / f"pchat-compliance-{batch_id:08d}-{c.room_id}.xml"
            write_atomically(path, self._document([c]))
            written.append(path)
        return written
