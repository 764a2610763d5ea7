"""Errors the client library raises: a SIP failure status or an XCCOS failure reply."""

from __future__ import annotations

from core.sip.message import SipMessage
from core.xccos.envelope import Reply


class SipError(Exception):
    def __init__(self, status: int, reason: str, warning: str = "") -> None:
        super().__init__(f"{status} {reason}" + (f" ({warning})" if warning else ""))
        self.status = status
        self.reason = reason


class XccosError(Exception):
    def __init__(self, reply: Reply) -> None:
        detail = reply.data.text if reply.data is not None else ""
        super().__init__(f"{reply.name}: {reply.code} {reply.text} {detail}".strip())
        self.code = reply.code
        self.reply = reply


def _check(response: SipMessage) -> None:
    if response.status >= 300:
        raise SipError(response.status, response.reason, response.get("Warning") or "")
