"""`pchat admin user …`: add, change, delete, list, the administrator role, bulk import."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from core.config import Settings
from core.rooms.management import principal
from core.sip.digest import user_ha1s
from core.store.base import ChatStore, UserRecord
from shards.admin.command import Action, AdminError, Out, user_of
from shards.admin.user_file import ImportLineError, read_users


def password_of(a: argparse.Namespace, uri: str) -> str:
    """--password, else the first line of --password-file, else asked twice on a terminal."""
    if a.password:
        return str(a.password)
    if a.password_file:
        try:
            with open(a.password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise AdminError(f"cannot read --password-file: {exc.strerror or exc}") from None
        if not password:
            raise AdminError(f"--password-file {a.password_file} holds no password")
        return password
    if not sys.stdin.isatty():
        raise AdminError("no password: give --password-file FILE (or --password) for scripts")
    try:
        first = getpass.getpass(f"new password for {uri}: ")
        again = getpass.getpass("the same again: ")
    except (EOFError, KeyboardInterrupt):
        raise AdminError("no password given; nothing changed") from None
    if not first or first != again:
        raise AdminError("the two passwords differ (or are empty); nothing changed")
    return first


# Users written per transaction: one commit per thousand is what makes thousands per second
# (one per user costs a commit each); 1000 records of about 1 KB bound the memory held.
IMPORT_BATCH = 1000


async def _user_add(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    uri = principal(a.uri)
    if await store.get_user(uri) is not None:
        raise AdminError(f"user {uri} exists; use 'pchat admin user passwd' to change it")
    ha1 = user_ha1s(uri, s.domain, password_of(a, uri))
    await store.put_user(
        UserRecord(uri=uri, display_name=a.name, ha1=ha1, enabled=not a.disabled, admin=a.admin)
    )
    await store.bump_revision()
    out(f"{uri} added (persistent chat {'disabled' if a.disabled else 'enabled'})")
    return True


async def _user_passwd(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    record = await user_of(store, a.uri)
    record.ha1 = user_ha1s(record.uri, s.domain, password_of(a, record.uri))
    await store.put_user(record)
    await store.bump_revision()  # every worker signs out the old password's sessions
    out(f"{record.uri}: password changed")
    return True


async def _user_policy(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    record = await user_of(store, a.uri)
    record.enabled = a.op == "enable"
    await store.put_user(record)
    await store.bump_revision()
    out(f"{record.uri}: persistent chat {'enabled' if record.enabled else 'disabled'}")
    return True


async def _user_delete(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    record = await user_of(store, a.uri)
    await store.delete_user(record.uri)
    await store.bump_revision()  # every worker signs the user out
    out(f"{record.uri} deleted")
    return True


async def _user_list(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    for user in await store.list_users():
        flags = ("enabled" if user.enabled else "disabled") + (" admin" if user.admin else "")
        out(f"{user.uri}\t{user.display_name}\t{flags}")
    return False


async def _user_role(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    admin = a.op == "grant-admin"
    record = await user_of(store, a.uri)
    await store.set_admin(record.uri, admin)
    await store.bump_revision()
    out(f"{record.uri}: {'now an administrator' if admin else 'no longer an administrator'}")
    return True


async def _user_import(store: ChatStore, s: Settings, a: argparse.Namespace, out: Out) -> bool:
    """Two passes over the file: every line is checked before the first user is written,
    so a bad line leaves the store as it was."""
    path = Path(a.file)
    fmt = a.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    total = _check_file(path, fmt, s.domain)
    written = 0
    batch: list[UserRecord] = []
    with _open(path) as stream:
        for _, user in _users(path, stream, fmt, s.domain):
            batch.append(user)
            if len(batch) == IMPORT_BATCH:
                written += await store.put_users(batch, replace=a.replace)
                batch.clear()
        written += await store.put_users(batch, replace=a.replace)
    await store.bump_revision()  # replaced passwords sign their old sessions out
    kept = total - written
    kept_text = f", {kept} existing kept (--replace replaces them)" if kept else ""
    out(f"{path}: {written} of {total} users written{kept_text}")
    return True


def _open(path: Path) -> IO[str]:
    try:
        return path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise AdminError(f"cannot read {path}: {exc.strerror or exc}") from None


def _users(path: Path, stream: IO[str], fmt: str, domain: str) -> Iterator[tuple[int, UserRecord]]:
    try:
        yield from read_users(stream, fmt, domain)
    except ImportLineError as exc:
        raise AdminError(f"{path}: {exc}; nothing was imported") from None
    except UnicodeDecodeError:
        raise AdminError(f"{path}: not UTF-8 text; nothing was imported") from None


def _check_file(path: Path, fmt: str, domain: str) -> int:
    with _open(path) as stream:
        return sum(1 for _ in _users(path, stream, fmt, domain))


ACTIONS: dict[tuple[str, str], Action] = {
    ("user", "add"): _user_add,
    ("user", "passwd"): _user_passwd,
    ("user", "enable"): _user_policy,
    ("user", "disable"): _user_policy,
    ("user", "delete"): _user_delete,
    ("user", "grant-admin"): _user_role,
    ("user", "revoke-admin"): _user_role,
    ("user", "import"): _user_import,
    ("user", "list"): _user_list,
}
