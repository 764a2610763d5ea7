"""The XML archive in the original's shape: Conversations / Conversation / Messages.

Times carry three forms, as the original's DateTimeUTC does: ``since1970`` (ms since
the Unix epoch), ``string`` (ISO 8601 UTC) and ``long`` (.NET ticks: 100 ns since
0001-01-01). The schema is compliance.xsd beside this file.
"""

from __future__ import annotations

from pathlib import Path

from core.compliance.adapters import AdapterOptions, Conversation, Event, write_atomically
from core.xccos.build import esc
from core.xccos.ids import room_uri, ts_iso

# .NET ticks at the Unix epoch: 621355968000000000 (days 0001-01-01 .. 1970-01-01 × 864e9)
_EPOCH_TICKS = 621_355_968_000_000_000
SCHEMA = Path(__file__).with_name("compliance.xsd")


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

    def _conversation(self, c: Conversation) -> str:
        channel = f'uri="{room_uri(self._o.domain, c.room_id)}"'
        if self._o.room_details:
            channel += f' name="{esc(c.room_name)}"'
        messages = "".join(self._message("Message", e) for e in c.events)
        return (
            f"<Conversation><Channel {channel}/>{self._message('FirstMessage', c.events[0])}"
            f"{_time('StartTimeUTC', c.events[0].activity.ts_ms)}"
            f"{_time('EndTimeUTC', c.events[-1].activity.ts_ms)}"
            f"<Messages>{messages}</Messages></Conversation>"
        )

    def _document(self, conversations: list[Conversation]) -> bytes:
        body = "".join(self._conversation(c) for c in conversations if c.events)
        head = '<?xml version="1.0" encoding="utf-8"?>\n'
        return f"{head}<Conversations>{body}</Conversations>\n".encode()

    def write(self, batch_id: int, conversations: list[Conversation], out_dir: Path) -> list[Path]:
        if not self._o.file_per_room:
            path = out_dir / f"pchat-compliance-{batch_id:08d}.xml"
            write_atomically(path, self._document(conversations))
            return [path]
        written = []
        for c in conversations:
            path = out_dir / f"pchat-compliance-{batch_id:08d}-{c.room_id}.xml"
            write_atomically(path, self._document([c]))
            written.append(path)
        return written
