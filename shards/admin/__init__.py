"""`pchat admin`: users, categories, rooms, roles and messages, straight in the chat store.

It works whether or not a server runs: it writes the store through the same rules as the
HTTP management API (core/rooms/management.py, acting as an administrator), bumps the
store's revision (which running workers poll every second) and, when Redis answers,
tells them at once. It never creates a store unless told to (`pchat admin init`), and
refuses a store made for another domain (shards/store_claim.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

import redis.asyncio as aioredis

from core.config import Settings
from core.errors import PchatError
from core.store.base import ChatStore
from shards import wire
from shards.admin import backup, compliance_service, rooms, users
from shards.admin.audit_cli import cli_audit
from shards.admin.command import Action, AdminError, Out
from shards.admin.parser import add_parser
from shards.redis_clients import redis_client
from shards.store_claim import open_store, store_place

__all__ = ["ACTIONS", "AdminError", "add_parser", "run"]


async def _init(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    out(f"chat store ready at {store_place(s)} for domain {s.domain}")
    return True  # recorded in the audit log


ACTIONS: dict[tuple[str, str], Action] = {
    ("init", ""): _init,
    **users.ACTIONS,
    **rooms.ACTIONS,
    **compliance_service.ACTIONS,
}


async def run(settings: Settings, args: argparse.Namespace, out: Out) -> None:
    if args.object in ("backup", "restore"):  # they open the store files themselves
        try:
            await (backup.backup if args.object == "backup" else backup.restore)(
                settings, args, out
            )
        except PchatError as exc:
            raise AdminError(str(exc)) from exc
        if args.object == "restore":
            cli_audit(settings, args)
        return
    action = ACTIONS[(args.object, args.op)]
    create = args.object == "init"
    if create and not settings.store:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    try:
        store = await open_store(settings, create=create)
    except PchatError as exc:
        raise AdminError(str(exc)) from exc
    try:
        changed = await action(store, settings, args, out)
        if changed:
            cli_audit(settings, args)
            await _notify(settings)
    except PchatError as exc:
        raise AdminError(str(exc)) from exc
    finally:
        await store.close()


async def _notify(settings: Settings) -> None:
    """Best effort: workers also poll the revision, so a Redis that is down only delays."""
    client = redis_client(settings, socket_timeout=0.5)
    with contextlib.suppress(OSError, aioredis.RedisError, asyncio.TimeoutError):
        await asyncio.wait_for(client.publish(wire.ADMIN_CHANNEL, "changed"), 1.0)
    await client.aclose()
