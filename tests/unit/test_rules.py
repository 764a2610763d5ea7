"""Unit tests for core/rooms/rules.py: who may see, read and post, as one table.

The expected table is written out by hand from the rules (XCCOS.md §3, ARCHITECTURE §4
invariant 3) rather than computed, so a change to any rule shows up as a failing row.
"""

from __future__ import annotations

import itertools

import msgspec
import pytest

from core.rooms import rules
from core.store.base import CategoryRecord, Privacy, RoomRecord, RoomType

MEMBER = "sip:member@example.com"
MANAGER = "sip:manager@example.com"
PRESENTER = "sip:presenter@example.com"
OUTSIDER = "sip:outsider@example.com"  # allowed by the category, holds no role in the room
DENIED_USER = "sip:denied@example.com"  # named in the category's denied list
DENIED_DOMAIN = "sip:eve@evil.example"  # in a domain the category denies
OTHER_DOMAIN = "sip:olga@other.example"  # outside the category's allowed list

WHO = {
    "member": MEMBER,
    "manager": MANAGER,
    "presenter": PRESENTER,
    "outsider": OUTSIDER,
    "denied_user": DENIED_USER,
    "denied_domain": DENIED_DOMAIN,
    "other_domain": OTHER_DOMAIN,
}

# The ethical wall: evil.example is allowed by domain but denied too, so "denied wins" is
# what keeps eve out; denied@example.com is allowed by domain and denied by name.
CATEGORY = CategoryRecord(
    id="cat",
    name="Cat",
    allowed=["domain:example.com", "domain:evil.example"],
    denied=[DENIED_USER, "domain:evil.example"],
)


def _room(privacy: Privacy, room_type: RoomType, *, disabled: bool = False) -> RoomRecord:
    # The denied users and the other-domain user are members: the category must still win.
    return RoomRecord(
        id="r",
        name="R",
        category_id="cat",
        privacy=privacy,
        type=room_type,
        disabled=disabled,
        members=[MEMBER, DENIED_USER, DENIED_DOMAIN, OTHER_DOMAIN],
        managers=[MANAGER],
        presenters=[PRESENTER],
    )


# (privacy, type) -> who -> "s" may see, "r" may read, "p" may post ("-" may not).
WALLED = {"denied_user": "---", "denied_domain": "---", "other_domain": "---"}
EXPECTED: dict[tuple[Privacy, RoomType], dict[str, str]] = {
    ("open", "normal"): {
        "member": "srp",
        "manager": "srp",
        "presenter": "srp",
        "outsider": "srp",
    }
    | WALLED,
    ("open", "auditorium"): {
        "member": "sr-",
        "manager": "sr-",
        "presenter": "srp",
        "outsider": "sr-",
    }
    | WALLED,
    ("closed", "normal"): {
        "member": "srp",
        "manager": "srp",
        "presenter": "srp",
        "outsider": "s--",
    }
    | WALLED,
    ("closed", "auditorium"): {
        "member": "sr-",
        "manager": "sr-",
        "presenter": "srp",
        "outsider": "s--",
    }
    | WALLED,
    ("secret", "normal"): {
        "member": "srp",
        "manager": "srp",
        "presenter": "srp",
        "outsider": "---",
    }
    | WALLED,
    ("secret", "auditorium"): {
        "member": "sr-",
        "manager": "sr-",
        "presenter": "srp",
        "outsider": "---",
    }
    | WALLED,
}

CASES = [
    pytest.param(privacy, room_type, who, flags, id=f"{privacy}-{room_type}-{who}")
    for (privacy, room_type), row in EXPECTED.items()
    for who, flags in row.items()
]


def _flags(room: RoomRecord, category: CategoryRecord, user: str) -> str:
    return "".join(
        letter if allowed else "-"
        for letter, allowed in (
            ("s", rules.can_see(room, category, user)),
            ("r", rules.can_read(room, category, user)),
            ("p", rules.can_post(room, category, user)),
        )
    )


