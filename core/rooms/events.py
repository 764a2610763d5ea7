"""Room events and owner requests: what a room owner publishes and what gateways ask of it.

They are msgspec Structs so one codec carries them in-process or, between
workers, as msgpack over Redis.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Participant(msgspec.Struct, frozen=True, gc=False):
    """One signed-in session in a room; ``gateway`` is the worker holding its connection."""

    session: str
    user: str
    gateway: int


class PostEvent(msgspec.Struct, tag="post", gc=False):
    room_id: str
    seq: int
    author: str
    ts_ms: int
    text: str
    origin: str  # the posting session: it gets rpl:grpchat, not the post
    sent_ms: int = 0  # when the owner accepted it (post-to-delivery latency)


class JoinEvent(msgspec.Struct, tag="join", gc=False):
    room_id: str
    user: str
    session: str
    gateway: int
    ucnt: int


class PartEvent(msgspec.Struct, tag="part", gc=False):
    room_id: str
    user: str
    session: str
    gateway: int
    ucnt: int


class KickEvent(msgspec.Struct, tag="kick", gc=False):
    """Sessions that must leave at once (room disabled, permission withdrawn)."""

    room_id: str
    sessions: list[str]


RoomEvent = PostEvent | JoinEvent | PartEvent | KickEvent


class HistoryQuery(msgspec.Struct, frozen=True, gc=False):
    kind: Literal["last", "before", "after", "search"]
    count: int
    seq: int = 0
    text: str = ""
