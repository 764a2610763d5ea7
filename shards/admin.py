"""`pchat admin`: users, categories and rooms, straight in the chat store.

It works whether or not a server runs: it writes the store, bumps its revision (which
running workers poll every second) and, when Redis answers, tells them at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from core.config import Settings
from core.errors import Conflict
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord, ChatStore, RoomRecord, UserRecord
from core.store.registry import make_store
from core.xccos.ids import room_uri

ADMIN_CHANNEL = "pchat:admin"


class AdminError(Exception):
    """Shown to the operator as is; the command exits with status 2."""


def normalise_uri(uri: str) -> str:
    uri = uri.strip().lower()
    return uri if uri.startswith("sip:") else f"sip:{uri}"


def principals(values: list[str] | None) -> list[str]:
    """'alice@example.com' -> 'sip:alice@example.com'; 'domain:example.com' kept."""
    out = []
    for value in values or []:
        for item in value.split(","):
            item = item.strip()
            if item:
                out.append(item.lower() if item.startswith("domain:") else normalise_uri(item))
    return sorted(set(out))


def new_id() -> str:
    return secrets.token_hex(8)


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Adds `admin OBJECT OP`; every leaf takes the common flags (--config, --data-dir…)."""
    admin = sub.add_parser("admin", help="manage users, categories and rooms")
    objects = admin.add_subparsers(dest="object", required=True)

    user = objects.add_parser("user", help="users and their persistent-chat policy")
    uops = user.add_subparsers(dest="op", required=True)
    p = uops.add_parser(
        "add", parents=[common], help="add a user (policy enabled unless --disabled)"
    )
    p.add_argument("uri")
    p.add_argument("--password", required=True)
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--disabled", action="store_true", help="leave persistent chat off")
    p.add_argument("--admin", action="store_true", help="a pchat administrator")
    p = uops.add_parser("passwd", parents=[common], help="set a new password")
    p.add_argument("uri")
    p.add_argument("--password", required=True)
    for op in ("enable", "disable"):
        p = uops.add_parser(op, parents=[common], help=f"{op} persistent chat for the user")
        p.add_argument("uri")
    uops.add_parser("list", parents=[common], help="list users")

    cat = objects.add_parser("category", help="room categories")
    cops = cat.add_subparsers(dest="op", required=True)
    p = cops.add_parser("add", parents=[common], help="add a category")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--creators", nargs="*", help="who may create rooms in it")
    p.add_argument("--members", nargs="*", help="who is allowed in it (default: everyone)")
    p.add_argument("--denied", nargs="*", help="who is never allowed in it")
    cops.add_parser("list", parents=[common], help="list categories")

    room = objects.add_parser("room", help="rooms")
    rops = room.add_subparsers(dest="op", required=True)
    p = rops.add_parser("add", parents=[common], help="add a room; prints its URI")
    p.add_argument("name")
    p.add_argument("--category", required=True)
    p.add_argument("--privacy", choices=["open", "closed", "secret"], default="closed")
    p.add_argument("--type", choices=["normal", "auditorium"], default="normal")
    p.add_argument("--members", nargs="*")
    p.add_argument("--managers", nargs="*")
    p.add_argument("--presenters", nargs="*")
    p.add_argument("--description", default="")
    p.add_argument("--topic", default="")
    rops.add_parser("list", parents=[common], help="list rooms")
    return admin


async def run(settings: Settings, args: argparse.Namespace, out: Callable[[str], None]) -> None:
    store = make_store(settings.store_url)
    await store.open()
    try:
        action = ACTIONS[(args.object, args.op)]
        changed = await action(store, settings, args, out)
        if changed:
            await store.bump_revision()
            await _notify(settings)
    finally:
        await store.close()


async def _notify(settings: Settings) -> None:
    """Best effort: workers also poll the revision, so a Redis that is down only delays."""
    client = aioredis.Redis.from_url(settings.effective_redis_url, socket_timeout=0.5)
    with contextlib.suppress(OSError, aioredis.RedisError, asyncio.TimeoutError):
        await asyncio.wait_for(client.publish(ADMIN_CHANNEL, "changed"), 1.0)
    await client.aclose()


