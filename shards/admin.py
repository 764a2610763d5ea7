"""`pchat admin`: users, categories, rooms, roles and messages, straight in the chat store.

It works whether or not a server runs: it writes the store through the same rules as the
HTTP management API (core/rooms/management.py, acting as an administrator), bumps the
store's revision (which running workers poll every second) and, when Redis answers,
tells them at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from core.compliance.store import ComplianceStore
from core.config import Settings
from core.errors import NotFound, PchatError
from core.files.registry import make_storage
from core.rooms.management import ADMIN, CategoryChange, Management, RoomChange, principal
from core.sip.digest import user_ha1s
from core.store.base import ChatStore, RoomRecord, UserRecord
from core.store.registry import make_store
from core.xccos.ids import room_uri
from shards import wire

Out = Callable[[str], None]


class AdminError(Exception):
    """Shown to the operator as is; the command exits with status 2."""


def _bool(value: str) -> bool:
    if value.lower() in ("on", "true", "yes", "1"):
        return True
    if value.lower() in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError("use on or off")


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Adds `admin OBJECT OP`; every leaf takes the common flags (--config, --data-dir…)."""
    admin = sub.add_parser("admin", help="manage users, categories, rooms and messages")
    objects = admin.add_subparsers(dest="object", required=True)

    def leaf(
        group: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
    ) -> argparse.ArgumentParser:
        return group.add_parser(name, parents=[common], help=text, description=text)

    user = objects.add_parser("user", help="users and their persistent-chat policy")
    uops = user.add_subparsers(dest="op", required=True)
    p = leaf(uops, "add", "add a user (persistent chat enabled unless --disabled)")
    p.add_argument("uri")
    p.add_argument("--password", required=True)
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--disabled", action="store_true", help="leave persistent chat off")
    p.add_argument("--admin", action="store_true", help="a pchat administrator")
    p = leaf(uops, "passwd", "set a new password")
    p.add_argument("uri")
    p.add_argument("--password", required=True)
    for op in ("enable", "disable"):
        p = leaf(
            uops, op, f"{op} persistent chat for the user (a running server applies it at once)"
        )
        p.add_argument("uri")
    p = leaf(uops, "delete", "delete a user (a running server signs them out at once)")
    p.add_argument("uri")
    leaf(uops, "list", "list users")

    cat = objects.add_parser("category", help="room categories (the ethical wall)")
    cops = cat.add_subparsers(dest="op", required=True)
    for op, text in (("add", "add a category"), ("set", "change a category")):
        p = leaf(cops, op, text)
        p.add_argument("name", help="the category's name" + (" or id" if op == "set" else ""))
        if op == "set":
            p.add_argument("--rename", help="new name")
        p.add_argument("--description")
        p.add_argument("--creators", nargs="*", help="who may create rooms in it")
        p.add_argument("--members", nargs="*", help="who is allowed in it (none listed: everyone)")
        p.add_argument(
            "--denied", nargs="*", help="who is never allowed in it (wins over --members)"
        )
        p.add_argument("--invitations", type=_bool, help="on|off")
        p.add_argument("--file-upload", type=_bool, help="on|off")
        p.add_argument("--history", type=_bool, help="on|off (off: posts are delivered, not kept)")
    p = leaf(cops, "delete", "delete a category that has no rooms")
    p.add_argument("name")
    leaf(cops, "list", "list categories")

    room = objects.add_parser("room", help="rooms, their roles and messages")
    rops = room.add_subparsers(dest="op", required=True)
    for op, text in (("add", "add a room; prints its URI"), ("set", "change a room")):
        p = leaf(rops, op, text)
        p.add_argument("name", help="the room's name" + (", id or URI" if op == "set" else ""))
        p.add_argument("--category", required=op == "add", help="category name or id")
        if op == "set":
            p.add_argument("--rename", help="new name")
        p.add_argument("--privacy", choices=["open", "closed", "secret"])
        p.add_argument("--type", choices=["normal", "auditorium"])
        p.add_argument("--invitations", choices=["inherit", "off"])
        p.add_argument("--files", choices=["inherit", "off"], help="the room's upload switch")
        p.add_argument("--description")
        p.add_argument("--topic")
        for role in ("members", "managers", "presenters"):
            p.add_argument(
                f"--{role}", nargs="*", help=f"replace the {role} (users or domain:NAME)"
            )
            if op == "set":
                p.add_argument(f"--add-{role}", nargs="*", default=[])
                p.add_argument(f"--remove-{role}", nargs="*", default=[])
    for op, text in (
        ("disable", "disable a room: everyone in it is removed at once, its history kept"),
        ("enable", "enable a disabled room"),
        ("delete", "delete a room with its history"),
        ("show", "show a room's settings and roles"),
    ):
        p = leaf(rops, op, text)
        p.add_argument("name")
    leaf(rops, "list", "list rooms")

    comp = objects.add_parser("compliance", help="the compliance service")
    compops = comp.add_subparsers(dest="op", required=True)
    leaf(compops, "status", "backlog, the batch being retried, the last archive run")
    leaf(compops, "run-now", "ask the running service to archive what is pending now")

    msg = objects.add_parser("message", help="posts")
    mops = msg.add_subparsers(dest="op", required=True)
    p = leaf(mops, "remove", "remove one post from a room's history")
    p.add_argument("room")
    p.add_argument("msgid", type=int)
    return admin


