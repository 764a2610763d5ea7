"""Authorization rules of rooms and categories: who may see, read and post (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable

from core.store.base import CategoryRecord, RoomRecord


def domain_of(user_uri: str) -> str:
    """'sip:alice@example.com' -> 'example.com'."""
    return user_uri.rpartition("@")[2].lower()


def matches(principals: Iterable[str], user_uri: str) -> bool:
    """A principal is a user URI or 'domain:<name>' standing for everyone in that domain."""
    domain_principal = f"domain:{domain_of(user_uri)}"
    for principal in principals:
        if principal == user_uri or principal.lower() == domain_principal:
            return True
    return False


def category_allows(category: CategoryRecord, user_uri: str) -> bool:
    """The ethical wall: denied always wins; an empty allowed list admits everyone."""
    if matches(category.denied, user_uri):
        return False
    return not category.allowed or matches(category.allowed, user_uri)


def is_member(room: RoomRecord, user_uri: str) -> bool:
    """Managers and presenters count as members: they may always read their room."""
    return (
        matches(room.members, user_uri)
        or matches(room.managers, user_uri)
        or matches(room.presenters, user_uri)
    )


def is_manager(room: RoomRecord, user_uri: str) -> bool:
    """Named as a manager; whether that counts is for `can_manage` (the wall first)."""
    return matches(room.managers, user_uri)


def can_manage(room: RoomRecord, category: CategoryRecord, user_uri: str) -> bool:
    """May the user change the room? The ethical wall beats every room principal, a
    `domain:` manager included; the one rule for SIP and the HTTP API alike."""
    return category_allows(category, user_uri) and is_manager(room, user_uri)


def can_create(category: CategoryRecord, user_uri: str) -> bool:
    """May the user create rooms in the category (a creator the wall admits)?"""
    return matches(category.creators, user_uri) and category_allows(category, user_uri)


def can_see(room: RoomRecord, category: CategoryRecord, user_uri: str) -> bool:
    """May the user learn that the room exists (search, 403 rather than 404)?"""
    if room.disabled or not category_allows(category, user_uri):
        return False
    if room.privacy == "secret":
        return is_member(room, user_uri)
    return True


def can_read(room: RoomRecord, category: CategoryRecord, user_uri: str) -> bool:
    """May the user join the room, read its history and receive its posts?"""
    if not can_see(room, category, user_uri):
        return False
    return room.privacy == "open" or is_member(room, user_uri)


def can_post(room: RoomRecord, category: CategoryRecord, user_uri: str) -> bool:
    if not can_read(room, category, user_uri):
        return False
    if room.type == "auditorium":
        return matches(room.presenters, user_uri)
    return True


def uploads_on(room: RoomRecord, category: CategoryRecord) -> bool:
    """Both switches allow files: the category's EnableFileUpload and the room's
    filepost property (XCCOS.md §3 ``urn:parlano:ma:prop:filepost`` shows this)."""
    return category.file_upload and room.file_upload != "off"


def can_upload(room: RoomRecord, category: CategoryRecord, user_uri: str) -> bool:
    """May the user post a file: post in the room, with uploads on in room and category?"""
    return uploads_on(room, category) and can_post(room, category, user_uri)


def visibility(room: RoomRecord) -> str:
    """The wire name of the privacy setting (XCCOS.md §3, misspelt element id)."""
    return {"open": "public", "closed": "private", "secret": "secret"}[room.privacy]
