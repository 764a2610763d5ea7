"""Unit tests for core/rooms/owner.py: RoomOwner on a real SQLite store in tmp_path.

No sockets and no Redis: events go to a list, posts through a real GroupCommitter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from core.errors import BadRequest, Fenced, Forbidden, NotFound, Overloaded, TooLarge
from core.rooms.events import (
    HistoryQuery,
    JoinEvent,
    KickEvent,
    PartEvent,
    Participant,
    PostEvent,
    RoomEvent,
)
from core.rooms.grace import MAX_DROPPED_GATEWAYS, ROOM_GRACE_S, RejoinGrace
from core.rooms.owner import (
    OwnerSettings,
    PostResult,
    RoomOwner,
)
from core.rooms.state import RETRY_WINDOW_MS
from core.store.base import (
    CategoryRecord,
    ChatStore,
    MessageRecord,
    NewMessage,
    Privacy,
    RoomRecord,
    RoomType,
)
from core.store.batch import GroupCommitter
from core.store.fencing import FencedWrite
from core.store.registry import make_store

ALICE = "sip:alice@example.com"  # member of the closed and secret rooms
BOB = "sip:bob@example.com"  # no role anywhere
MANAGER = "sip:manager@example.com"
PRESENTER = "sip:presenter@example.com"
EVE = "sip:eve@evil.example"  # the category denies her domain

T0 = 1_700_000_000.0  # the fake clock's start, in seconds


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class ListSink:
    def __init__(self) -> None:
        self.events: list[RoomEvent] = []

    def publish(self, event: RoomEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[RoomEvent]) -> list[RoomEvent]:
        return [e for e in self.events if isinstance(e, kind)]


class GatedSink:
    """The committer's sink: the real store behind a gate, optionally failing once."""

    def __init__(self, store: ChatStore) -> None:
        self.store = store
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail_next: Exception | None = None

    async def append_messages(self, messages: list[NewMessage]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        await self.store.append_messages(messages)


class Env:
    """One store, committer and event list; ``owner()`` builds (or rebuilds) a RoomOwner."""

    def __init__(self, store: ChatStore, committer: GroupCommitter, gated: GatedSink) -> None:
        self.store = store
        self.committer = committer
        self.gated = gated
        self.sink = ListSink()
        self.clock = Clock()

    def owner(self, **settings: float) -> RoomOwner:
        return RoomOwner(
            self.store,
            self.committer,
            self.sink,
            msgspec.structs.replace(OwnerSettings(), **settings),
            clock=self.clock,
        )


async def _put_room(
    store: ChatStore,
    room_id: str,
    privacy: Privacy = "open",
    room_type: RoomType = "normal",
    **roles: list[str],
) -> None:
    await store.put_room(
        RoomRecord(
            id=room_id,
            name=room_id.title(),
            category_id="general",
            privacy=privacy,
            type=room_type,
            **roles,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = make_store(f"sqlite:///{tmp_path}/c.db")
    await store.open()
    await store.put_category(
        CategoryRecord(id="general", name="General", denied=["domain:evil.example"])
    )
    await _put_room(store, "lobby", "open")
    await _put_room(store, "closed", "closed", members=[ALICE], managers=[MANAGER])
    await _put_room(store, "secret", "secret", members=[ALICE])
    await _put_room(store, "stage", "open", "auditorium", presenters=[PRESENTER])
    await store.put_room(RoomRecord(id="off", name="Off", category_id="general", disabled=True))
    gated = GatedSink(store)
    committer = GroupCommitter(gated.append_messages)
    committer.start()
    try:
        yield Env(store, committer, gated)
    finally:
        gated.gate.set()
        await committer.stop()
        await store.close()


def _who(session: str, user: str, gateway: int = 0) -> Participant:
    return Participant(session=session, user=user, gateway=gateway)


async def _post(
    owner: RoomOwner, room: str, session: str, user: str, text: str, key: str = ""
) -> PostResult:
    return await asyncio.wait_for(owner.append_post(room, session, user, key, text), 5)


async def _started(
    owner: RoomOwner, room: str, session: str, user: str, key: str, text: str
) -> asyncio.Task[PostResult]:
    """A post under way: its seq taken, its commit not necessarily done."""
    task = asyncio.ensure_future(owner.append_post(room, session, user, key, text))
    await asyncio.sleep(0)
    return task


async def _stored(store: ChatStore, room: str) -> list[tuple[int, str]]:
    return [(m.seq, m.text) for m in await store.history_last(room, 1000)]


# -- join authorisation


@pytest.mark.parametrize(
    ("room", "user", "error"),
    [
        pytest.param("secret", BOB, NotFound, id="secret-non-member-404"),
        pytest.param("closed", BOB, Forbidden, id="closed-non-member-403"),
        pytest.param("nosuch", ALICE, NotFound, id="missing-room-404"),
        pytest.param("off", ALICE, NotFound, id="disabled-room-404"),
        pytest.param("lobby", EVE, NotFound, id="denied-domain-404"),
    ],
)
async def test_join_refused(env: Env, room: str, user: str, error: type[Exception]) -> None:
    owner = env.owner()
    with pytest.raises(error):
        await owner.join(room, _who("s1", user))
    assert owner.online_count(room) == 0
    assert env.sink.events == []


@pytest.mark.parametrize(
    ("room", "user"),
    [("lobby", BOB), ("closed", ALICE), ("closed", MANAGER), ("secret", ALICE), ("stage", BOB)],
)
async def test_join_allowed(env: Env, room: str, user: str) -> None:
    result = await env.owner().join(room, _who("s1", user))
    assert result.room.id == room
    assert result.category.id == "general"
    assert result.users == [user]
    assert result.ucnt == 1


async def test_join_publishes_join_event_and_lists_online_managers(env: Env) -> None:
    owner = env.owner()
    first = await owner.join("closed", _who("s1", ALICE, gateway=3))
    assert first.managers == []  # the manager is not online yet
    second = await owner.join("closed", _who("s2", MANAGER, gateway=5))
    assert second.users == [ALICE, MANAGER]
    assert second.managers == [MANAGER]
    assert second.ucnt == 2
    assert env.sink.events == [
        JoinEvent("closed", ALICE, "s1", 3, 1),
        JoinEvent("closed", MANAGER, "s2", 5, 2),
    ]
    assert owner.online_count("closed") == 2
    assert owner.active_rooms == 1


async def test_rejoin_of_a_session_is_not_announced_again(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    again = await owner.join("lobby", _who("s1", ALICE))
    assert again.ucnt == 1
    assert len(env.sink.of(JoinEvent)) == 1


async def test_two_sessions_of_one_user_count_and_announce_once(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    result = await owner.join("lobby", _who("s2", ALICE))
    assert result.users == [ALICE]
    assert result.ucnt == 1  # ucnt counts people, not devices
    assert [e for e in env.sink.events if isinstance(e, JoinEvent)] == [
        JoinEvent("lobby", ALICE, "s1", 0, 1)
    ]
    env.sink.events.clear()
    await owner.part("lobby", "s1")
    assert env.sink.events == []  # alice is still there on her other device
    await owner.part("lobby", "s2")
    assert env.sink.events == [PartEvent("lobby", ALICE, "s2", 0, 0)]


async def test_part_publishes_part_event(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE, gateway=1))
    await owner.join("lobby", _who("s2", BOB, gateway=2))
    env.sink.events.clear()
    await owner.part("lobby", "s1")
    assert env.sink.events == [PartEvent("lobby", ALICE, "s1", 1, 1)]
    assert owner.online_count("lobby") == 1


async def test_part_of_unknown_session_or_room_is_silent(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    env.sink.events.clear()
    await owner.part("lobby", "nobody")
    await owner.part("nosuch", "s1")
    await owner.part("closed", "s1")  # never loaded
    assert env.sink.events == []
    assert owner.online_count("lobby") == 1


async def test_participant_update_limit(env: Env) -> None:
    owner = env.owner(participant_update_limit=2)
    users = [f"sip:u{i}@example.com" for i in range(4)]
    small = [await owner.join("lobby", _who(f"s{i}", users[i])) for i in range(2)]
    assert [r.users for r in small] == [users[:1], users[:2]]
    assert len(env.sink.of(JoinEvent)) == 2
    env.sink.events.clear()

    big = await owner.join("lobby", _who("s2", users[2]))
    assert big.ucnt == 3
    assert big.users == []  # above the limit nobody gets the roster
    assert big.managers == []
    await owner.join("lobby", _who("s3", users[3]))
    assert env.sink.events == []  # and no per-user join traffic

    await owner.part("lobby", "s3")
    await owner.part("lobby", "s2")
    assert env.sink.events == []  # back at the limit: still quiet
    await owner.part("lobby", "s1")
    assert env.sink.events == [PartEvent("lobby", users[1], "s1", 0, 1)]
    assert owner.online_count("lobby") == 1


async def test_quiet_join_is_not_announced(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    env.sink.events.clear()
    result = await owner.join("lobby", _who("s2", BOB), quiet=True)
    assert result.users == [ALICE, BOB]
    assert result.ucnt == 2
    assert env.sink.events == []
    await owner.part("lobby", "s2")  # but it is on the roster: its part is announced
    assert env.sink.events == [PartEvent("lobby", BOB, "s2", 0, 1)]


async def test_drop_gateway_removes_its_sessions_silently(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("a", ALICE, gateway=1))
    await owner.join("lobby", _who("b", BOB, gateway=2))
    await owner.join("closed", _who("c", ALICE, gateway=1))
    env.sink.events.clear()
    owner.drop_gateway(1)
    # The gateway re-announces live sessions with quiet joins, so nothing is published.
    assert env.sink.events == []
    assert owner.online_count("lobby") == 1
    assert owner.online_count("closed") == 0
    assert owner.active_rooms == 1
    with pytest.raises(Forbidden):
        await owner.append_post("lobby", "a", ALICE, "", "from a dropped session")
    assert (await _post(owner, "lobby", "b", BOB, "still here")).seq == 1


async def test_join_reports_the_newest_seq(env: Env) -> None:
    owner = env.owner()
    assert (await owner.join("lobby", _who("s1", ALICE))).last_seq == 0
    for text in ("one", "two", "three"):
        await _post(owner, "lobby", "s1", ALICE, text)
    assert (await owner.join("lobby", _who("s2", BOB))).last_seq == 3
    reborn = env.owner()
    assert (await reborn.join("lobby", _who("s3", BOB))).last_seq == 3


async def test_join_during_a_commit_does_not_claim_the_uncommitted_post(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    env.gated.gate.clear()
    future = await _started(owner, "lobby", "s1", ALICE, "", "in flight")
    await asyncio.wait_for(env.gated.entered.wait(), 5)
    joined = await owner.join("lobby", _who("s2", BOB))
    env.gated.gate.set()
    assert (await asyncio.wait_for(future, 5)).seq == 1
    # Seq 1 was neither in the store nor delivered when BOB joined: it is still to come.
    assert joined.last_seq == 0


# -- posts


async def test_post_before_join_is_forbidden(env: Env) -> None:
    owner = env.owner()
    with pytest.raises(Forbidden):
        await owner.append_post("lobby", "s1", ALICE, "", "hello")
    await owner.join("lobby", _who("s1", ALICE))
    with pytest.raises(Forbidden):
        await owner.append_post("lobby", "other-session", ALICE, "", "hello")
    assert await env.store.max_seq("lobby") == 0


@pytest.mark.parametrize(
    ("room", "user"),
    [("nosuch", ALICE), ("secret", BOB), ("off", ALICE), ("lobby", EVE)],
)
async def test_post_to_a_room_the_user_cannot_see_is_404(env: Env, room: str, user: str) -> None:
    with pytest.raises(NotFound):
        await env.owner().append_post(room, "s1", user, "", "hello")


async def test_auditorium_only_presenters_post(env: Env) -> None:
    owner = env.owner()
    await owner.join("stage", _who("aud", BOB))
    await owner.join("stage", _who("pre", PRESENTER))
    with pytest.raises(Forbidden):
        await owner.append_post("stage", "aud", BOB, "", "heckle")
    result = await _post(owner, "stage", "pre", PRESENTER, "keynote")
    assert result.seq == 1
    assert await _stored(env.store, "stage") == [(1, "keynote")]


async def test_post_of_a_member_who_lost_membership_is_forbidden(env: Env) -> None:
    owner = env.owner()
    await owner.join("closed", _who("s1", ALICE))
    await _put_room(env.store, "closed", "closed", members=[BOB])
    await owner.refresh()
    with pytest.raises(Forbidden):
        await owner.append_post("closed", "s1", ALICE, "", "still here?")


@pytest.mark.parametrize(
    ("text", "error"),
    [("", BadRequest), ("   \n\t", BadRequest), ("x" * 11, TooLarge)],
)
async def test_bad_post_text(env: Env, text: str, error: type[Exception]) -> None:
    owner = env.owner(message_size_limit=10)
    await owner.join("lobby", _who("s1", ALICE))
    with pytest.raises(error):
        await owner.append_post("lobby", "s1", ALICE, "", text)
    assert (await _post(owner, "lobby", "s1", ALICE, "x" * 10)).seq == 1  # no seq was used


async def test_seq_increments_and_posts_are_published(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    await owner.join("lobby", _who("s2", BOB))
    env.sink.events.clear()
    results = [
        await _post(owner, "lobby", "s1", ALICE, "one"),
        await _post(owner, "lobby", "s2", BOB, "two"),
    ]
    env.clock.now += 1.5
    results.append(await _post(owner, "lobby", "s1", ALICE, "three"))
    ts0 = int(T0 * 1000)
    assert results == [PostResult(1, ts0), PostResult(2, ts0), PostResult(3, ts0 + 1500)]
    assert env.sink.events == [
        PostEvent("lobby", 1, ALICE, ts0, "one", "s1", ts0),
        PostEvent("lobby", 2, BOB, ts0, "two", "s2", ts0),
        PostEvent("lobby", 3, ALICE, ts0 + 1500, "three", "s1", ts0 + 1500),
    ]
    assert await _stored(env.store, "lobby") == [(1, "one"), (2, "two"), (3, "three")]


async def test_seqs_are_per_room(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    await owner.join("closed", _who("s1", ALICE))
    assert (await _post(owner, "lobby", "s1", ALICE, "a")).seq == 1
    assert (await _post(owner, "closed", "s1", ALICE, "b")).seq == 1
    assert (await _post(owner, "lobby", "s1", ALICE, "c")).seq == 2


async def test_post_is_published_only_after_commit(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    env.sink.events.clear()
    env.gated.gate.clear()
    future = await _started(owner, "lobby", "s1", ALICE, "k1", "hello")
    await asyncio.wait_for(env.gated.entered.wait(), 5)
    await asyncio.sleep(0.01)
    assert not future.done()  # not acknowledged while the commit is held
    assert env.sink.events == []
    assert await env.store.max_seq("lobby") == 0
    env.gated.gate.set()
    assert (await asyncio.wait_for(future, 5)).seq == 1
    assert env.sink.of(PostEvent) == [
        PostEvent("lobby", 1, ALICE, int(T0 * 1000), "hello", "s1", int(T0 * 1000))
    ]
    assert await _stored(env.store, "lobby") == [(1, "hello")]


async def test_failed_commit_is_not_acknowledged_and_a_retry_gets_a_new_seq(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    env.sink.events.clear()
    env.gated.fail_next = RuntimeError("disk full")
    future = await _started(owner, "lobby", "s1", ALICE, "k1", "hello")
    with pytest.raises(Overloaded):
        await asyncio.wait_for(future, 5)
    assert env.sink.events == []
    retry = await _post(owner, "lobby", "s1", ALICE, "hello", key="k1")
    assert retry.seq == 2  # seq 1 stays unused: seqs increase, they need not be dense
    assert await _stored(env.store, "lobby") == [(2, "hello")]
    assert len(env.sink.of(PostEvent)) == 1


async def test_commit_queue_full_is_overloaded_and_uses_no_seq(env: Env) -> None:
    committer = GroupCommitter(
        env.gated.append_messages, max_pending=1
    )  # never started: nothing drains
    owner = RoomOwner(env.store, committer, env.sink, OwnerSettings(), clock=env.clock)
    await owner.join("lobby", _who("s1", ALICE))
    first = await _started(owner, "lobby", "s1", ALICE, "", "one")
    with pytest.raises(Overloaded):
        await owner.append_post("lobby", "s1", ALICE, "k2", "two")
    committer.start()
    assert (await asyncio.wait_for(first, 5)).seq == 1
    third = await _started(owner, "lobby", "s1", ALICE, "k2", "two")
    assert (await asyncio.wait_for(third, 5)).seq == 2
    await committer.stop()


# -- retries (ARCHITECTURE §4 invariant 5)


async def test_retry_of_the_same_post_is_stored_once(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    first = await _post(owner, "lobby", "s1", ALICE, "hello", key="env-1")
    env.clock.now += 10
    again = await _post(owner, "lobby", "s1", ALICE, "hello", key="env-1")
    assert again == first
    assert await _stored(env.store, "lobby") == [(1, "hello")]
    assert len(env.sink.of(PostEvent)) == 1


async def test_retry_while_in_flight_shares_the_future(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    env.gated.gate.clear()
    first = await _started(owner, "lobby", "s1", ALICE, "env-1", "hello")
    second = await _started(owner, "lobby", "s1", ALICE, "env-1", "hello")
    env.gated.gate.set()
    assert (await asyncio.wait_for(second, 5)) == (await asyncio.wait_for(first, 5))
    assert (await second).seq == 1
    assert await _stored(env.store, "lobby") == [(1, "hello")]


async def test_retry_keys_are_per_author_and_per_key(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    await owner.join("lobby", _who("s2", BOB))
    a = await _post(owner, "lobby", "s1", ALICE, "hi", key="k")
    b = await _post(owner, "lobby", "s2", BOB, "hi", key="k")  # same key, other author
    c = await _post(owner, "lobby", "s1", ALICE, "hi", key="k2")
    d = await _post(owner, "lobby", "s1", ALICE, "hi")  # no key: never deduplicated
    e = await _post(owner, "lobby", "s1", ALICE, "hi")
    assert [r.seq for r in (a, b, c, d, e)] == [1, 2, 3, 4, 5]


async def test_retry_after_the_window_is_a_new_post(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    first = await _post(owner, "lobby", "s1", ALICE, "hello", key="env-1")
    env.clock.now += RETRY_WINDOW_MS / 1000 + 1
    later = await _post(owner, "lobby", "s1", ALICE, "hello", key="env-1")
    assert (first.seq, later.seq) == (1, 2)


async def test_retry_after_the_owner_restarts_is_stored_once(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    first = await _post(owner, "lobby", "s1", ALICE, "hello", key="env-1")
    await _post(owner, "lobby", "s1", ALICE, "other", key="env-2")

    reborn = env.owner()  # a restarted worker: dedup keys come back from the store
    env.clock.now += 60
    await reborn.join("lobby", _who("s9", ALICE))
    again = await _post(reborn, "lobby", "s9", ALICE, "hello", key="env-1")
    assert again == first
    fresh = await _post(reborn, "lobby", "s9", ALICE, "new")
    assert fresh.seq == 3  # the next seq also comes from the store
    assert await _stored(env.store, "lobby") == [(1, "hello"), (2, "other"), (3, "new")]


async def test_old_keys_are_not_loaded_after_a_restart(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("s1", ALICE))
    await _post(owner, "lobby", "s1", ALICE, "hello", key="env-1")
    env.clock.now += RETRY_WINDOW_MS / 1000 + 1
    reborn = env.owner()
    await reborn.join("lobby", _who("s1", ALICE))
    assert (await _post(reborn, "lobby", "s1", ALICE, "hello", key="env-1")).seq == 2


# -- history


def _spy(monkeypatch: pytest.MonkeyPatch, store: ChatStore) -> list[str]:
    """Records which history_* methods of the store were called."""
    calls: list[str] = []
    for name in ("history_last", "history_before", "history_after", "history_search"):
        real: Callable[..., Awaitable[list[MessageRecord]]] = getattr(store, name)

        def make(
            name: str, real: Callable[..., Awaitable[list[MessageRecord]]]
        ) -> Callable[..., Awaitable[list[MessageRecord]]]:
            async def spy(*args: object) -> list[MessageRecord]:
                calls.append(name)
                return await real(*args)

            return spy

        monkeypatch.setattr(store, name, make(name, real))
    return calls


def _seqs(messages: list[MessageRecord]) -> list[int]:
    return [m.seq for m in messages]


async def _fill(owner: RoomOwner, room: str, count: int, word: str = "msg") -> None:
    await owner.join(room, _who("filler", ALICE))
    for i in range(count):
        await _post(owner, room, "filler", ALICE, f"{word} {i + 1}")


async def test_history_of_a_new_room_comes_from_the_ring(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = env.owner()
    await _fill(owner, "lobby", 5)
    calls = _spy(monkeypatch, env.store)
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("last", 3))) == [3, 4, 5]
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("last", 50))) == [1, 2, 3, 4, 5]
    assert await owner.history("lobby", BOB, HistoryQuery("last", 0)) == []
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("after", 2, seq=2))) == [3, 4]
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("after", 9, seq=0))) == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert calls == []
    last = await owner.history("lobby", BOB, HistoryQuery("last", 1))
    assert last == [
        MessageRecord(room_id="lobby", seq=5, author=ALICE, ts_ms=int(T0 * 1000), text="msg 5")
    ]


async def test_history_before_and_search_come_from_the_store(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = env.owner()
    await _fill(owner, "lobby", 5)
    await _post(owner, "lobby", "filler", ALICE, "zebra crossing")
    calls = _spy(monkeypatch, env.store)
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("before", 2, seq=4))) == [2, 3]
    found = await owner.history("lobby", BOB, HistoryQuery("search", 10, text="zebra"))
    assert [m.text for m in found] == ["zebra crossing"]
    assert calls == ["history_before", "history_search"]


async def test_history_after_a_restart_uses_ring_only_when_it_covers_the_query(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(env.owner(), "lobby", 10)
    owner = env.owner(ring_size=3)  # a restart: the ring holds 8, 9, 10 only
    calls = _spy(monkeypatch, env.store)

    async def ask(query: HistoryQuery) -> tuple[list[int], list[str]]:
        calls.clear()
        seqs = _seqs(await owner.history("lobby", BOB, query))
        return seqs, list(calls)

    await owner.history("lobby", BOB, HistoryQuery("last", 0))  # loads the room
    assert await ask(HistoryQuery("last", 2)) == ([9, 10], [])
    assert await ask(HistoryQuery("last", 3)) == ([8, 9, 10], [])
    assert await ask(HistoryQuery("last", 5)) == ([6, 7, 8, 9, 10], ["history_last"])
    assert await ask(HistoryQuery("after", 5, seq=7)) == ([8, 9, 10], [])
    assert await ask(HistoryQuery("after", 1, seq=8)) == ([9], [])
    assert await ask(HistoryQuery("after", 3, seq=5)) == ([6, 7, 8], ["history_after"])


async def test_ring_picks_up_new_posts_after_a_restart(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(env.owner(), "lobby", 4)
    owner = env.owner(ring_size=3)
    await _fill(owner, "lobby", 2)  # seqs 5 and 6
    calls = _spy(monkeypatch, env.store)
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("last", 3))) == [4, 5, 6]
    assert calls == []
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("last", 6))) == [1, 2, 3, 4, 5, 6]
    assert calls == ["history_last"]


async def test_history_after_the_ring_overflows_still_returns_every_post(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new room's ring starts complete; once it drops its oldest post it no longer is."""
    owner = env.owner(ring_size=3)
    await _fill(owner, "lobby", 5)
    calls = _spy(monkeypatch, env.store)
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("last", 3))) == [3, 4, 5]
    assert calls == []
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("last", 5))) == [1, 2, 3, 4, 5]
    assert _seqs(await owner.history("lobby", BOB, HistoryQuery("after", 5, seq=0))) == [
        1,
        2,
        3,
        4,
        5,
    ]


@pytest.mark.parametrize(
    ("room", "user", "error"),
    [("closed", BOB, Forbidden), ("secret", BOB, NotFound), ("nosuch", BOB, NotFound)],
)
async def test_history_needs_read_permission(
    env: Env, room: str, user: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await env.owner().history(room, user, HistoryQuery("last", 10))


# -- refresh


async def test_refresh_kicks_sessions_that_lost_read_permission(env: Env) -> None:
    owner = env.owner()
    await owner.join("closed", _who("a1", ALICE))
    await owner.join("closed", _who("a2", ALICE))
    await owner.join("closed", _who("m", MANAGER))
    await _put_room(env.store, "closed", "closed", members=[BOB], managers=[MANAGER])
    env.sink.events.clear()
    await owner.refresh()
    # the kicked sessions leave; the others hear once that alice left
    assert env.sink.events == [
        KickEvent("closed", ["a1", "a2"]),
        PartEvent("closed", ALICE, "a2", 0, 1),
    ]
    assert owner.online_count("closed") == 1
    with pytest.raises(Forbidden):
        await owner.join("closed", _who("a3", ALICE))


async def test_refresh_without_changes_kicks_nobody(env: Env) -> None:
    owner = env.owner()
    await owner.join("closed", _who("a", ALICE))
    env.sink.events.clear()
    await owner.refresh()
    assert env.sink.events == []
    assert owner.online_count("closed") == 1


async def test_refresh_applies_the_category_wall(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("a", ALICE))
    await owner.join("lobby", _who("b", BOB))
    await env.store.put_category(
        CategoryRecord(id="general", name="General", denied=["domain:evil.example", BOB])
    )
    env.sink.events.clear()
    await owner.refresh()
    assert env.sink.events == [KickEvent("lobby", ["b"]), PartEvent("lobby", BOB, "b", 0, 1)]


async def test_refresh_of_a_disabled_room_kicks_everyone(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("a", ALICE))
    await owner.join("lobby", _who("b", BOB))
    await env.store.put_room(
        RoomRecord(id="lobby", name="Lobby", category_id="general", privacy="open", disabled=True)
    )
    env.sink.events.clear()
    await owner.refresh()
    assert env.sink.events == [
        KickEvent("lobby", ["a", "b"]),
        PartEvent("lobby", ALICE, "a", 0, 0),
        PartEvent("lobby", BOB, "b", 0, 0),
    ]
    assert owner.online_count("lobby") == 0
    with pytest.raises(NotFound):
        await owner.join("lobby", _who("a", ALICE))


async def test_refresh_of_a_deleted_room_kicks_everyone_and_forgets_it(env: Env) -> None:
    owner = env.owner()
    await owner.join("lobby", _who("a", ALICE))
    assert await env.store.delete_room("lobby")
    env.sink.events.clear()
    await owner.refresh()
    assert env.sink.events == [KickEvent("lobby", ["a"]), PartEvent("lobby", ALICE, "a", 0, 0)]
    assert owner.active_rooms == 0
    with pytest.raises(NotFound):
        await owner.join("lobby", _who("a", ALICE))


# -- under leases: fencing tokens on every write, stepping down, re-announcing


class Leases:
    """The keeper's ``token`` for a test: which shard a room is on, its epoch, or gone."""

    def __init__(self) -> None:
        self.epoch: int | None = 1

    def __call__(self, room_id: str) -> tuple[int, int]:
        if self.epoch is None:
            raise Overloaded("not served here")
        return 7, self.epoch


def fenced_owner(env: Env, leases: Leases) -> RoomOwner:
    return RoomOwner(
        env.store, env.committer, env.sink, OwnerSettings(), clock=env.clock, fence=leases
    )


async def test_posts_carry_the_rooms_token_and_a_stale_one_is_refused(env: Env) -> None:
    await env.store.claim_shards([7])  # epoch 1 is current
    owner = fenced_owner(env, Leases())
    await owner.join("lobby", _who("s1", ALICE))
    assert (await owner.append_post("lobby", "s1", ALICE, "k1", "one")).seq == 1
    await env.store.claim_shards([7])  # another worker took shard 7 over: epoch 2
    with pytest.raises(Overloaded):  # the commit is refused: the client retries
        await owner.append_post("lobby", "s1", ALICE, "k2", "two")
    assert [m.text for m in await env.store.history_last("lobby", 5)] == ["one"]


async def test_a_fenced_write_names_its_stale_tokens(env: Env) -> None:
    await env.store.claim_shards([7, 8])
    await env.store.claim_shards([7])
    stale: list[list[tuple[int, int]]] = []
    write = FencedWrite(env.store.append_messages, stale.append)
    posts = [
        NewMessage(room_id="lobby", seq=1, author=ALICE, ts_ms=1, text="a", shard=7, epoch=1),
        NewMessage(room_id="lobby", seq=2, author=ALICE, ts_ms=2, text="b", shard=8, epoch=1),
    ]
    with pytest.raises(Fenced):
        await write(posts)
    assert stale == [[(7, 1)]]  # shard 8's token is still good: its owner stays


async def test_rooms_of_a_lost_shard_are_dropped_and_not_served(env: Env) -> None:
    leases = Leases()
    await env.store.claim_shards([7])
    owner = fenced_owner(env, leases)
    await owner.join("lobby", _who("s1", ALICE))
    owner.drop_shards({7})
    assert owner.online_count("lobby") == 0
    leases.epoch = None  # the lease is gone: loading the room again is refused
    with pytest.raises(Overloaded):
        await owner.join("lobby", _who("s1", ALICE))


async def test_after_a_takeover_unknown_sessions_get_503_then_403(env: Env) -> None:
    await env.store.claim_shards([7])
    owner = fenced_owner(env, Leases())
    await owner.join("lobby", _who("s1", ALICE))  # loads the room
    with pytest.raises(Overloaded):  # s2's gateway has not re-announced it yet
        await owner.append_post("lobby", "s2", ALICE, "", "hi")
    env.clock.now += ROOM_GRACE_S
    with pytest.raises(Forbidden):
        await owner.append_post("lobby", "s2", ALICE, "", "hi")


async def test_a_dropped_gateways_sessions_get_503_until_the_grace_ends(env: Env) -> None:
    owner = env.owner(gateway_grace_s=11.5)
    await owner.join("lobby", _who("4.1", ALICE, gateway=4))
    await owner.join("lobby", _who("5.1", BOB, gateway=5))
    owner.drop_gateway(4)  # gateway 4 came back onto the bus: it re-announces 4.1 soon
    with pytest.raises(Overloaded):
        await owner.append_post("lobby", "4.1", ALICE, "", "hi")
    assert (await owner.append_post("lobby", "5.1", BOB, "", "still in")).seq == 1
    with pytest.raises(Forbidden):  # gateway 5 was not dropped: 5.2 never joined
        await owner.append_post("lobby", "5.2", BOB, "", "hi")
    env.clock.now += 11.4
    with pytest.raises(Overloaded):
        await owner.append_post("lobby", "4.1", ALICE, "", "hi")
    env.clock.now += 0.2  # past the grace: not re-announced means not in
    with pytest.raises(Forbidden):
        await owner.append_post("lobby", "4.1", ALICE, "", "hi")
    owner.drop_gateway(4)
    await owner.join("lobby", _who("4.1", ALICE, gateway=4), quiet=True)  # the re-join
    assert (await owner.append_post("lobby", "4.1", ALICE, "", "back")).seq == 2


async def test_without_a_gateway_grace_a_dropped_gateways_post_is_403(env: Env) -> None:
    owner = env.owner()  # one host: a dropped gateway is a restarted worker
    await owner.join("lobby", _who("4.1", ALICE, gateway=4))
    owner.drop_gateway(4)
    with pytest.raises(Forbidden):
        await owner.append_post("lobby", "4.1", ALICE, "", "hi")


def test_the_grace_remembers_a_bounded_number_of_gateways() -> None:
    clock = Clock()
    grace = RejoinGrace(clock, gateway_grace_s=10.0)
    for gateway in range(MAX_DROPPED_GATEWAYS + 1):
        grace.gateway_dropped(gateway)
    assert isinstance(grace.non_member("0.1", loaded_s=0.0, leased=False), Forbidden)
    assert isinstance(grace.non_member("1.1", loaded_s=0.0, leased=False), Overloaded)
    assert isinstance(grace.non_member("files", loaded_s=0.0, leased=False), Forbidden)
    assert len(grace._dropped) == MAX_DROPPED_GATEWAYS
    clock.now += 10.1
    grace.gateway_dropped(5000)  # expired drops go as soon as another comes
    assert list(grace._dropped) == [5000]
