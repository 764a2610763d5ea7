"""ChatStore contract on both backends (real SQLite file, real PostgreSQL database)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.errors import Conflict, NotFound, StoreError, StoreMissing
from core.store.base import (
    CategoryRecord,
    ChatStore,
    FileRecord,
    InvitationRecord,
    MessageRecord,
    NewMessage,
    OutboxEvent,
    RoomRecord,
    UserRecord,
)
from core.store.registry import make_store, sqlite_path
from core.store.sqlite_db import fts_query
from core.store.sqlite_schema import SCHEMA_VERSION
from tests.integration.conftest import RawQuery

ROOT = Path(__file__).resolve().parents[2]


def category(cid: str = "cat", name: str = "Main", **fields: Any) -> CategoryRecord:
    return CategoryRecord(id=cid, name=name, **fields)


def room(rid: str, name: str, **fields: Any) -> RoomRecord:
    return RoomRecord(id=rid, name=name, category_id="cat", **fields)


def post(
    seq: int,
    text: str = "",
    room_id: str = "r1",
    *,
    author: str = "sip:a@x",
    ts_ms: int | None = None,
    client_key: str = "",
) -> NewMessage:
    return NewMessage(
        room_id=room_id,
        seq=seq,
        author=author,
        ts_ms=1000 + seq if ts_ms is None else ts_ms,
        text=text or f"post {seq}",
        client_key=client_key,
    )


def seqs(records: list[MessageRecord]) -> list[int]:
    return [r.seq for r in records]


async def with_rooms(store: ChatStore, *rooms: RoomRecord) -> None:
    await store.put_category(category())
    for r in rooms:
        await store.put_room(r)


# -- lifecycle and registry


async def test_open_twice_and_reopen_keep_data(store: ChatStore, store_url: str) -> None:
    await with_rooms(store, room("r1", "Lobby"))
    await store.append_messages([post(1, "kept")])
    await store.bump_revision()
    await store.open()  # a second open on the same instance is a no-op
    await store.close()

    again = make_store(store_url)
    await again.open()
    try:
        assert [m.text for m in await again.history_last("r1", 10)] == ["kept"]
        assert (await again.get_room("r1")) is not None
        assert await again.revision() == 1
        assert await again.history_search("r1", "kept", 5) != []
    finally:
        await again.close()
    await store.open()  # the fixture's store works again after being reopened
    assert await store.max_seq("r1") == 1


async def test_calls_on_unopened_or_closed_store_raise_store_error(store_url: str) -> None:
    unopened = make_store(store_url)
    with pytest.raises(StoreError):
        await unopened.revision()
    await unopened.open()
    await unopened.close()
    await unopened.close()  # closing twice is harmless
    with pytest.raises(StoreError):
        await unopened.max_seq("r1")


async def test_newer_schema_is_refused(
    store: ChatStore, store_url: str, raw_query: RawQuery
) -> None:
    await store.close()
    await raw_query("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    newer = make_store(store_url)
    with pytest.raises(StoreError, match="newer"):
        await newer.open()
    await raw_query(f"UPDATE meta SET value = {SCHEMA_VERSION} WHERE key = 'schema_version'")
    await store.open()


async def test_version_1_store_gains_the_file_columns(
    store: ChatStore, store_url: str, raw_query: RawQuery
) -> None:
    """Migration 1 -> 2 (and on to the newest) on both backends: a room's upload switch
    and a file's post."""
    await with_rooms(store, room("r1", "Lobby"))
    await store.close()
    for sql in (
        "ALTER TABLE rooms DROP COLUMN file_upload",
        "ALTER TABLE files DROP COLUMN post_seq",
        "UPDATE meta SET value = 1 WHERE key = 'schema_version'",
    ):
        await raw_query(sql)
    await store.open()
    got = await store.get_room("r1")
    assert got is not None and got.file_upload == "inherit"
    await store.put_room(msgspec.structs.replace(got, file_upload="off"))
    assert (await store.get_room("r1")) == msgspec.structs.replace(got, file_upload="off")
    assert await raw_query("SELECT value FROM meta WHERE key = 'schema_version'") == [
        (SCHEMA_VERSION,)
    ]