async def run(settings: Settings, args: argparse.Namespace, out: Out) -> None:
    if not settings.store:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    store = make_store(settings.store_url, settings.store_pool)
    await store.open()
    try:
        action = ACTIONS[(args.object, args.op)]
        changed = await action(store, settings, args, out)
        if changed:
            await _notify(settings)
    except PchatError as exc:
        raise AdminError(str(exc)) from exc
    finally:
        await store.close()


async def _notify(settings: Settings) -> None:
    """Best effort: workers also poll the revision, so a Redis that is down only delays."""
    client = aioredis.Redis.from_url(settings.effective_redis_url, socket_timeout=0.5)
    with contextlib.suppress(OSError, aioredis.RedisError, asyncio.TimeoutError):
        await asyncio.wait_for(client.publish(wire.ADMIN_CHANNEL, "changed"), 1.0)
    await client.aclose()


def _management(store: ChatStore, s: Settings) -> Management:
    return Management(
        store,
        invitations_per_change=s.limits.invitations_per_change,
        files=make_storage(s.files.backend, s.files_dir),
    )


async def _user(store: ChatStore, uri: str) -> UserRecord:
    record = await store.get_user(principal(uri))
    if record is None:
        raise AdminError(f"no user {uri}; add it with: pchat admin user add {uri} --password …")
    return record


Action = Callable[[ChatStore, Settings, argparse.Namespace, Out], Awaitable[bool]]


async def _user_add(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    uri = principal(a.uri)
    if await store.get_user(uri) is not None:
        raise AdminError(f"user {uri} exists; use 'pchat admin user passwd' to change it")
    ha1 = user_ha1s(uri, s.domain, a.password)
    await store.put_user(
        UserRecord(uri=uri, display_name=a.name, ha1=ha1, enabled=not a.disabled, admin=a.admin)
    )
    await store.bump_revision()
    out(f"{uri} added (persistent chat {'disabled' if a.disabled else 'enabled'})")
    return True


async def _user_passwd(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    record = await _user(store, a.uri)
    record.ha1 = user_ha1s(record.uri, s.domain, a.password)
    await store.put_user(record)
    await store.bump_revision()  # every worker signs out the old password's sessions
    out(f"{record.uri}: password changed")
    return True


async def _user_policy(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    record = await _user(store, a.uri)
    record.enabled = a.op == "enable"
    await store.put_user(record)
    await store.bump_revision()
    out(f"{record.uri}: persistent chat {'enabled' if record.enabled else 'disabled'}")
    return True


async def _user_delete(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    record = await _user(store, a.uri)
    await store.delete_user(record.uri)
    await store.bump_revision()  # every worker signs the user out
    out(f"{record.uri} deleted")
    return True


async def _user_list(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    for user in await store.list_users():
        flags = ("enabled" if user.enabled else "disabled") + (" admin" if user.admin else "")
        out(f"{user.uri}\t{user.display_name}\t{flags}")
    return False


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


async def _compliance_status(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Out
) -> bool:
    outbox, outbox_oldest = await store.outbox_stats()
    archive = ComplianceStore(s.compliance_store_path)
    try:
        status = archive.status()
    finally:
        archive.close()
    now = time.time()

    def age(ts_ms: int) -> str:
        return f"{now - ts_ms / 1000:.0f} s" if ts_ms else "-"

    out(
        f"compliance: {'enabled' if s.compliance.enabled else 'disabled'}"
        f" (adapters: {', '.join(s.compliance.adapters)})"
    )
    out(f"outbox (chat store): {outbox} events, oldest {age(outbox_oldest)}")
    out(
        f"compliance store: {status.pending_events} events not archived,"
        f" oldest {age(status.oldest_ms)}"
    )
    if status.open_batch:
        out(
            f"batch {status.open_batch} being retried: {status.attempts} failed runs,"
            f" last error: {status.last_error}"
        )
    out(
        f"last archive run that succeeded: {age(status.last_success_ms)} ago"
        if status.last_success_ms
        else "no archive run has succeeded yet"
    )
    out(f"output: {s.compliance_output_dir}")
    if status.run_requested:
        out("a run is requested and waits for the service")
    return False


async def _compliance_run_now(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Out
) -> bool:
    archive = ComplianceStore(s.compliance_store_path)
    try:
        archive.request_run()
    finally:
        archive.close()
    out("run requested; the active compliance service starts it within a second")
    return False


ACTIONS: dict[tuple[str, str], Action] = {
    ("compliance", "status"): _compliance_status,
    ("compliance", "run-now"): _compliance_run_now,
    ("user", "add"): _user_add,
    ("user", "passwd"): _user_passwd,
    ("user", "enable"): _user_policy,
    ("user", "disable"): _user_policy,
    ("user", "delete"): _user_delete,
    ("user", "list"): _user_list,
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