@pytest.mark.parametrize(("privacy", "room_type", "who", "flags"), CASES)
def test_permission_table(privacy: Privacy, room_type: RoomType, who: str, flags: str) -> None:
    assert _flags(_room(privacy, room_type), CATEGORY, WHO[who]) == flags


@pytest.mark.parametrize(
    ("privacy", "room_type"),
    list(itertools.product(["open", "closed", "secret"], ["normal", "auditorium"])),
)
@pytest.mark.parametrize("who", list(WHO))
def test_disabled_room_is_invisible_to_everyone(
    privacy: Privacy, room_type: RoomType, who: str
) -> None:
    assert _flags(_room(privacy, room_type, disabled=True), CATEGORY, WHO[who]) == "---"


@pytest.mark.parametrize(("privacy", "room_type"), list(EXPECTED))
@pytest.mark.parametrize("who", list(WHO))
def test_post_implies_read_implies_see(privacy: Privacy, room_type: RoomType, who: str) -> None:
    room, user = _room(privacy, room_type), WHO[who]
    if rules.can_post(room, CATEGORY, user):
        assert rules.can_read(room, CATEGORY, user)
    if rules.can_read(room, CATEGORY, user):
        assert rules.can_see(room, CATEGORY, user)


def test_domain_principal_makes_a_whole_domain_members() -> None:
    room = RoomRecord(id="r", name="R", category_id="cat", members=["domain:example.com"])
    open_category = CategoryRecord(id="cat", name="Cat")
    assert rules.can_read(room, open_category, OUTSIDER)
    # A closed room is visible to a stranger (403, not 404) but not readable.
    assert rules.can_see(room, open_category, "sip:x@elsewhere.example")
    assert not rules.can_read(room, open_category, "sip:x@elsewhere.example")


# -- matches, domain_of


@pytest.mark.parametrize(
    ("principals", "user", "expected"),
    [
        pytest.param([], MEMBER, False, id="no-principals"),
        pytest.param([MEMBER], MEMBER, True, id="exact-uri"),
        pytest.param([MANAGER], MEMBER, False, id="other-user-same-domain"),
        pytest.param(["domain:example.com"], MEMBER, True, id="domain"),
        pytest.param(["domain:EXAMPLE.com"], MEMBER, True, id="domain-principal-case"),
        pytest.param(["domain:example.com"], "sip:bob@Example.COM", True, id="user-host-case"),
        pytest.param(["domain:example.com"], "sip:bob@sub.example.com", False, id="subdomain"),
        pytest.param(["domain:sub.example.com"], MEMBER, False, id="parent-domain"),
        pytest.param(["example.com"], MEMBER, False, id="bare-domain-is-not-a-principal"),
        pytest.param(["domain:example"], MEMBER, False, id="domain-prefix-only"),
        pytest.param([OUTSIDER, "domain:other.example", MEMBER], MEMBER, True, id="any-of"),
    ],
)
def test_matches(principals: list[str], user: str, expected: bool) -> None:
    assert rules.matches(principals, user) is expected


def test_matches_accepts_any_iterable_once() -> None:
    assert rules.matches(iter(["domain:nope.example", MEMBER]), MEMBER)


@pytest.mark.parametrize(
    ("uri", "domain"),
    [
        ("sip:alice@example.com", "example.com"),
        ("sip:alice@Example.COM", "example.com"),
        ("sips:a.b@chat.example.org", "chat.example.org"),
    ],
)
def test_domain_of(uri: str, domain: str) -> None:
    assert rules.domain_of(uri) == domain


# -- category_allows


