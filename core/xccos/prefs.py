"""cmd:getpref and cmd:setpref (XCCOS.md §4): a user's labelled values, base64 on the
wire; what a request asks for, within the caps, and the ``<pref>`` the reply carries."""

from __future__ import annotations

import base64
import binascii

from core.errors import BadRequest, TooLarge
from core.xccos import build
from core.xccos.xml import Element


def pref_label(data: Element | None, label_chars: int) -> tuple[str, Element]:
    """The request's ``<pref>`` and its label; 400 without one, 413 past ``label_chars``
    characters (0: no cap)."""
    pref = data.find("pref") if data is not None else None
    if pref is None or not pref.get("label"):
        raise BadRequest("pref needs a label")
    label = pref.get("label")
    if label_chars and len(label) > label_chars:
        raise TooLarge(f"a pref label has at most {label_chars} characters")
    return label, pref


def pref_update(pref: Element, content_bytes: int) -> tuple[int, bytes]:
    """A setpref's (seqid it replaces, new content); 400 for a bad seqid or base64, 413
    past ``content_bytes`` (0: no cap)."""
    try:
        seqid = int(pref.get("seqid", "0") or 0)
        content = base64.b64decode(pref.get("content"), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise BadRequest("seqid must be an integer and content base64") from exc
    if content_bytes and len(content) > content_bytes:
        raise TooLarge(f"a pref holds at most {content_bytes} bytes")
    return seqid, content


def pref_block(label: str, seqid: int, content: bytes) -> str:
    encoded = base64.b64encode(content).decode()
    return f'<pref label="{build.esc(label)}" seqid="{seqid}" content="{encoded}"/>'
