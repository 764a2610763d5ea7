"""A sign-in's rooms and invitations read once (ChatStore.signin_rooms, CommandHandler's
parked read), and what must make a session read the store again: its own follow, an admin
change (a new invitation comes with one), its user's invitations shown elsewhere."""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from core.rooms.events import HistoryQuery, Participant
from core.rooms.owner import JoinResult, PostResult
from core.store.base import (
    CategoryRecord,
    ChatStore,
    InvitationRecord,
    MessageRecord,
    RoomRecord,
)
from core.xccos import build
from core.xccos.commands import CommandHandler, Directory, ServerInfo
from core.xccos.envelope import Command, decode_envelope
from core.xccos.ids import room_refs, room_uri

ALICE = "sip:alice@example.com"


class Rooms:
    """Only what getassociations and follow ask of the rooms' owners."""

    async def join(self, room_id: str, who: Participant) -> JoinResult:
        raise AssertionError("not used")

    async def part(self, room_id: str, session: str) -> None:
        raise AssertionError("not used")

    async def append_post(
        self, room_id: str, session: str, user: str, client_key: str, text: str
    ) -> PostResult:
        raise AssertionError("not used")

    async def history(
        self, room_id: str, user: str, query: HistoryQuery, session: str = ""
    ) -> list[MessageRecord]:
        raise AssertionError("not used")

    def online_count(self, room_id: str) -> int | None:
        return 0


class View:
    user = ALICE
    session_id = "1.1"
    gateway = 0
    pool_uri = ""

    def __init__(self, session_id: str = "1.1") -> None:
        self.session_id = session_id

    def begin_join(self, room_id: str) -> None: ...
    def end_join(self, room_id: str, ok: bool) -> None: ...
    def left(self, room_id: str) -> None: ...
    def joined(self) -> AbstractSet[str]:
        return set()

    def set_following(self, room_id: str, on: bool) -> None: ...


async def _setup(store: ChatStore) -> CommandHandler:
    await store.put_category(
        CategoryRecord(id="c1", name="general", allowed=["domain:example.com"])
    )
    for n in range(3):
        await store.put_room(
            RoomRecord(id=f"r{n}", name=f"room {n}", category_id="c1", privacy="open")
        )
    await store.put_room(
        RoomRecord(id="m1", name="members", category_id="c1", members=[ALICE], managers=[ALICE])
    )
    info = ServerInfo(
        domain="example.com",
        search_limit=100,
        message_size_limit=1000,
        story_size_limit=1000,
        history_max=100,
    )
    return CommandHandler(store, Rooms(), Directory(store), info)


async def _rooms(handler: CommandHandler, kind: str) -> list[str]:
    data = build.envelope(1, build.cmd("cmd:getassociations", 1, f'<assoc type="{kind}"/>'))
    [cmd] = decode_envelope(data).items
    assert isinstance(cmd, Command)
    [reply] = decode_envelope(build.envelope(2, await handler.command(View(), "1", cmd))).items
    return sorted(uri.rpartition("/")[2] for uri in room_refs(reply.data))  # type: ignore[union-attr]


async def _follow(handler: CommandHandler, room_id: str) -> None:
    chan = build.chanib(room_uri("example.com", room_id))
    [cmd] = decode_envelope(build.envelope(1, build.cmd("cmd:follow", 1, chan))).items
    assert isinstance(cmd, Command)
    assert "SUCCESS_OK" in await handler.command(View(), "1", cmd)


async def test_one_read_answers_what_the_single_queries_answer(store: ChatStore) -> None:
    await _setup(store)
    await store.follow(ALICE, "r1")
    principals = [ALICE, "domain:example.com"]
    both = await store.signin_rooms(ALICE, principals)
    assert [r.id for r in both.member] == [
        r.id for r in await store.rooms_with_principal(principals, "member")
    ]
    assert [r.id for r in both.manager] == ["m1"]
    assert [r.id for r in both.follower] == ["r1"]


async def test_the_parked_read_serves_the_sign_in_once(store: ChatStore) -> None:
    handler = await _setup(store)
    await store.follow(ALICE, "r0")
    await handler.load_signin_rooms(View.session_id, ALICE)
    await store.unfollow(ALICE, "r0")  # behind the worker's back: the parked read answers
    assert await _rooms(handler, "follower") == ["r0"]
    assert await _rooms(handler, "follower") == []  # taken once: the next ask reads the store
    assert await _rooms(handler, "member") == ["m1"]