@pytest.mark.parametrize(
    ("allowed", "denied", "user", "expected"),
    [
        pytest.param([], [], OTHER_DOMAIN, True, id="empty-allowed-admits-everyone"),
        pytest.param([], [OTHER_DOMAIN], OTHER_DOMAIN, False, id="denied-user"),
        pytest.param([], ["domain:other.example"], OTHER_DOMAIN, False, id="denied-domain"),
        pytest.param([OTHER_DOMAIN], [], OTHER_DOMAIN, True, id="allowed-user"),
        pytest.param(["domain:example.com"], [], OTHER_DOMAIN, False, id="not-in-allowed"),
        pytest.param(["domain:example.com"], [], MEMBER, True, id="allowed-domain"),
        pytest.param([MEMBER], ["domain:example.com"], MEMBER, False, id="denied-domain-wins"),
        pytest.param(["domain:example.com"], [MEMBER], MEMBER, False, id="denied-user-wins"),
        pytest.param([], ["domain:example.com"], OTHER_DOMAIN, True, id="other-domain-denied"),
    ],
)
def test_category_allows(allowed: list[str], denied: list[str], user: str, expected: bool) -> None:
    category = CategoryRecord(id="c", name="C", allowed=allowed, denied=denied)
    assert rules.category_allows(category, user) is expected


# -- roles


def test_managers_and_presenters_count_as_members() -> None:
    room = _room("secret", "normal")
    assert rules.is_member(room, MEMBER)
    assert rules.is_member(room, MANAGER)
    assert rules.is_member(room, PRESENTER)
    assert not rules.is_member(room, OUTSIDER)


def test_only_managers_are_managers() -> None:
    room = _room("open", "normal")
    assert rules.is_manager(room, MANAGER)
    assert not rules.is_manager(room, MEMBER)
    assert not rules.is_manager(room, PRESENTER)


# -- visibility


@pytest.mark.parametrize(
    ("privacy", "wire"), [("open", "public"), ("closed", "private"), ("secret", "secret")]
)
def test_visibility_wire_names(privacy: Privacy, wire: str) -> None:
    assert rules.visibility(_room(privacy, "normal")) == wire


def test_the_wall_beats_a_domain_manager() -> None:
    """can_manage: a `domain:` manager principal covers the domain, the wall still wins."""
    room = RoomRecord(
        id="r", name="R", category_id="cat", managers=["domain:example.com", "domain:evil.example"]
    )
    assert rules.can_manage(room, CATEGORY, OUTSIDER)
    assert rules.is_manager(room, DENIED_USER) and not rules.can_manage(room, CATEGORY, DENIED_USER)
    assert not rules.can_manage(room, CATEGORY, DENIED_DOMAIN)


# -- file uploads: both switches, then the right to post


@pytest.mark.parametrize(
    ("category_on", "room_switch", "on"),
    [
        (True, "inherit", True),
        (True, "off", False),
        (False, "inherit", False),
        (False, "off", False),
    ],
)
def test_uploads_need_both_switches(category_on: bool, room_switch: str, on: bool) -> None:
    category = msgspec.structs.replace(CATEGORY, file_upload=category_on)
    room = msgspec.structs.replace(_room("open", "normal"), file_upload=room_switch)
    assert rules.uploads_on(room, category) is on
    assert rules.can_upload(room, category, MEMBER) is on


def test_upload_needs_the_right_to_post() -> None:
    auditorium = _room("open", "auditorium")
    assert rules.can_upload(auditorium, CATEGORY, PRESENTER)
    assert not rules.can_upload(auditorium, CATEGORY, MEMBER)  # reads, may not post
    assert not rules.can_upload(_room("closed", "normal"), CATEGORY, OUTSIDER)


def test_can_create_needs_a_creator_the_wall_admits() -> None:
    category = CategoryRecord(
        id="c",
        name="C",
        allowed=["domain:example.com"],
        denied=[DENIED_USER],
        creators=[MEMBER, DENIED_USER, "domain:other.example"],
    )
    assert rules.can_create(category, MEMBER)
    assert not rules.can_create(category, OUTSIDER)  # allowed, but not a creator
    assert not rules.can_create(category, DENIED_USER)  # a creator behind the wall
    assert not rules.can_create(category, OTHER_DOMAIN)  # a creator by domain, not allowed
