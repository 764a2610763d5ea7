"""Domain errors: each carries its SIP status, its reason and its XCCOS code (HS-7)."""

from __future__ import annotations

from typing import ClassVar


class PchatError(Exception):
    """Root of every error pchat raises on purpose; the edge turns it into a reply."""

    sip_status: ClassVar[int] = 500
    reason: ClassVar[str] = "Server Internal Error"
    xccos_code: ClassVar[int] = 500


class FramingLost(PchatError):
    """The byte stream can no longer be split into messages: close the connection."""

    sip_status = 400
    reason = "Bad Request"
    xccos_code = 400


class BadRequest(PchatError):
    """A message that parsed as a frame but not as what it claims to be."""

    sip_status = 400
    reason = "Bad Request"
    xccos_code = 400


class BadXml(BadRequest):
    """XML that is malformed, hostile (DTD, entities) or over the size/depth limits."""


class TooLarge(PchatError):
    sip_status = 413
    reason = "Request Entity Too Large"
    xccos_code = 413


class Unauthorized(PchatError):
    sip_status = 401
    reason = "Unauthorized"
    xccos_code = 403


class Forbidden(PchatError):
    sip_status = 403
    reason = "Forbidden"
    xccos_code = 403


class NotFound(PchatError):
    sip_status = 404
    reason = "Not Found"
    xccos_code = 404


class QuotaExceeded(PchatError):
    """A per-user, per-connection or per-session cap (Settings.limits) would be passed."""

    sip_status = 403
    reason = "Forbidden"
    xccos_code = 403


class StorageFull(PchatError):
    """A room's file quota would be passed: 507 (RFC 4918 §11.5), not 413, because the
    upload itself is within the size cap; the room must free space first."""

    sip_status = 507
    reason = "Insufficient Storage"
    xccos_code = 413


class Conflict(PchatError):
    sip_status = 409
    reason = "Conflict"
    xccos_code = 409


class NoDialog(PchatError):
    sip_status = 481
    reason = "Call/Transaction Does Not Exist"
    xccos_code = 404


class NotImplementedCommand(PchatError):
    sip_status = 501
    reason = "Not Implemented"
    xccos_code = 501


class Overloaded(PchatError):
    """A bounded queue is full or an owner is unreachable; the edge adds Retry-After."""

    sip_status = 503
    reason = "Service Unavailable"
    xccos_code = 503


class StoreError(PchatError):
    """The chat store failed; nothing was acknowledged."""

    sip_status = 500
    reason = "Server Internal Error"
    xccos_code = 500
