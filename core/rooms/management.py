"""Room management with its authorization rules (issue: the full room model).

One place decides who may create, change, disable and delete rooms and categories;
`pchat admin` (as an administrator) and the HTTP management API (as a signed-in user)
both call it. Every change bumps the store's revision, which running workers follow.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import Literal

import msgspec

from core.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from core.files.base import FileStorage
from core.files.names import stored_name
from core.rooms import rules
from core.store.base import (
    CategoryRecord,
    ChatStore,
    FileRecord,
    InvitationRecord,
    RoomRecord,
    UserRecord,
)


class Actor(msgspec.Struct, frozen=True):
    """Who asks: a user (with the store's admin flag) or the operator's CLI."""

    uri: str
    admin: bool = False


ADMIN = Actor("admin", admin=True)
ROOM_TEXT_CHARS = 256  # the original's limit on a room's name and on its description


class RoomChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The properties a change may set; None leaves a property as it is."""

    name: str | None = None
    description: str | None = None
    topic: str | None = None
    category: str | None = None  # a category name or id
    privacy: Literal["open", "closed", "secret"] | None = None
    type: Literal["normal", "auditorium"] | None = None
    invitations: Literal["inherit", "off"] | None = None
    file_upload: Literal["inherit", "off"] | None = None  # the room's filepost switch
    disabled: bool | None = None
    members: list[str] | None = None
    managers: list[str] | None = None
    presenters: list[str] | None = None
    add_members: list[str] = []
    remove_members: list[str] = []
    add_managers: list[str] = []
    remove_managers: list[str] = []
    add_presenters: list[str] = []
    remove_presenters: list[str] = []


class CategoryChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str | None = None
    description: str | None = None
    allowed: list[str] | None = None
    denied: list[str] | None = None
    creators: list[str] | None = None
    invitations: bool | None = None
    file_upload: bool | None = None
    history: bool | None = None


def principal(value: str) -> str:
    """'alice@example.com' -> 'sip:alice@example.com'; 'domain:x' kept; case folded."""
    value = value.strip().lower()
    if not value:
        raise BadRequest("empty principal")
    if value.startswith(("domain:", "sip:")):
        return value
    if "@" not in value:
        raise BadRequest(f"{value!r} is neither a SIP address nor domain:<name>")
    return f"sip:{value}"


def listed(values: list[str]) -> list[str]:
    """The entries of ``values``, each of which may list several with commas."""
    return [v for value in values for v in value.split(",") if v.strip()]


def principals(values: list[str]) -> list[str]:
    return sorted({principal(v) for v in listed(values)})


def copy_given(target: object, change: object, fields: Iterable[str]) -> None:
    """Sets on ``target`` each of ``fields`` that ``change`` gives (None: kept as it is)."""
    for field in fields:
        value = getattr(change, field)
        if value is not None:
            setattr(target, field, value)


def new_id() -> str:
    return secrets.token_hex(8)


def invitations_on(room: RoomRecord, category: CategoryRecord) -> bool:
    return category.invitations and room.invitations != "off"


# The room's plain properties a change may set (the role lists are applied apart).
_ROOM_FIELDS = (
    "name",
    "description",
    "topic",
    "privacy",
    "type",
    "invitations",
    "file_upload",
    "disabled",
)


class Management:
    """Operations on rooms and categories, checked against the actor's rights."""

    def __init__(
        self,
        store: ChatStore,
        *,
        invitations_per_change: int = 1000,
        files: FileStorage | None = None,
    ) -> None:
        self._store = store
        self._max_invitations = invitations_per_change  # limits.invitations_per_change; 0: none
        # The file store's bytes: a deleted room's files and a removed post's file go with
        # them. None: records only (the worker's sweep removes unrecorded bytes later).
        self._files = files

    # -- lookups -------------------------------------------------------------------------

    async def category(self, ref: str) -> CategoryRecord:
        found = await self._store.get_category(ref) or await self._store.get_category_by_name(ref)
        if found is None:
            raise NotFound(f"no category {ref!r}")
        return found

    async def room(self, ref: str) -> RoomRecord:
        room_id = ref.rpartition("/")[2] if ref.startswith("ma-chan://") else ref
        found = await self._store.get_room(room_id) or await self._store.get_room_by_name(ref)
        if found is None:
            raise NotFound(f"no room {ref!r}")
        return found

    async def _visible_room(self, actor: Actor, ref: str) -> tuple[RoomRecord, CategoryRecord]:
        """The room if the actor may change it; a room they may not see answers exactly
        like a missing one (same error, same text)."""
        room, category = await self._seen_room(actor, ref)
        if not actor.admin and not rules.can_manage(room, category, actor.uri):
            raise Forbidden("only the room's managers may change it")
        return room, category

    async def _seen_room(self, actor: Actor, ref: str) -> tuple[RoomRecord, CategoryRecord]:
        room = await self.room(ref)
        category = await self.category(room.category_id)
        if not actor.admin and not self._sees(actor, room, category):
            raise NotFound(f"no room {ref!r}")
        return room, category

    async def managed_room(self, actor: Actor, ref: str) -> tuple[RoomRecord, CategoryRecord]:
        """The room and its category if the actor may change it (Forbidden if they only
        see it, NotFound if not even that)."""
        return await self._visible_room(actor, ref)

    async def visible_room(self, actor: Actor, ref: str) -> RoomRecord:
        """The room if the actor may know it exists, else NotFound like a missing room."""
        return (await self._seen_room(actor, ref))[0]

    @staticmethod
    def _sees(actor: Actor, room: RoomRecord, category: CategoryRecord) -> bool:
        return rules.can_manage(room, category, actor.uri) or rules.can_see(
            room, category, actor.uri
        )

    async def rooms_for(self, actor: Actor) -> list[RoomRecord]:
        """Every room for an administrator; the rooms a user manages or may see otherwise."""
        rooms = await self._store.list_rooms()
        if actor.admin:
            return rooms
        categories = {c.id: c for c in await self._store.list_categories()}
        return [
            r
            for r in rooms
            if r.category_id in categories and self._sees(actor, r, categories[r.category_id])
        ]

    # -- rooms ---------------------------------------------------------------------------

    async def create_room(
        self, actor: Actor, name: str, category_ref: str, change: RoomChange
    ) -> RoomRecord:
        category = await self.category(category_ref)
        if not actor.admin and not rules.can_create(category, actor.uri):
            raise Forbidden(f"you may not create rooms in category {category.name!r}")
        if not name.strip():
            raise BadRequest("a room needs a name")
        room = RoomRecord(
            id=new_id(),
            name=name.strip(),
            category_id=category.id,
            created_by=actor.uri,
            created_ms=int(time.time() * 1000),
        )
        change.category = None
        await self._apply(room, category, change)
        if not actor.admin and actor.uri not in room.managers:
            # The creator manages the room whatever the change's manager list says (a form
            # listing others only must not leave the room without the one who made it).
            room.managers = sorted([*room.managers, actor.uri])
        await self._save(room, category, actor, invite_all=True, before=None)
        return room

    async def update_room(self, actor: Actor, ref: str, change: RoomChange) -> RoomRecord:
        room, category = await self._visible_room(actor, ref)
        before = msgspec.structs.replace(room)
        if change.category is not None:
            target = await self.category(change.category)
            if target.id != room.category_id:
                if not actor.admin and not rules.can_create(target, actor.uri):
                    raise Forbidden("only creators in the target category may move a room there")
                room.category_id, category = target.id, target
        await self._apply(room, category, change)
        await self._save(room, category, actor, invite_all=False, before=before)
        return room

    async def set_disabled(self, actor: Actor, ref: str, disabled: bool) -> RoomRecord:
        return await self.update_room(actor, ref, RoomChange(disabled=disabled))

    async def removable_room(self, actor: Actor, ref: str) -> RoomRecord:
        """The room if the actor may delete it and remove its posts, for the pages that
        do both: NotFound if they may not see it, else Forbidden unless an administrator."""
        room, _ = await self._seen_room(actor, ref)
        need_remover(actor, "delete rooms and remove messages; managers may disable a room")
        return room

    async def delete_room(self, actor: Actor, ref: str) -> None:
        need_remover(actor, "delete rooms; managers may disable them")
        room = await self.room(ref)
        files = await self._store.room_files(room.id)
        await self._store.delete_room(room.id)  # the records first: never a record without bytes
        await self._remove_bytes(files)
        await self._store.bump_revision()

    async def remove_message(self, actor: Actor, ref: str, seq: int) -> None:
        need_remover(actor, "remove messages")
        room = await self.room(ref)
        if not await self._store.delete_message(room.id, seq):
            raise NotFound(f"no message {seq} in {room.name!r}")
        # A file post takes its file with it (the record, then the bytes).
        posted = [f for f in await self._store.room_files(room.id) if f.post_seq == seq]
        for record in posted:
            await self._store.delete_file(record.id)
        await self._remove_bytes(posted)
        await self._store.bump_revision()

    async def _remove_bytes(self, files: list[FileRecord]) -> None:
        if self._files is not None:
            await self._files.remove([stored_name(f.id, f.name) for f in files])

    async def _apply(self, room: RoomRecord, category: CategoryRecord, change: RoomChange) -> None:
        for field in _ROOM_FIELDS:
            value = getattr(change, field)
            if value is not None:
                setattr(
                    room,
                    field,
                    value.strip() if isinstance(value, str) and field == "name" else value,
                )
        for role in ("members", "managers", "presenters"):
            current = set(getattr(room, role))
            replace = getattr(change, role)
            if replace is not None:
                current = set(principals(replace))
            current |= set(principals(getattr(change, f"add_{role}")))
            current -= set(principals(getattr(change, f"remove_{role}")))
            # The ethical wall: a principal the category does not allow is never kept.
            setattr(room, role, sorted(p for p in current if _allowed_principal(category, p)))
        if not room.name:
            raise BadRequest("a room needs a name")
        if len(room.name) > ROOM_TEXT_CHARS or len(room.description) > ROOM_TEXT_CHARS:
            raise BadRequest(
                f"a room's name and description are at most {ROOM_TEXT_CHARS} characters"
            )

    async def _save(
        self,
        room: RoomRecord,
        category: CategoryRecord,
        actor: Actor,
        *,
        invite_all: bool,
        before: RoomRecord | None,
    ) -> None:
        new: list[str] = []
        if invitations_on(room, category):
            old = set(before.members) if before is not None else set()
            new = [
                m for m in room.members if m.startswith("sip:") and m not in old and m != actor.uri
            ]
            cap = self._max_invitations
            if cap and len(new) > cap:
                raise TooLarge(f"this change would invite {len(new)} users; at most {cap} at once")
        try:
            await self._store.put_room(room)
        except Conflict as exc:
            raise Conflict(f"a room named {room.name!r} exists") from exc
        if new:
            now = int(time.time() * 1000)
            await self._store.add_invitations(
                [
                    InvitationRecord(id=0, room_id=room.id, invitee=m, inviter=actor.uri, ts_ms=now)
                    for m in new
                ]
            )
        await self._store.bump_revision()

    # -- categories (administrators only) ---------------------------------------------------

    async def create_category(
        self, actor: Actor, name: str, change: CategoryChange
    ) -> CategoryRecord:
        need_admin(actor)
        if await self._store.get_category_by_name(name) is not None:
            raise Conflict(f"category {name!r} exists")
        category = CategoryRecord(id=new_id(), name=name)
        await self._apply_category(category, change)
        await self._store.put_category(category)
        await self._store.bump_revision()
        return category

    async def update_category(
        self, actor: Actor, ref: str, change: CategoryChange
    ) -> CategoryRecord:
        need_admin(actor)
        category = await self.category(ref)
        await self._apply_category(category, change)
        await self._store.put_category(category)
        for room in await self._store.list_rooms():
            if room.category_id == category.id:
                # Members the category no longer allows leave the room's lists for good.
                await self._apply(room, category, RoomChange())
                await self._store.put_room(room)
        await self._store.bump_revision()
        return category

    async def delete_category(self, actor: Actor, ref: str) -> None:
        need_admin(actor)
        category = await self.category(ref)
        if not await self._store.delete_category(category.id):
            raise Conflict(f"category {category.name!r} still has rooms")
        await self._store.bump_revision()

    async def _apply_category(self, category: CategoryRecord, change: CategoryChange) -> None:
        if change.name is not None:
            other = await self._store.get_category_by_name(change.name)
            if other is not None and other.id != category.id:
                raise Conflict(f"category {change.name!r} exists")
            category.name = change.name
        copy_given(category, change, ("description", "invitations", "file_upload", "history"))
        for field in ("allowed", "denied", "creators"):
            value = getattr(change, field)
            if value is not None:
                setattr(category, field, principals(value))

    # -- users (administrators only) --------------------------------------------------------

    async def user(self, uri: str) -> UserRecord:
        found = await self._store.get_user(principal(uri))
        if found is None:
            raise NotFound(f"no user {uri}")
        return found

    async def set_user(
        self, actor: Actor, uri: str, *, enabled: bool | None = None, admin: bool | None = None
    ) -> UserRecord:
        """Turns a user's persistent chat on or off and grants or takes the administrator
        role. An administrator cannot take their own role: the install keeps one."""
        need_admin(actor, "users")
        record = await self.user(uri)
        if admin is False and record.uri == actor.uri:
            raise Forbidden(
                "you cannot take your own administrator role; ask another administrator"
            )
        if enabled is not None:
            record.enabled = enabled
        if admin is not None:
            record.admin = admin
        await self._store.put_user(record)
        await self._store.bump_revision()  # workers re-check the user's sessions
        return record


def _allowed_principal(category: CategoryRecord, p: str) -> bool:
    if p.startswith("domain:"):
        return p not in category.denied and (not category.allowed or p in category.allowed)
    return rules.category_allows(category, p)


def need_admin(actor: Actor, what: str = "categories") -> None:
    """Forbidden unless the actor is an administrator (who alone manage ``what``)."""
    if not actor.admin:
        raise Forbidden(f"only administrators manage {what}")


def need_remover(actor: Actor, what: str) -> None:
    """Forbidden unless the actor is an administrator: they alone delete a room or remove
    a post, because the history is a compliance record; a room's managers disable it."""
    if not actor.admin:
        raise Forbidden(f"only administrators {what}")