def test_registry_picks_backend_by_scheme() -> None:
    assert type(make_store("sqlite:///abs/chat.db")).__name__ == "SqliteStore"
    assert type(make_store("postgresql://u@h/db")).__name__ == "PostgresStore"
    assert type(make_store("postgres://u@h/db")).__name__ == "PostgresStore"
    assert sqlite_path("sqlite:///abs/path/chat.db") == "/abs/path/chat.db"
    assert sqlite_path("sqlite:relative/path.db") == "relative/path.db"
    for bad in ("sqlite://host/chat.db", "sqlite:", "sqlite:///"):
        with pytest.raises(ValueError):
            make_store(bad)


def test_registry_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        make_store("mysql://root:secret@h/db")
    message = str(info.value)
    assert "sqlite:" in message and "postgresql:" in message
    assert "secret" not in message
    with pytest.raises(ValueError):
        make_store("/no/scheme/chat.db")


def test_registry_imports_asyncpg_only_for_postgres() -> None:
    code = (
        "import sys; from core.store.registry import make_store;"
        "make_store('sqlite:x.db'); assert 'asyncpg' not in sys.modules, 'sqlite loaded it';"
        "make_store('postgresql://u@h/db'); assert 'asyncpg' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=30)


# -- change tracking


async def test_revision_counts_bumps_across_two_instances(store: ChatStore, store_url: str) -> None:
    assert await store.revision() == 0
    other = make_store(store_url)
    await other.open()
    try:
        assert await store.bump_revision() == 1
        assert await other.revision() == 1
        got = await asyncio.gather(*(s.bump_revision() for s in (store, other) * 10))
        assert sorted(got) == list(range(2, 22))  # atomic: no bump lost or repeated
        assert await store.revision() == await other.revision() == 21
    finally:
        await other.close()


async def test_sqlite_revision_bumped_by_another_process(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'chat.db'}"
    server = make_store(url)
    await server.open()
    try:
        await server.put_category(category())
        admin = textwrap.dedent(f"""
            import asyncio
            from core.store.base import RoomRecord
            from core.store.registry import make_store
            async def main():
                s = make_store({url!r})
                await s.open()
                await s.put_room(RoomRecord(id="r9", name="From admin", category_id="cat"))
                for _ in range(3):
                    await s.bump_revision()
                await s.close()
            asyncio.run(main())
        """)
        write = asyncio.create_task(server.append_messages([post(i) for i in range(1, 201)]))
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", admin, cwd=ROOT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await write
        assert await server.revision() == 3
        assert (await server.get_room("r9")) is not None
        assert await server.max_seq("r1") == 200
    finally:
        await server.close()


# -- users


async def test_users_put_get_replace_list(store: ChatStore) -> None:
    assert await store.get_user("sip:b@x") is None
    bob = UserRecord(uri="sip:b@x", display_name="Bob", ha1={"MD5:bob": "ab" * 16}, enabled=True)
    await store.put_user(bob)
    await store.put_user(UserRecord(uri="sip:a@x", admin=True))
    assert await store.get_user("sip:b@x") == bob
    await store.put_user(UserRecord(uri="sip:b@x", display_name="Robert"))
    assert await store.get_user("sip:b@x") == UserRecord(uri="sip:b@x", display_name="Robert")
    assert [u.uri for u in await store.list_users()] == ["sip:a@x", "sip:b@x"]
    assert (await store.list_users())[0].admin is True
    assert await store.delete_user("sip:b@x") is True
    assert await store.delete_user("sip:b@x") is False
    assert [u.uri for u in await store.list_users()] == ["sip:a@x"]


async def test_put_users_one_batch_keeps_or_replaces_existing(store: ChatStore) -> None:
    await store.put_user(UserRecord(uri="sip:a@x", display_name="Old", enabled=True))
    batch = [
        UserRecord(uri="sip:a@x", display_name="New"),
        UserRecord(uri="sip:b@x", ha1={"MD5:b@x": "cd" * 16}, enabled=True, admin=True),
    ]
    assert await store.put_users(batch, replace=False) == 1  # a@x kept as it was
    assert await store.get_user("sip:a@x") == UserRecord(
        uri="sip:a@x", display_name="Old", enabled=True
    )
    assert await store.get_user("sip:b@x") == batch[1]
    assert await store.put_users(batch, replace=True) == 2
    assert await store.get_user("sip:a@x") == batch[0]
    assert await store.put_users([], replace=True) == 0


async def test_set_admin_grants_and_revokes_only_that_role(store: ChatStore) -> None:
    bob = UserRecord(uri="sip:b@x", display_name="Bob", ha1={"MD5:b": "ab" * 16}, enabled=True)
    await store.put_user(bob)
    assert await store.set_admin("sip:b@x", True) is True
    granted = await store.get_user("sip:b@x")
    assert granted is not None and granted.admin and granted.ha1 == bob.ha1 and granted.enabled
    assert await store.set_admin("sip:b@x", False) is True
    assert await store.get_user("sip:b@x") == bob
    assert await store.set_admin("sip:ghost@x", True) is False


async def test_the_first_domain_claimed_stays_the_stores(store: ChatStore, store_url: str) -> None:
    assert await store.claim_domain("example.com") == "example.com"
    assert await store.claim_domain("example.org") == "example.com"
    await store.close()
    again = make_store(store_url)
    await again.open(create=False)
    try:
        assert await again.claim_domain("example.org") == "example.com"
        assert await again.claim_domain("example.org", record=False) == "example.com"
    finally:
        await again.close()
    await store.open()


async def test_an_unrecorded_domain_is_recorded_only_when_asked(store: ChatStore) -> None:
    assert await store.claim_domain("example.org", record=False) == ""
    assert await store.claim_domain("example.net", record=False) == ""
    assert await store.claim_domain("example.com") == "example.com"


async def test_open_without_create_refuses_a_store_that_does_not_exist(
    store_url: str, tmp_path: Path
) -> None:
    missing = make_store(store_url)
    with pytest.raises(StoreMissing):
        await missing.open(create=False)
    if store_url.startswith("sqlite:"):
        assert not Path(sqlite_path(store_url)).exists()  # nothing was created
    created = make_store(store_url)
    await created.open()
    await created.close()
    await missing.open(create=False)  # once created it opens
    await missing.close()


# -- categories


async def test_categories_roundtrip_with_sorted_principals(store: ChatStore) -> None:
    cat = category(
        description="d",
        allowed=["sip:z@x", "domain:x", "sip:a@x"],
        denied=["sip:d@x"],
        creators=["sip:c@x"],
        invitations=False,
        file_upload=False,
        history=False,
    )
    await store.put_category(cat)
    got = await store.get_category("cat")
    assert got is not None
    assert got.allowed == ["domain:x", "sip:a@x", "sip:z@x"]
    assert (got.denied, got.creators) == (["sip:d@x"], ["sip:c@x"])
    assert (got.invitations, got.file_upload, got.history, got.description) == (
        False,
        False,
        False,
        "d",
    )
    assert await store.get_category("nope") is None


async def test_put_category_replaces_principals_wholesale(store: ChatStore) -> None:
    await store.put_category(category(allowed=["sip:a@x"], creators=["sip:c@x"]))
    await store.put_category(category(name="Renamed", allowed=["sip:b@x"]))
    got = await store.get_category("cat")
    assert got == category(name="Renamed", allowed=["sip:b@x"])


async def test_category_by_name_is_case_insensitive_and_listed_by_name(store: ChatStore) -> None:
    await store.put_category(category("c2", "beta"))
    await store.put_category(category("c1", "Alpha"))
    found = await store.get_category_by_name("ALPHA")
    assert found is not None and found.id == "c1"
    assert await store.get_category_by_name("gamma") is None
    assert [c.id for c in await store.list_categories()] == ["c1", "c2"]


async def test_delete_category_refused_while_rooms_use_it(store: ChatStore) -> None:
    await with_rooms(store, room("r1", "Lobby"))
    assert await store.delete_category("cat") is False
    assert await store.get_category("cat") is not None
    await store.delete_room("r1")
    assert await store.delete_category("cat") is True
    assert await store.get_category("cat") is None
    assert await store.delete_category("cat") is False


# -- rooms


async def test_room_roundtrip_every_field(store: ChatStore) -> None:
    r = room(
        "r1",
        "Lobby",
        description="the hall",
        topic="hi",
        privacy="secret",
        type="auditorium",
        invitations="off",
        disabled=True,
        members=["sip:m2@x", "domain:x", "sip:m1@x"],
        managers=["sip:boss@x"],
        presenters=["sip:p@x"],
        created_by="sip:boss@x",
        created_ms=1234567890123,
    )
    await with_rooms(store, r)
    got = await store.get_room("r1")
    assert got is not None
    assert got.members == ["domain:x", "sip:m1@x", "sip:m2@x"]
    got.members = r.members
    assert got == r
    assert await store.get_room("nope") is None


async def test_put_room_replaces_role_lists_wholesale(store: ChatStore) -> None:
    await with_rooms(store, room("r1", "Lobby", members=["sip:a@x"], managers=["sip:m@x"]))
    await store.put_room(room("r1", "Lobby", presenters=["sip:p@x"]))
    assert await store.get_room("r1") == room("r1", "Lobby", presenters=["sip:p@x"])


async def test_room_name_conflict_is_case_insensitive(store: ChatStore) -> None:
    await with_rooms(store, room("r1", "Lobby"), room("r2", "Straße"))
    with pytest.raises(Conflict):
        await store.put_room(room("r3", "LOBBY"))
    with pytest.raises(Conflict):
        await store.put_room(room("r3", "STRASSE"))  # casefold, not only ASCII
    with pytest.raises(Conflict):
        await store.put_room(room("r2", "lobby", topic="stolen"))
    assert (await store.get_room("r2")) == room("r2", "Straße")
    assert await store.get_room("r3") is None
    await store.put_room(room("r1", "LOBBY"))  # the same room may change its case
    by_name = await store.get_room_by_name("lobby")
    assert by_name is not None and (by_name.id, by_name.name) == ("r1", "LOBBY")
    assert await store.get_room_by_name("Lobby2") is None


async def test_put_room_needs_its_category(store: ChatStore) -> None:
    with pytest.raises(NotFound):
        await store.put_room(room("r1", "Lobby"))
    assert await store.list_rooms() == []


async def test_list_rooms_by_name(store: ChatStore) -> None:
    await with_rooms(store, room("r1", "charlie"), room("r2", "Alpha"), room("r3", "bravo"))
    assert [r.id for r in await store.list_rooms()] == ["r2", "r3", "r1"]


async def test_search_rooms_substring_case_insensitive_by_name(store: ChatStore) -> None:
    await with_rooms(
        store,
        room("r1", "Zeta Sales"),
        room("r2", "alpha", description="SALES team"),
        room("r3", "Beta", description="engineering"),
        room("r4", "100% sales_q"),
    )
    found = await store.search_rooms("sAlEs", 10)
    assert [r.id for r in found] == ["r4", "r2", "r1"]
    assert [r.id for r in await store.search_rooms("sales", 2)] == ["r4", "r2"]
    assert [r.id for r in await store.search_rooms("0% s", 10)] == ["r4"]  # % is literal
    assert await store.search_rooms("_", 10) == [await store.get_room("r4")]
    assert await store.search_rooms("nothing", 10) == []
    assert await store.search_rooms("sales", 0) == []


async def test_rooms_with_principal_any_of_them_in_role(store: ChatStore) -> None:
    await with_rooms(
        store,
        room("r1", "b", members=["sip:a@x", "domain:x"]),
        room("r2", "a", members=["domain:x"], managers=["sip:a@x"]),
        room("r3", "c", managers=["sip:a@x"]),
    )
    found = await store.rooms_with_principal(["sip:a@x", "domain:x"], "member")
    assert [r.id for r in found] == ["r2", "r1"]  # by name, each room once
    assert found[1].members == ["domain:x", "sip:a@x"]
    managed = await store.rooms_with_principal(["sip:a@x"], "manager")
    assert [r.id for r in managed] == ["r2", "r3"]
    assert await store.rooms_with_principal(["sip:a@x"], "presenter") == []
    assert await store.rooms_with_principal([], "member") == []


async def test_delete_room_cascades(store: ChatStore, raw_query: RawQuery) -> None:
    await with_rooms(store, room("r1", "Lobby", members=["sip:a@x"]), room("r2", "Other"))
    await store.append_messages([post(1, "doomed words"), post(1, "doomed too", room_id="r2")])
    await store.follow("sip:a@x", "r1")
    await store.follow("sip:a@x", "r2")
    inv = InvitationRecord(id=0, room_id="r1", invitee="sip:b@x", inviter="sip:a@x", ts_ms=1)
    await store.add_invitations([inv])

    assert await store.delete_room("r1") is True
    assert await store.get_room("r1") is None
    assert await store.history_last("r1", 10) == []
    assert await store.max_seq("r1") == 0
    assert await store.history_search("r1", "doomed", 10) == []
    assert await store.rooms_with_principal(["sip:a@x"], "member") == []
    assert await store.followed("sip:a@x") == ["r2"]
    assert await store.pending_invitations("sip:b@x") == []
    assert await raw_query("SELECT count(*) FROM room_principals") == [(0,)]
    assert await store.delete_room("r1") is False
    # the other room is untouched and the name is free again
    assert [m.text for m in await store.history_search("r2", "doomed", 10)] == ["doomed too"]
    await store.put_room(room("r3", "lobby"))


async def test_delete_room_removes_sqlite_fts_rows(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite://{tmp_path / 'chat.db'}"
    s = make_store(url)
    await s.open()
    try:
        await with_rooms(s, room("r1", "Lobby"))
        await s.append_messages([post(i, f"needle {i}") for i in range(1, 6)])
        await s.delete_message("r1", 1)
        await s.delete_room("r1")
    finally:
        await s.close()
    conn = sqlite3.connect(sqlite_path(url))
    try:
        # external content: stale index entries would still match here
        hits = conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'needle'")
        assert hits.fetchall() == []
        conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    finally:
        conn.close()


# -- messages


async def test_history_windows(store: ChatStore) -> None:
    assert await store.max_seq("r1") == 0
    assert await store.history_last("r1", 5) == []
    await store.append_messages([post(i) for i in range(1, 11)])
    await store.append_messages([post(1, room_id="r2")])
    assert await store.max_seq("r1") == 10
    assert seqs(await store.history_last("r1", 3)) == [8, 9, 10]
    assert seqs(await store.history_last("r1", 50)) == list(range(1, 11))
    assert seqs(await store.history_before("r1", 5, 3)) == [2, 3, 4]
    assert seqs(await store.history_before("r1", 3, 10)) == [1, 2]
    assert seqs(await store.history_after("r1", 5, 3)) == [6, 7, 8]
    assert seqs(await store.history_after("r1", 9, 10)) == [10]
    assert await store.history_after("r1", 10, 10) == []
    assert await store.history_before("r1", 1, 10) == []
    for empty in (
        store.history_last("r1", 0),
        store.history_before("r1", 5, -1),
        store.history_after("r1", 0, 0),
    ):
        assert await empty == []
    [first] = await store.history_after("r1", 0, 1)
    assert (first.room_id, first.seq, first.author, first.ts_ms, first.text) == (
        "r1",
        1,
        "sip:a@x",
        1001,
        "post 1",
    )


async def test_append_messages_is_atomic(store: ChatStore) -> None:
    await store.append_messages([post(1), post(2)])
    with pytest.raises(Conflict):  # clashes with a stored row
        await store.append_messages([post(3), post(4, room_id="r2"), post(2, "again")])
    with pytest.raises(Conflict):  # clashes within the batch
        await store.append_messages([post(5), post(5, "twin")])
    assert seqs(await store.history_last("r1", 10)) == [1, 2]
    assert (await store.history_last("r1", 10))[1].text == "post 2"
    assert await store.max_seq("r2") == 0
    assert await store.history_search("r1", "twin", 10) == []
    await store.append_messages([post(3)])  # the store is still usable afterwards
    assert await store.max_seq("r1") == 3


async def test_append_messages_many_rooms_and_concurrent_batches(store: ChatStore) -> None:
    await store.append_messages([])
    batches = [[post(b * 100 + i, room_id=f"r{i % 3}") for i in range(100)] for b in range(8)]
    await asyncio.gather(*(store.append_messages(b) for b in batches))
    assert [await store.max_seq(f"r{i}") for i in range(3)] == [799, 797, 798]
    assert len(await store.history_last("r0", 1000)) == 8 * 34


async def test_recent_client_keys(store: ChatStore) -> None:
    await store.append_messages(
        [
            post(1, ts_ms=100, client_key="old"),
            post(2, ts_ms=200, client_key="k2"),
            post(3, ts_ms=300),
            post(4, ts_ms=400, client_key="k4", author="sip:b@x"),
            post(1, ts_ms=500, client_key="elsewhere", room_id="r2"),
        ]
    )
    keys = await store.recent_client_keys("r1", 200)
    assert [(k.author, k.client_key, k.seq, k.ts_ms) for k in keys] == [
        ("sip:a@x", "k2", 2, 200),
        ("sip:b@x", "k4", 4, 400),
    ]
    assert await store.recent_client_keys("r1", 401) == []


async def test_history_search_newest_matches_oldest_first(store: ChatStore) -> None:
    texts = ["Deploy the Widget", "lunch?", "widget deployed", "WIDGET again", "widgets"]
    await store.append_messages([post(i, t) for i, t in enumerate(texts, 1)])
    await store.append_messages([post(1, "widget elsewhere", room_id="r2")])
    assert seqs(await store.history_search("r1", "widget", 10)) == [1, 3, 4]
    assert seqs(await store.history_search("r1", "Widget", 2)) == [3, 4]
    assert seqs(await store.history_search("r1", "deploy widget", 10)) == [1]  # every word
    assert seqs(await store.history_search("r1", "widget   the", 10)) == [1]
    assert await store.history_search("r1", "nothing", 10) == []
    assert await store.history_search("r1", "widget", 0) == []
    assert await store.delete_message("r1", 4) is True
    assert await store.delete_message("r1", 4) is False
    assert seqs(await store.history_search("r1", "widget", 10)) == [1, 3]
    assert seqs(await store.history_last("r1", 10)) == [1, 2, 3, 5]


# Each hostile query, and what it finds among HOSTILE_POSTS: FTS syntax is never
# obeyed, each word must simply occur (as with plainto_tsquery).
HOSTILE_POSTS = ("widget", "a AND( b * c", "lunch")
HOSTILE_QUERIES = [
    ('"', []),
    ('""', []),
    ("AND(", [2]),
    ("*", []),
    ("widget*", [1]),
    ("^widget", [1]),
    ('"widget', [1]),
    ("NEAR(a b", []),
    ("a AND", [2]),
    ("OR", []),
    ("widget OR lunch", []),
    ("NOT widget", []),
    ("(", []),
    (")", []),
    ("-", []),
    ("'; DROP TABLE messages; --", []),
    ("\\", []),
    ("%", []),
    ("_", []),
]


@pytest.mark.parametrize(("hostile", "expected"), HOSTILE_QUERIES)
async def test_history_search_survives_hostile_text(
    store: ChatStore, hostile: str, expected: list[int]
) -> None:
    await store.append_messages([post(i, t) for i, t in enumerate(HOSTILE_POSTS, 1)])
    assert seqs(await store.history_search("r1", hostile, 10)) == expected
    assert await store.max_seq("r1") == 3


async def test_history_search_matches_operator_words_literally(store: ChatStore) -> None:
    await store.append_messages([post(1, "widget"), post(2, "a AND( b * c"), post(3, "not this")])
    assert seqs(await store.history_search("r1", "AND(", 10)) == [2]
    assert seqs(await store.history_search("r1", '"widget', 10)) == [1]
    assert seqs(await store.history_search("r1", "NOT this", 10)) == [3]
    assert await store.history_search("r1", "*", 10) == []
    assert await store.history_search("r1", "widget OR lunch", 10) == []  # AND of the words


def test_fts_query_quotes_every_word() -> None:
    assert fts_query('say "hi" AND(') == '"say" """hi""" "AND("'
    assert fts_query('* " ( )') is None
    assert fts_query("   ") is None


# -- invitations


async def test_invitations(store: ChatStore) -> None:
    assert await store.add_invitations([]) == []
    new = [
        InvitationRecord(id=0, room_id=r, invitee=who, inviter="sip:a@x", ts_ms=5)
        for r, who in (("r1", "sip:b@x"), ("r2", "sip:b@x"), ("r1", "sip:c@x"))
    ]
    stored = await store.add_invitations(new)
    ids = [i.id for i in stored]
    assert len(set(ids)) == 3 and ids == sorted(ids) and 0 not in ids
    assert [(i.room_id, i.invitee) for i in stored] == [(i.room_id, i.invitee) for i in new]
    assert await store.pending_invitations("sip:b@x") == stored[:2]
    await store.mark_invitations_delivered([ids[0]])
    await store.mark_invitations_delivered([])
    assert await store.pending_invitations("sip:b@x") == [stored[1]]
    assert await store.pending_invitations("sip:c@x") == [stored[2]]
    [later] = await store.add_invitations(new[:1])
    assert later.id > ids[-1]


# -- followed rooms


async def test_follow_unfollow(store: ChatStore) -> None:
    await store.follow("sip:a@x", "r2")
    await store.follow("sip:a@x", "r1")
    await store.follow("sip:a@x", "r1")  # idempotent
    await store.follow("sip:b@x", "r3")
    assert await store.followed("sip:a@x") == ["r1", "r2"]
    await store.unfollow("sip:a@x", "r2")
    await store.unfollow("sip:a@x", "r9")
    assert await store.followed("sip:a@x") == ["r1"]
    assert await store.followed("sip:b@x") == ["r3"]
    assert await store.followed("sip:nobody@x") == []


async def test_followed_rooms_are_read_whole_in_one_call(store: ChatStore) -> None:
    await store.put_category(category())
    await store.put_room(room("r1", "Zeta", members=["sip:a@x"], managers=["sip:m@x"]))
    await store.put_room(room("r2", "Alpha"))
    await store.put_room(room("r3", "Unfollowed"))
    for rid in ("r1", "r2", "gone"):  # a follow can outlive its room
        await store.follow("sip:a@x", rid)
    found = await store.followed_rooms("sip:a@x")
    assert [r.id for r in found] == ["r2", "r1"]  # by name, as every room list
    assert found[1] == await store.get_room("r1")  # principals included
    assert found[1].members == ["sip:a@x"] and found[1].managers == ["sip:m@x"]
    assert await store.followed_rooms("sip:nobody@x") == []


# -- preferences


async def test_pref_optimistic_concurrency(store: ChatStore) -> None:
    assert await store.get_pref("sip:a@x", "layout") is None
    blob = bytes(range(256))
    first = await store.set_pref("sip:a@x", "layout", 0, blob)
    assert first is not None and (first.seqid, first.content) == (1, blob)
    assert await store.set_pref("sip:a@x", "layout", 0, b"racer") is None  # label exists
    second = await store.set_pref("sip:a@x", "layout", 1, b"v2")
    assert second is not None and second.seqid == 2
    assert await store.set_pref("sip:a@x", "layout", 1, b"stale") is None
    assert await store.set_pref("sip:a@x", "layout", 7, b"future") is None
    assert await store.set_pref("sip:a@x", "other", 3, b"no such label") is None
    got = await store.get_pref("sip:a@x", "layout")
    assert got is not None and (got.user, got.label, got.seqid, got.content) == (
        "sip:a@x",
        "layout",
        2,
        b"v2",
    )
    assert await store.get_pref("sip:a@x", "other") is None
    assert await store.get_pref("sip:b@x", "layout") is None


async def test_pref_racing_writers_one_wins(store: ChatStore) -> None:
    await store.set_pref("sip:a@x", "p", 0, b"v1")
    results = await asyncio.gather(
        *(store.set_pref("sip:a@x", "p", 1, b"%d" % i) for i in range(6))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].seqid == 2
    got = await store.get_pref("sip:a@x", "p")
    assert got is not None and got.content == winners[0].content


async def test_invitations_after_follows_new_undelivered_ones(store: ChatStore) -> None:
    await store.put_category(CategoryRecord(id="c", name="C"))
    await store.put_room(RoomRecord(id="r", name="R", category_id="c"))
    made = await store.add_invitations(
        [
            InvitationRecord(id=0, room_id="r", invitee=f"sip:u{i}@d", inviter="sip:m@d", ts_ms=i)
            for i in range(4)
        ]
    )
    ids = [inv.id for inv in made]
    assert [i.id for i in await store.invitations_after(0, 10)] == ids
    assert [i.id for i in await store.invitations_after(ids[1], 10)] == ids[2:]
    assert [i.id for i in await store.invitations_after(0, 2)] == ids[:2]
    await store.mark_invitations_delivered([ids[2]])
    assert [i.id for i in await store.invitations_after(ids[1], 10)] == [ids[3]]


async def test_a_post_and_its_outbox_row_are_one_transaction(store: ChatStore) -> None:
    await store.put_category(CategoryRecord(id="c", name="C"))
    await store.put_room(RoomRecord(id="r", name="R", category_id="c"))
    post = NewMessage(room_id="r", seq=1, author="sip:a@d", ts_ms=5, text="hi")
    chat = OutboxEvent(kind="CHAT", payload='{"msgid":1}', ts_ms=5)
    await store.append_messages([post], [chat])
    assert [(r.kind, r.payload) for r in await store.outbox_head(10)] == [("CHAT", '{"msgid":1}')]
    again = NewMessage(room_id="r", seq=1, author="sip:a@d", ts_ms=6, text="dup")
    with pytest.raises(Conflict):  # the message fails: its outbox row is not kept either
        await store.append_messages([again], [OutboxEvent(kind="CHAT", payload="{}", ts_ms=6)])
    assert len(await store.outbox_head(10)) == 1


async def test_outbox_queue_operations(store: ChatStore) -> None:
    assert await store.outbox_stats() == (0, 0)
    await store.add_outbox(
        [OutboxEvent(kind="JOIN", payload=str(i), ts_ms=100 + i) for i in range(5)]
    )
    head = await store.outbox_head(3)
    assert [r.payload for r in head] == ["0", "1", "2"]
    assert await store.outbox_stats() == (5, 100)
    await store.delete_outbox([r.id for r in head])
    assert [r.payload for r in await store.outbox_head(10)] == ["3", "4"]
    assert await store.outbox_stats() == (2, 103)


# -- files


async def test_file_record_roundtrip_with_its_outbox_rows(store: ChatStore) -> None:
    record = FileRecord(
        id="f" * 24,
        room_id="r1",
        name="plan – v2.pdf",
        size=3 * 2**31,  # past 32 bits: the columns are 64-bit
        sha256="ab" * 32,
        uploader="sip:a@x",
        ts_ms=1234,
    )
    event = OutboxEvent(kind="FILEUPLOAD", payload='{"text":"plan – v2.pdf"}', ts_ms=1234)
    await store.add_file(record, [event])
    assert await store.get_file(record.id) == record
    assert await store.get_file("g" * 24) is None
    assert [(r.kind, r.payload) for r in await store.outbox_head(10)] == [
        ("FILEUPLOAD", event.payload)
    ]


async def test_add_file_with_a_taken_id_stores_nothing(store: ChatStore) -> None:
    record = FileRecord(
        id="x" * 24, room_id="r1", name="a", size=1, sha256="0" * 64, uploader="u", ts_ms=1
    )
    await store.add_file(record, [])
    event = OutboxEvent(kind="FILEUPLOAD", payload="{}", ts_ms=1)
    with pytest.raises(Exception):  # noqa: B017, PT011 - each driver's integrity error
        await store.add_file(msgspec.structs.replace(record, name="b"), [event])
    assert (await store.get_file(record.id)) == record
    assert await store.outbox_head(10) == []


async def test_delete_room_deletes_its_file_records(store: ChatStore) -> None:
    await with_rooms(store, room("r1", "Lobby"), room("r2", "Other"))
    for fid, rid in (("a" * 24, "r1"), ("b" * 24, "r2")):
        record = FileRecord(
            id=fid, room_id=rid, name="n", size=1, sha256="0" * 64, uploader="u", ts_ms=1
        )
        await store.add_file(record, [])
    assert await store.delete_room("r1")
    assert await store.get_file("a" * 24) is None
    assert await store.get_file("b" * 24) is not None


async def test_room_files_link_to_their_post_and_are_deleted_one_by_one(
    store: ChatStore,
) -> None:
    def record(fid: str, rid: str, ts_ms: int) -> FileRecord:
        return FileRecord(
            id=fid,
            room_id=rid,
            name="n.txt",
            size=ts_ms,
            sha256="0" * 64,
            uploader="u",
            ts_ms=ts_ms,
        )

    for fid, rid, ts in (("b" * 24, "r1", 2), ("a" * 24, "r1", 1), ("c" * 24, "r2", 3)):
        await store.add_file(record(fid, rid, ts), [])
    assert [f.id for f in await store.room_files("r1")] == ["a" * 24, "b" * 24]
    assert await store.room_file_bytes("r1") == 3  # sizes 1 and 2
    assert await store.room_file_bytes("nowhere") == 0
    await store.set_file_post("b" * 24, 7)
    assert [f.post_seq for f in await store.room_files("r1")] == [0, 7]
    assert await store.delete_file("b" * 24) is True
    assert await store.delete_file("b" * 24) is False
    assert [f.id for f in await store.room_files("r1")] == ["a" * 24]
    assert await store.room_files("nowhere") == []
