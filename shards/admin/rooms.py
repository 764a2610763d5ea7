"""`pchat admin category|room|message …`: the HTTP API's rules, acting as an administrator."""

from __future__ import annotations

import argparse

from core.config import Settings
from core.errors import NotFound
from core.rooms.management import ADMIN, CategoryChange, RoomChange
from core.store.base import ChatStore, RoomRecord
from core.xccos.ids import room_uri
from shards.admin.command import Action, AdminError, Out
from shards.admin.command import management as _management


def _category_change(a: argparse.Namespace) -> CategoryChange:
    return CategoryChange(
        name=getattr(a, "rename", None),
        description=a.description,
        allowed=a.members,
        denied=a.denied,
        creators=a.creators,
        invitations=a.invitations,
        file_upload=a.file_upload,
        history=a.history,
    )


async def _category_add(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    category = await _management(store, s).create_category(ADMIN, a.name, _category_change(a))
    out(f"ma-cat://{s.domain}/{category.id}")
    return True


async def _category_set(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    category = await _management(store, s).update_category(ADMIN, a.name, _category_change(a))
    out(f"ma-cat://{s.domain}/{category.id}\t{category.name}")
    return True


async def _category_delete(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    await _management(store, s).delete_category(ADMIN, a.name)
    out(f"category {a.name!r} deleted")
    return True


async def _category_list(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    for c in await store.list_categories():
        allowed = ",".join(c.allowed) or "everyone"
        flags = ",".join(
            f
            for f, on in (
                ("invitations", c.invitations),
                ("files", c.file_upload),
                ("history", c.history),
            )
            if on
        )
        out(
            f"ma-cat://{s.domain}/{c.id}\t{c.name}\tallowed={allowed}\tdenied={','.join(c.denied)}\t{flags}"
        )
    return False


def _room_change(a: argparse.Namespace) -> RoomChange:
    change = RoomChange(
        name=getattr(a, "rename", None),
        description=a.description,
        topic=a.topic,
        category=a.category,
        privacy=a.privacy,
        type=a.type,
        invitations=a.invitations,
        file_upload=a.files,
        members=a.members,
        managers=a.managers,
        presenters=a.presenters,
    )
    for role in ("members", "managers", "presenters"):
        for verb in ("add", "remove"):
            setattr(change, f"{verb}_{role}", getattr(a, f"{verb}_{role}", []) or [])
    return change


async def _room_add(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    mgmt = _management(store, s)
    try:
        await mgmt.category(a.category)
    except NotFound as exc:
        raise AdminError(f"{exc}; add it with: pchat admin category add {a.category!r}") from exc
    room = await mgmt.create_room(ADMIN, a.name, a.category, _room_change(a))
    out(room_uri(s.domain, room.id))
    return True


async def _room_set(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    room = await _management(store, s).update_room(ADMIN, a.name, _room_change(a))
    out(_room_line(s, room, {}))
    return True


async def _room_state(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    mgmt = _management(store, s)
    if a.op == "delete":
        await mgmt.delete_room(ADMIN, a.name)
        out(f"room {a.name!r} deleted")
    else:
        room = await mgmt.set_disabled(ADMIN, a.name, a.op == "disable")
        out(_room_line(s, room, {}))
    return True


async def _room_show(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    room = await _management(store, s).room(a.name)
    category = await _management(store, s).category(room.category_id)
    out(_room_line(s, room, {category.id: category.name}))
    for field in (
        "description",
        "topic",
        "invitations",
        "file_upload",
        "members",
        "managers",
        "presenters",
        "created_by",
    ):
        value = getattr(room, field)
        out(f"  {field}: {', '.join(value) if isinstance(value, list) else value}")
    return False


def _room_line(s: Settings, r: RoomRecord, categories: dict[str, str]) -> str:
    state = "disabled" if r.disabled else r.privacy
    category = categories.get(r.category_id, r.category_id)
    return f"{room_uri(s.domain, r.id)}\t{r.name}\t{category}\t{state}\t{r.type}"


async def _room_list(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    categories = {c.id: c.name for c in await store.list_categories()}
    for r in await store.list_rooms():
        out(_room_line(s, r, categories))
    return False


async def _message_remove(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    await _management(store, s).remove_message(ADMIN, a.room, a.msgid)
    out(f"message {a.msgid} removed from {a.room!r}")
    return True


ACTIONS: dict[tuple[str, str], Action] = {
    ("category", "add"): _category_add,
    ("category", "set"): _category_set,
    ("category", "delete"): _category_delete,
    ("category", "list"): _category_list,
    ("room", "add"): _room_add,
    ("room", "set"): _room_set,
    ("room", "disable"): _room_state,
    ("room", "enable"): _room_state,
    ("room", "delete"): _room_state,
    ("room", "show"): _room_show,
    ("room", "list"): _room_list,
    ("message", "remove"): _message_remove,
}
