"""The bench population: users, rooms, who sits in which room, and writing them to a store.

Names are deterministic (``bu000001@<domain>``, room ids ``bench-<class>-00001``), so a
running server can be populated once and targeted by many runs. Users and rooms go straight
through the chat store API: 80,000 ``pchat admin`` processes would take hours.
"""

from __future__ import annotations

import random
import time

import msgspec

from bench.load.profiles import Profile
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord, RoomRecord, UserRecord
from core.store.registry import make_store

PASSWORD = "bench-pw"
CATEGORY_ID = "bench"
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


async def populate(store_url: str, domain: str, profile: Profile, seating: Seating) -> float:
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
        for i in range(profile.users):
            uri = f"sip:{user_address(i, domain)}"
            await store.put_user(
                UserRecord(uri=uri, ha1=user_ha1s(uri, domain, PASSWORD), enabled=True)
            )
        await store.bump_revision()
    finally:
        await store.close()
    return time.monotonic() - started
