"""File names: the uploader's name as checked, the stored name, and the file post's text.

Stored names are the random id plus the original's extension (the original product's
GUID-plus-extension), so an archive or an operator can tell a PDF from a picture,
while nothing the uploader chose but a short, checked extension reaches the disk.
"""

from __future__ import annotations

import re
import secrets

from core.errors import BadRequest

MAX_NAME_CHARS = 255  # what common file systems accept for one name
FILE_ID = re.compile(r"[A-Za-z0-9_-]{24}")  # secrets.token_urlsafe(18): 144 random bits
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
# Letters and digits only, at most 16: ".tar.gz" keeps ".gz"; anything else keeps none.
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,16})$")
PART_SUFFIX = ".part"  # an upload being written; never a stored name


def check_name(name: str) -> str:
    """The uploader's file name, kept as given when it is a plain single name."""
    if not name or len(name) > MAX_NAME_CHARS or _BAD_NAME.search(name) or name in {".", ".."}:
        raise BadRequest(f"file name must be 1 to {MAX_NAME_CHARS} characters, no path or controls")
    return name


def new_file_id() -> str:
    return secrets.token_urlsafe(18)


def stored_name(file_id: str, name: str) -> str:
    """'<id>.pdf' for 'Plan.PDF': the id plus the original's extension, lower-cased."""
    found = _EXTENSION.search(name)
    return file_id + (f".{found.group(1).lower()}" if found and found.start() > 0 else "")


def file_id_of(stored: str) -> str | None:
    """The id a stored name begins with; None for anything the store never names."""
    head = stored[:24]
    rest = stored[24:]
    if not FILE_ID.fullmatch(head) or (rest and not _EXTENSION.fullmatch(rest)):
        return None
    return head
