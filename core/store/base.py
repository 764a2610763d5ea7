"""Chat store interface: the records and the one Protocol every backend implements.

The store is the truth (ARCHITECTURE §5). Every method is async; backends that
block (SQLite) run their work off the event loop. Room ids are the path part of
the room URI (``ma-chan://<domain>/<room_id>``); category ids likewise.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

Privacy = Literal["open", "closed", "secret"]
RoomType = Literal["normal", "auditorium"]
# A room's own switch under its category's: "off" turns the feature off in this room only.
RoomSwitch = Literal["inherit", "off"]
RoomInvites = RoomSwitch
RoomRole = Literal["member", "manager", "presenter"]
CategoryRole = Literal["allowed", "denied", "creator"]


class UserRecord(msgspec.Struct, kw_only=True):
    """A user; ``ha1`` maps ``"<ALG>:<digest username>"`` to the hex HA1, never a password."""

    uri: str
    display_name: str = ""
    ha1: dict[str, str] = {}
    enabled: bool = False  # the persistent-chat policy; off as in the original
    admin: bool = False


class CategoryRecord(msgspec.Struct, kw_only=True):
    """A category. Principals are ``sip:`` URIs or ``domain:<name>``."""

    id: str
    name: str
    description: str = ""
    allowed: list[str] = []
    denied: list[str] = []
    creators: list[str] = []
    invitations: bool = True
    file_upload: bool = True
    history: bool = True


class RoomRecord(msgspec.Struct, kw_only=True):
    """A room and its role lists (principals as in ``CategoryRecord``)."""

    id: str
    name: str
    category_id: str
    description: str = ""
    topic: str = ""
    privacy: Privacy = "closed"
    type: RoomType = "normal"
    invitations: RoomInvites = "inherit"
    # urn:parlano:ma:prop:filepost: uploads need this and the category's file_upload
    file_upload: RoomSwitch = "inherit"
    disabled: bool = False
    members: list[str] = []
    managers: list[str] = []
    presenters: list[str] = []
    created_by: str = ""
    created_ms: int = 0


class SigninRooms(msgspec.Struct, frozen=True, kw_only=True):
    """What a sign-in asks for at once (getassociations member, manager, follower; getinv)."""

    member: list[RoomRecord]
    manager: list[RoomRecord]
    follower: list[RoomRecord]
    invitations: list[InvitationRecord]  # pending_invitations: not yet delivered, by id
    invited: list[RoomRecord]  # the rooms of those invitations that still exist


class NewMessage(msgspec.Struct, kw_only=True, gc=False):
    """A post to store; ``seq`` is assigned by the room owner, unique per room."""

    room_id: str
    seq: int
    author: str
    ts_ms: int
    text: str
    client_key: str = ""  # the sender's envelope id: retries within 5 minutes are one post
    session: str = ""  # the posting session, for its compliance record (not a column)
    # The owner's fencing token (not columns): the write is refused unless ``epoch`` is the
    # shard's current epoch in the store. shard -1: not fenced (admin tools, one process).
    shard: int = -1
    epoch: int = 0


class MessageRecord(msgspec.Struct, kw_only=True, gc=False):
    room_id: str
    seq: int
    author: str
    ts_ms: int
    text: str


class ClientKey(msgspec.Struct, kw_only=True, gc=False):
    author: str
    client_key: str
    seq: int
    ts_ms: int


class InvitationRecord(msgspec.Struct, kw_only=True):
    id: int
    room_id: str
    invitee: str
    inviter: str
    ts_ms: int
    delivered: bool = False


class PrefRecord(msgspec.Struct, kw_only=True):
    user: str
    label: str
    seqid: int
    content: bytes


class FileRecord(msgspec.Struct, kw_only=True):
    """A file posted to a room; its bytes live on disk under ``id``, never in the store."""

    id: str  # random, unguessable: the download URL's only key
    room_id: str
    name: str  # the uploader's file name, as stored and shown
    size: int
    sha256: str  # hex digest of the stored bytes
    uploader: str
    ts_ms: int
    post_seq: int = 0  # the msgid of the post announcing it; 0: not posted (yet)


class OutboxEvent(msgspec.Struct, kw_only=True, gc=False):
    """An activity record for the compliance service (payload: its JSON)."""

    kind: str
    payload: str
    ts_ms: int
    shard: int = -1  # the room owner's fencing token, as in ``NewMessage`` (not columns)
    epoch: int = 0


class OutboxRecord(msgspec.Struct, kw_only=True, gc=False):
    id: int
    kind: str
    payload: str
    ts_ms: int


class ChatStore(Protocol):
    """What the server and ``pchat admin`` need from a chat store.

    Driver, disk and network failures surface as ``core.errors.StoreError``.
    """

    async def open(self, *, create: bool = True) -> None:
        """Connect and create or migrate the schema; safe to call on an existing store.
        ``create=False``: a store that does not exist yet (no file, no schema) raises
        ``StoreMissing`` instead of being created empty."""

    async def close(self) -> None: ...

    async def claim_domain(self, domain: str, *, record: bool = True) -> str:
        """Records ``domain`` as the store's if none is recorded yet (unless ``record`` is
        False); returns the recorded one, "" for none. The digest HA1s are keyed by the
        realm (the domain), so a store only works for the domain it was created with."""

    # -- change tracking: admin edits bump it; running workers poll it
    async def revision(self) -> int: ...
    async def bump_revision(self) -> int: ...

    # -- users
    async def get_user(self, uri: str) -> UserRecord | None: ...
    async def put_user(self, user: UserRecord) -> None:
        """Insert or replace the whole record."""

    async def put_users(self, users: list[UserRecord], *, replace: bool) -> int:
        """Writes ``users`` in one transaction; an address that exists is replaced only with
        ``replace`` (else kept). Returns how many were written."""

    async def set_admin(self, uri: str, admin: bool) -> bool:
        """Grants or revokes the administrator role; False: no such user."""

    async def list_users(self) -> list[UserRecord]: ...
    async def delete_user(self, uri: str) -> bool:
        """Forgets the user (their posts stay, under their address); False: no such user."""

    # -- categories
    async def put_category(self, category: CategoryRecord) -> None: ...
    async def get_category(self, category_id: str) -> CategoryRecord | None: ...
    async def get_category_by_name(self, name: str) -> CategoryRecord | None: ...
    async def list_categories(self) -> list[CategoryRecord]: ...
    async def delete_category(self, category_id: str) -> bool:
        """False (and nothing deleted) when the category still has rooms."""

    # -- rooms
    async def put_room(self, room: RoomRecord) -> None:
        """Insert or replace; raises ``Conflict`` when another room has the name,
        ``NotFound`` when its category does not exist."""

    async def get_room(self, room_id: str) -> RoomRecord | None: ...
    async def get_room_by_name(self, name: str) -> RoomRecord | None:
        """Names compare case-insensitively."""

    async def list_rooms(self) -> list[RoomRecord]: ...
    async def search_rooms(self, text: str, limit: int) -> list[RoomRecord]:
        """Rooms whose name or description contains ``text`` (case-insensitive), by name."""

    async def rooms_with_principal(self, principals: list[str], role: RoomRole) -> list[RoomRecord]:
        """Rooms where any of ``principals`` holds ``role``."""

    async def delete_room(self, room_id: str) -> bool:
        """Delete a room with its messages, roles, follows, invitations and file records."""

    # -- messages
    async def append_messages(
        self, messages: list[NewMessage], outbox: list[OutboxEvent] | None = None
    ) -> None:
        """Store all in one transaction, with their compliance ``outbox`` rows: all are
        durable when it returns, or none (a post never exists without its CHAT event).

        A ``(room_id, seq)`` already stored (or twice in the list) raises ``Conflict``;
        a fencing token (``NewMessage.shard``/``epoch``) that is not current raises
        ``Fenced``, checked inside the same transaction, and nothing is written."""

    async def max_seq(self, room_id: str) -> int:
        """Highest stored seq of the room, 0 when it has none."""

    async def recent_client_keys(self, room_id: str, since_ms: int) -> list[ClientKey]: ...
    async def history_last(self, room_id: str, count: int) -> list[MessageRecord]: ...
    async def history_before(self, room_id: str, seq: int, count: int) -> list[MessageRecord]: ...
    async def history_after(self, room_id: str, seq: int, count: int) -> list[MessageRecord]: ...
    async def history_search(self, room_id: str, text: str, count: int) -> list[MessageRecord]:
        """The ``count`` newest posts matching ``text`` (full-text), oldest first."""

    async def delete_message(self, room_id: str, seq: int) -> bool: ...

    # -- compliance outbox (the durable queue)
    async def add_outbox(self, events: list[OutboxEvent]) -> None:
        """One transaction for the whole list; fenced as ``append_messages``."""

    # -- shard fencing tokens (ARCHITECTURE §8)
    async def claim_shards(self, shards: list[int]) -> dict[int, int]:
        """A new lease holder's tokens: each shard's epoch + 1, in one transaction. Writes
        carrying an older epoch are refused from then on."""

    async def outbox_head(self, limit: int) -> list[OutboxRecord]:
        """The oldest rows, by id."""

    async def delete_outbox(self, ids: list[int]) -> None: ...
    async def outbox_stats(self) -> tuple[int, int]:
        """(rows, ts_ms of the oldest row or 0)."""

    # -- invitations
    async def add_invitations(self, invitations: list[InvitationRecord]) -> list[InvitationRecord]:
        """Store (ids ignored on input), returning the records with their new ids."""

    async def pending_invitations(self, invitee: str) -> list[InvitationRecord]: ...
    async def mark_invitations_delivered(self, ids: list[int]) -> None: ...
    async def invitations_after(self, last_id: int, limit: int) -> list[InvitationRecord]:
        """Undelivered invitations with an id above ``last_id``, oldest first (workers
        follow new ones this way, whoever wrote them)."""

    # -- followed rooms
    async def follow(self, user: str, room_id: str) -> None: ...
    async def unfollow(self, user: str, room_id: str) -> None: ...
    async def followed(self, user: str) -> list[str]: ...
    async def followed_rooms(self, user: str) -> list[RoomRecord]:
        """The rooms ``user`` follows that still exist, in one read (sign-in needs them)."""
        ...

    async def signin_rooms(self, user: str, principals: list[str]) -> SigninRooms:
        """The rooms where ``principals`` are members, managers, and those ``user``
        follows, and ``user``'s pending invitations with their rooms: what
        ``rooms_with_principal``, ``followed_rooms`` and ``pending_invitations`` answer, in
        one read."""
        ...

    # -- preferences
    async def get_pref(self, user: str, label: str) -> PrefRecord | None: ...
    async def set_pref(
        self, user: str, label: str, seqid: int, content: bytes
    ) -> PrefRecord | None:
        """Store when ``seqid`` equals the stored seqid (0 for a new label), bumping it;
        ``None`` when it is stale (the caller answers 409)."""

    # -- files (metadata; the bytes are on disk)
    async def add_file(self, record: FileRecord, outbox: list[OutboxEvent]) -> None:
        """Store the record with its compliance ``outbox`` rows in one transaction."""

    async def get_file(self, file_id: str) -> FileRecord | None: ...
    async def room_files(self, room_id: str) -> list[FileRecord]:
        """The room's file records, oldest first (its quota, its page, its deletion)."""

    async def room_file_bytes(self, room_id: str) -> int:
        """The bytes all the room's files hold (its quota), summed by the store."""

    async def set_file_post(self, file_id: str, seq: int) -> None:
        """Links the file to the post that announced it."""

    async def delete_file(self, file_id: str) -> bool:
        """Forgets the record (the caller removes the bytes after); False: none."""
