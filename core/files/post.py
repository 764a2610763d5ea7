"""The file post: how an upload is announced in its room (docs/protocol.md "File posts").

It is an ordinary post (grpchat) whose text has one fixed form, so every client shows
something useful (SIPE users see the name and a link) and pchat's clients recognise it:

    [file] <name> (<size> bytes) <download URL ending /api/files/<id>>
"""

from __future__ import annotations

import re

import msgspec

PREFIX = "[file] "
_POST = re.compile(
    r"\[file\] (?P<name>[^\r\n]+) \((?P<size>\d+) bytes\) "
    r"(?P<url>\S*/api/files/(?P<id>[A-Za-z0-9_-]{24}))"
)


class FilePost(msgspec.Struct, frozen=True, kw_only=True):
    file_id: str
    name: str
    size: int
    url: str


def file_post_text(name: str, size: int, url: str) -> str:
    return f"{PREFIX}{name} ({size} bytes) {url}"


def parse_file_post(text: str) -> FilePost | None:
    """The file a post announces; None for every other post."""
    found = _POST.fullmatch(text)
    if found is None:
        return None
    return FilePost(
        file_id=found["id"], name=found["name"], size=int(found["size"]), url=found["url"]
    )