async def _user(store: ChatStore, uri: str) -> UserRecord:
    record = await store.get_user(normalise_uri(uri))
    if record is None:
        raise AdminError(f"no user {uri}; add it with: pchat admin user add {uri} --password …")
    return record


Action = Callable[[ChatStore, Settings, argparse.Namespace, Callable[[str], None]], Awaitable[bool]]


async def _user_add(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Callable[[str], None]
) -> bool:
    uri = normalise_uri(a.uri)
    if await store.get_user(uri) is not None:
        raise AdminError(f"user {uri} exists; use 'pchat admin user passwd' to change it")
    ha1 = user_ha1s(uri, s.domain, a.password)
    await store.put_user(
        UserRecord(uri=uri, display_name=a.name, ha1=ha1, enabled=not a.disabled, admin=a.admin)
    )
    out(f"{uri} added (persistent chat {'disabled' if a.disabled else 'enabled'})")
    return True


async def _user_passwd(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Callable[[str], None]
) -> bool:
    record = await _user(store, a.uri)
    record.ha1 = user_ha1s(record.uri, s.domain, a.password)
    await store.put_user(record)
    out(f"{record.uri}: password changed")
    return True


async def _user_policy(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Callable[[str], None]
) -> bool:
    record = await _user(store, a.uri)
    record.enabled = a.op == "enable"
    await store.put_user(record)
    out(f"{record.uri}: persistent chat {'enabled' if record.enabled else 'disabled'}")
    return True


async def _user_list(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Callable[[str], None]
) -> bool:
    for user in await store.list_users():
        flags = ("enabled" if user.enabled else "disabled") + (" admin" if user.admin else "")
        out(f"{user.uri}\t{user.display_name}\t{flags}")
    return False


async def _category_add(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Callable[[str], None]
) -> bool:
    if await store.get_category_by_name(a.name) is not None:
        raise AdminError(f"category {a.name!r} exists")
    category = CategoryRecord(
        id=new_id(),
        name=a.name,
        description=a.description,
        allowed=principals(a.members),
        denied=principals(a.denied),
        creators=principals(a.creators),
    )
    await store.put_category(category)
    out(f"ma-cat://{s.domain}/{category.id}")
    return True


async def _category_list(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Callable[[str], None]
) -> bool:
    for c in await store.list_categories():
        allowed = ",".join(c.allowed) or "everyone"
        out(f"ma-cat://{s.domain}/{c.id}\t{c.name}\tallowed={allowed}\tdenied={','.join(c.denied)}")
    return False


async def _room_add(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Callable[[str], None]
) -> bool:
    category = await store.get_category_by_name(a.category)
    if category is None:
        raise AdminError(
            f"no category {a.category!r}; add it with: pchat admin category add {a.category!r}"
        )
    room = RoomRecord(
        id=new_id(),
        name=a.name,
        category_id=category.id,
        description=a.description,
        topic=a.topic,
        privacy=a.privacy,
        type=a.type,
        members=principals(a.members),
        managers=principals(a.managers),
        presenters=principals(a.presenters),
        created_by="admin",
        created_ms=int(time.time() * 1000),
    )
    try:
        await store.put_room(room)
    except Conflict as exc:
        raise AdminError(f"a room named {a.name!r} exists") from exc
    out(room_uri(s.domain, room.id))
    return True


async def _room_list(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Callable[[str], None]
) -> bool:
    categories = {c.id: c.name for c in await store.list_categories()}
    for r in await store.list_rooms():
        state = "disabled" if r.disabled else r.privacy
        category = categories.get(r.category_id, "?")
        out(f"{room_uri(s.domain, r.id)}\t{r.name}\t{category}\t{state}\t{r.type}")
    return False


ACTIONS: dict[tuple[str, str], Action] = {
    ("user", "add"): _user_add,
    ("user", "passwd"): _user_passwd,
    ("user", "enable"): _user_policy,
    ("user", "disable"): _user_policy,
    ("user", "list"): _user_list,
    ("category", "add"): _category_add,
    ("category", "list"): _category_list,
    ("room", "add"): _room_add,
    ("room", "list"): _room_list,
}