async def test_a_follow_of_the_session_drops_its_parked_read(store: ChatStore) -> None:
    handler = await _setup(store)
    await handler.load_signin_rooms(View.session_id, ALICE)
    await _follow(handler, "r2")
    assert await _rooms(handler, "follower") == ["r2"]


async def test_an_admin_change_drops_every_parked_read(store: ChatStore) -> None:
    handler = await _setup(store)
    await handler.load_signin_rooms(View.session_id, ALICE)
    room = await store.get_room("r1")
    assert room is not None
    room.members = [ALICE]
    await store.put_room(room)
    await store.bump_revision()
    handler.signin_views.clear()  # what the worker's revision refresh does (runner.refresh)
    assert await _rooms(handler, "member") == ["m1", "r1"]


async def _invite(store: ChatStore, room_id: str) -> int:
    [inv] = await store.add_invitations(
        [InvitationRecord(id=0, room_id=room_id, invitee=ALICE, inviter="sip:bob@x", ts_ms=1)]
    )
    return inv.id


async def _getinv(handler: CommandHandler, view: View | None = None) -> list[tuple[str, str]]:
    data = build.envelope(1, build.cmd("cmd:getinv", 1, '<inv inviteId="1" domain="x"/>'))
    [cmd] = decode_envelope(data).items
    assert isinstance(cmd, Command)
    rpl = await handler.command(view or View(), "1", cmd)
    [reply] = decode_envelope(build.envelope(2, rpl)).items
    assert reply.data is not None  # type: ignore[union-attr]
    return [(i.get("chanUri").rpartition("/")[2], i.get("name")) for i in reply.data.findall("inv")]  # type: ignore[union-attr]


async def test_the_one_read_holds_the_pending_invitations_and_their_rooms(
    store: ChatStore,
) -> None:
    await _setup(store)
    await _invite(store, "r2")
    await _invite(store, "r0")
    await _invite(store, "gone")  # its room was deleted (or never was)
    read = await store.signin_rooms(ALICE, [ALICE, "domain:example.com"])
    assert read.invitations == await store.pending_invitations(ALICE)
    assert sorted(r.id for r in read.invited) == ["r0", "r2"]
    assert [r.name for r in read.invited if r.id == "r2"] == ["room 2"]
    nobody = await store.signin_rooms("sip:nobody@example.com", [])
    assert (nobody.invitations, nobody.invited) == ([], [])


async def test_getinv_at_sign_in_is_answered_from_the_parked_read(store: ChatStore) -> None:
    handler = await _setup(store)
    await _invite(store, "r1")
    await handler.load_signin_rooms(View.session_id, ALICE)
    room = await store.get_room("r1")
    assert room is not None
    room.name = "renamed"
    await store.put_room(room)  # behind the worker's back: the parked read answers
    await _invite(store, "r2")
    assert await _getinv(handler) == [("r1", "room 1")]
    assert await store.pending_invitations(ALICE) != []  # r2's: never parked, still pending
    assert await _getinv(handler) == [("r2", "room 2")]  # taken once: now from the store
    assert await store.pending_invitations(ALICE) == []


async def test_a_new_invitation_after_the_read_is_seen(store: ChatStore) -> None:
    handler = await _setup(store)
    await handler.load_signin_rooms(View.session_id, ALICE)
    await _invite(store, "r0")
    await store.bump_revision()  # an invitation comes with a room change
    handler.signin_views.clear()  # what the worker's revision refresh does (runner.refresh)
    assert await _getinv(handler) == [("r0", "room 0")]


async def test_invitations_shown_to_one_session_are_not_shown_again_to_another(
    store: ChatStore,
) -> None:
    handler = await _setup(store)
    await _invite(store, "r0")
    phone, laptop = View("1.1"), View("1.2")
    await handler.load_signin_rooms(phone.session_id, ALICE)
    await handler.load_signin_rooms(laptop.session_id, ALICE)  # both parked r0 as pending
    assert await _getinv(handler, phone) == [("r0", "room 0")]
    assert await _getinv(handler, laptop) == []  # delivered: the laptop's parked copy went
    assert await _rooms(handler, "member") == ["m1"]  # its rooms now come from the store


async def test_an_invitation_to_a_deleted_room_is_dropped_from_the_parked_read(
    store: ChatStore,
) -> None:
    handler = await _setup(store)
    await _invite(store, "r0")
    await _invite(store, "gone")
    await handler.load_signin_rooms(View.session_id, ALICE)
    assert await _getinv(handler) == [("r0", "room 0")]
    assert await store.pending_invitations(ALICE) == []  # both marked delivered
