"""The bench population: users, rooms, who sits in which room, and writing them to a store.

Names are deterministic (``bu000001@<domain>``, room ids ``bench-<class>-00001``), so a
running server can be populated once and targeted by many runs. Users and rooms go straight
through the chat store API: 80,000 ``pchat admin`` processes would take hours.

The users can sign in, so their password is random, never a published one: a run against
its own server makes one up; a population of a running server keeps it in a file of its
owner's only (``--password-file``), where later runs and locust read it. ``depopulate``
removes the population again (``python -m bench.load --cleanup STORE_URL``).
"""

from __future__ import annotations

import os
import random
import secrets
import time
from pathlib import Path

import msgspec

from bench.load.profiles import Profile
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord, RoomRecord, UserRecord
from core.store.registry import make_store

CATEGORY_ID = "bench"
BENCH_NAME = "pchat bench user"  # the display name that marks a user as the bench's
# Where a population of a running server keeps its password (current directory, mode 0600).
PASSWORD_FILE = ".pchat-bench-password"


def new_password() -> str:
    """144 random bits: the bench users of a reachable server must not be guessable."""
    return secrets.token_urlsafe(18)


def read_password(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SystemExit(
            f"no bench password in {path} ({exc.strerror}): populate first (--populate)"
        ) from None


def kept_password(path: Path) -> str:
    """The password in ``path``; a new one written there (owner only) when there is none,
    so populating the same store again keeps the users' password."""
    if path.exists():
        return read_password(path)
    password = new_password()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


SEED = 5  # the same profile always seats the same people in the same rooms


def user_address(index: int, domain: str) -> str:
    return f"bu{index:06d}@{domain}"


def room_id(class_name: str, index: int) -> str:
    return f"bench-{class_name}-{index:05d}"


class Seating(msgspec.Struct, frozen=True, kw_only=True):
    """Room ids (with their class) and, per user, the indexes of the rooms they sit in."""

    rooms: list[str]
    room_class: list[str]
    seats: list[list[int]]


def seat(profile: Profile) -> Seating:
    """Each room's people are a run of a shuffled user list that wraps around, so nobody
    sits twice in one room and everyone gets about the same number of rooms per class."""
    rng = random.Random(SEED)
    order = list(range(profile.users))
    rng.shuffle(order)
    rooms: list[str] = []
    classes: list[str] = []
    seats: list[list[int]] = [[] for _ in range(profile.users)]
    cursor = 0
    for room_class in profile.rooms:
        size = min(room_class.size, profile.users)
        for n in range(room_class.count):
            index = len(rooms)
            rooms.append(room_id(room_class.name, n + 1))
            classes.append(room_class.name)
            for k in range(size):
                seats[order[(cursor + k) % profile.users]].append(index)
            cursor = (cursor + size) % profile.users
    return Seating(rooms=rooms, room_class=classes, seats=seats)


async def populate(
    store_url: str, domain: str, profile: Profile, seating: Seating, password: str
) -> float:
    """Writes the category, rooms (open) and users (enabled); returns the seconds it took."""
    started = time.monotonic()
    store = make_store(store_url)
    await store.open()
    try:
        if await store.get_category(CATEGORY_ID) is None:
            await store.put_category(CategoryRecord(id=CATEGORY_ID, name="Bench"))
        for rid in seating.rooms:
            if await store.get_room(rid) is None:
                await store.put_room(
                    RoomRecord(
                        id=rid,
                        name=rid,
                        category_id=CATEGORY_ID,
                        privacy="open",
                        created_by="bench",
                    )
                )
        # HA1s take four hashes per user; the password is the same, the names are not.
        users = []
        for i in range(profile.users):
            uri = f"sip:{user_address(i, domain)}"
            ha1 = user_ha1s(uri, domain, password)
            users.append(UserRecord(uri=uri, display_name=BENCH_NAME, ha1=ha1, enabled=True))
            if len(users) == 1000:  # one transaction per thousand, as pchat admin's import
                await store.put_users(users, replace=True)
                users.clear()
        await store.put_users(users, replace=True)
        await store.bump_revision()
    finally:
        await store.close()
    return time.monotonic() - started


async def depopulate(store_url: str, domain: str) -> tuple[int, int]:
    """Removes the bench users (named ``bu…`` and marked ``BENCH_NAME``), the bench rooms
    with their history and the bench category; returns (users, rooms) removed. A running
    server signs the removed users out (the revision bump)."""
    store = make_store(store_url)
    await store.open(create=False)
    try:
        rooms = [r for r in await store.list_rooms() if r.category_id == CATEGORY_ID]
        for room in rooms:
            await store.delete_room(room.id)
        if await store.get_category(CATEGORY_ID) is not None:
            await store.delete_category(CATEGORY_ID)
        prefix, suffix = "sip:bu", f"@{domain}"
        users = [
            u.uri
            for u in await store.list_users()
            if u.display_name == BENCH_NAME and u.uri.startswith(prefix) and u.uri.endswith(suffix)
        ]
        for uri in users:
            await store.delete_user(uri)
        await store.bump_revision()
    finally:
        await store.close()
    return len(users), len(rooms)
