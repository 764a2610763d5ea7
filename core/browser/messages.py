"""Protocol layer: every message of the browser WebSocket protocol as a msgspec Struct.

The browser sends one JSON object per text frame (``ClientMessage``, tagged by
``type``); the server sends a JSON array of ``ServerMessage`` per frame, so several
messages of one loop turn go out in one write. Each request carries an ``id`` (the
browser's counter, 1..2^53) that its reply echoes. docs/websocket.md is the contract.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

RequestId = Annotated[int, msgspec.Meta(ge=1, le=2**53)]  # a JavaScript safe integer
MsgId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # the stores' 64-bit msgids
Count = Annotated[int, msgspec.Meta(ge=1, le=500)]  # bccontext's cnt range
RoomUri = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Text = Annotated[str, msgspec.Meta(max_length=64 * 1024)]  # the frame cap bounds it anyway


class _Request(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    id: RequestId


class ListRooms(_Request, tag="rooms"):
    """The rooms where I hold a role, or that I follow (getassociations)."""

    kind: Literal["member", "manager", "presenter", "follower"] = "member"


class SearchRooms(_Request, tag="search_rooms"):
    """Rooms I may see whose name matches (chansrch); secret ones only for their members."""

    text: Annotated[str, msgspec.Meta(max_length=256)] = ""


class Join(_Request, tag="join"):
    room: RoomUri


class Part(_Request, tag="part"):
    room: RoomUri


class History(_Request, tag="history"):
    """A page of history, newest first in the asking: the ``count`` posts before
    ``before`` (0: the latest); or, with ``after``, the posts after it (catch-up)."""

    room: RoomUri
    before: MsgId = 0
    after: MsgId | None = None
    count: Count = 50


class SearchHistory(_Request, tag="search"):
    room: RoomUri
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    count: Count = 50


class PostMessage(_Request, tag="post"):
    """A post; ``key`` is the browser's own id for it: re-sent after a reconnect with the
    same key it is stored once (the XCCOS envelope id's role)."""

    room: RoomUri
    text: Text
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern="^[A-Za-z0-9_.-]+$")]


class Follow(_Request, tag="follow"):
    room: RoomUri


class Unfollow(_Request, tag="unfollow"):
    room: RoomUri


class Invitations(_Request, tag="invitations"):
    """Invitations not yet shown to me (getinv); new ones also arrive as ``invitation``."""


class ServerInfoRequest(_Request, tag="server_info"):
    pass


class Ping(_Request, tag="ping"):
    """Keeps an idle page's connection open (websocket.idle_timeout_s); answered ``pong``."""


ClientMessage = (
    ListRooms
    | SearchRooms
    | Join
    | Part
    | History
    | SearchHistory
    | PostMessage
    | Follow
    | Unfollow
    | Invitations
    | ServerInfoRequest
    | Ping
)


# ---- server to browser ----------------------------------------------------------------


class Room(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A room as lists show it. ``online`` is the participant count where known."""

    uri: str
    id: str
    name: str = ""
    description: str = ""
    topic: str = ""
    visibility: str = ""  # open | closed | secret
    online: int | None = None
    files: bool = False  # uploads allowed
    invite: bool = False
    logged: bool = True
    type: str = "normal"  # normal | auditorium


class Message(msgspec.Struct, kw_only=True):
    """One post, live or from history: ``msgid`` is the room's total order."""

    room: str
    msgid: int
    author: str
    ts: str  # UTC ISO 8601 with milliseconds; the page shows it in the browser's zone
    text: str


class Invitation(msgspec.Struct, kw_only=True):
    id: str
    room: str
    name: str
    inviter: str
    ts: str


class _Out(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    pass


class Hello(_Out, tag="hello"):
    """The first message: who I am and the server's limits."""

    user: str
    session: str
    message_size_limit: int
    history_max: int
    search_limit: int


class Rooms(_Out, tag="rooms"):
    id: int
    rooms: list[Room]


class Joined(_Out, tag="joined"):
    """The room and who is online; ``participants`` is empty above the large-room limit,
    where only ``room.online`` counts them."""

    id: int
    room: Room
    participants: list[str]
    managers: list[str]


class Done(_Out, tag="done"):
    """A part, follow or unfollow done."""

    id: int
    room: str


class HistoryPage(_Out, tag="history"):
    """Posts oldest first; ``more``: some did not fit, ask again from the edge msgid."""

    id: int
    room: str
    messages: list[Message]
    more: bool = False


class Posted(_Out, tag="posted"):
    """The post is durable: its msgid and the server's timestamp."""

    id: int
    room: str
    msgid: int
    ts: str


class InvitationList(_Out, tag="invitations"):
    id: int
    invitations: list[Invitation]


class Info(_Out, tag="server_info"):
    id: int
    message_size_limit: int = 0
    search_limit: int = 0
    server_time: str = ""


class Pong(_Out, tag="pong"):
    id: int


class Error(_Out, tag="error"):
    """A refused request (``id`` 0: a message that could not be read). ``code`` is the
    XCCOS result code: 400, 403, 404, 409, 413, 501, 503 (retry), 500."""

    id: int
    code: int
    reason: str


class Live(_Out, tag="message"):
    """A post by someone else (or my other device) in a room I joined."""

    message: Message


class Presence(_Out, tag="presence"):
    """Someone came online in or left a room I joined (small rooms only). My own user
    going offline means I was removed from the room (its managers changed who may read)."""

    room: str
    user: str
    online: bool


class NewContent(_Out, tag="new_content"):
    """Posts in a room I follow but have not joined: its last msgid and my unread count."""

    room: str
    last_msgid: int
    unread: int


class InvitationNotice(_Out, tag="invitation"):
    invitation: Invitation


ServerMessage = (
    Hello
    | Rooms
    | Joined
    | Done
    | HistoryPage
    | Posted
    | InvitationList
    | Info
    | Pong
    | Error
    | Live
    | Presence
    | NewContent
    | InvitationNotice
)
