"""What workers say to each other over Redis: owner requests, replies, announcements.

msgpack through msgspec, with encoders and decoders built once per process (HS-10).
"""

from __future__ import annotations

import msgspec

from core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Overloaded,
    PchatError,
    StoreError,
    TooLarge,
)
from core.rooms.events import HistoryQuery, Participant, RoomEvent
from core.rooms.owner import JoinResult, PostResult
from core.store.base import MessageRecord


class JoinReq(msgspec.Struct, tag="join", gc=False):
    room_id: str
    who: Participant
    quiet: bool = False


class PartReq(msgspec.Struct, tag="part", gc=False):
    room_id: str
    session: str


class PostReq(msgspec.Struct, tag="post", gc=False):
    room_id: str
    session: str
    user: str
    client_key: str
    text: str


class HistoryReq(msgspec.Struct, tag="history", gc=False):
    room_id: str
    user: str
    query: HistoryQuery
    session: str = ""


class HistoryResult(msgspec.Struct, tag=True, gc=False):
    messages: list[MessageRecord]


Op = JoinReq | PartReq | PostReq | HistoryReq
Result = JoinResult | PostResult | HistoryResult | None


class Request(msgspec.Struct, gc=False):
    id: int
    reply_to: int  # the asking worker: the reply goes to pchat:reply:<reply_to>
    op: Op


class Reply(msgspec.Struct, gc=False):
    id: int
    code: int  # 0: ok, else the XCCOS code of the error
    message: str = ""
    result: Result = None


class Announce(msgspec.Struct, tag="announce", gc=False):
    """A worker (re)joined the bus with no memory of what others told it before."""

    worker: int


class Acquired(msgspec.Struct, tag="acquired", gc=False):
    """A worker took these shards (and claimed their new epoch): gateways re-announce
    their sessions in the shards' rooms to it."""

    worker: int
    shards: list[int]


class Released(msgspec.Struct, tag="released", gc=False):
    """A worker gave these shards up (drain, handover): their new owners take them now
    instead of at their next tick."""

    worker: int
    shards: list[int]


class Forgot(msgspec.Struct, tag="forgot", gc=False):
    """``by`` dropped what ``worker`` told it (after ``worker``'s Announce); ``worker``
    re-announces its sessions in ``shards`` (those ``by`` serves) now. An answer, not a
    reaction to one's own Announce: on a Redis Cluster the control channel and a shard's
    request channel live on different nodes, so a re-join sent on the Announce alone
    could reach the owner before the Announce and be dropped with the rest."""

    by: int
    worker: int
    shards: list[int]


Control = Announce | Acquired | Released | Forgot


ERRORS: dict[int, type[PchatError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    503: Overloaded,
}


def error_of(reply: Reply) -> PchatError:
    return ERRORS.get(reply.code, StoreError)(reply.message)


def room_channel(room_id: str) -> bytes:
    return f"pchat:room:{room_id}".encode()


def owner_channel(shard: int) -> bytes:
    """Requests for a shard's rooms; only the shard's lease holder subscribes."""
    return f"pchat:owner:{shard}".encode()


def reply_channel(worker: int) -> bytes:
    return f"pchat:reply:{worker}".encode()


CONTROL_CHANNEL = b"pchat:control"
ADMIN_CHANNEL = "pchat:admin"  # `pchat admin` and the HTTP API say "the store changed"
ROOM_PREFIX = b"pchat:room:"
OWNER_PREFIX = b"pchat:owner:"

encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(Request)
reply_decoder = msgspec.msgpack.Decoder(Reply)
event_decoder: msgspec.msgpack.Decoder[RoomEvent] = msgspec.msgpack.Decoder(RoomEvent)
control_decoder: msgspec.msgpack.Decoder[Control] = msgspec.msgpack.Decoder(Control)
