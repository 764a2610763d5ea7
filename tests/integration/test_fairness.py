"""A fair, bounded worker (ARCHITECTURE §8a): no request may hold the loop or the
admission queue, replies are bounded before they are built, honest readers are served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.client import SipError
from core.config import Settings
from core.xccos import build
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, add_room, add_user, make_settings, signed_in


@pytest.fixture
async def lobby(server: RunningWorker) -> str:
    return await add_room(server.store, "Lobby")


async def _still_serving(server: RunningWorker, room: str) -> None:
    other = await signed_in(server, "carol")
    await other.join(room)
    assert await other.post(room, "still here") > 0
    await other.close()


async def _settled(server: RunningWorker) -> None:
    for _ in range(200):
        if server.gateway.admission.inflight == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{server.gateway.admission.inflight} admission places leaked")


async def test_envelope_with_hundreds_of_commands_gets_413(
    server: RunningWorker, lobby: str
) -> None:
    alice = await signed_in(server)
    await alice.join(lobby)
    query = f'{build.chanib(lobby)}<bcq><last cnt="500"/></bcq>'
    hostile = "".join(build.cmd("cmd:bccontext", n, query) for n in range(300))
    with pytest.raises(SipError) as refused:
        await alice.send_envelope(hostile)
    assert refused.value.status == 413
    await _settled(server)
    await _still_serving(server, lobby)
    await alice.close()


async def test_huge_numeric_references_get_400_and_give_their_places_back(
    server: RunningWorker, lobby: str
) -> None:
    alice = await signed_in(server)
    await alice.join(lobby)
    post = build.post(lobby, alice.uri, "QQQ").replace("QQQ", "&#" + "9" * 5000 + ";")
    for _ in range(30):
        with pytest.raises(SipError) as refused:
            await alice.send_envelope(post)
        assert refused.value.status == 400
    await _settled(server)
    assert (await server.health())["admission_inflight"] == 0
    await _still_serving(server, lobby)
    await alice.close()


async def test_a_bug_in_a_command_ends_the_session_and_gives_the_place_back(
    server: RunningWorker, lobby: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await signed_in(server)
    handler = server.gateway.handler
    real = handler.command

    async def broken(session: object, envid: str, cmd: object) -> str:
        if getattr(session, "user", "") == alice.uri:
            raise RuntimeError("a bug")
        return await real(session, envid, cmd)  # type: ignore[arg-type]

    monkeypatch.setattr(handler, "command", broken)
    await alice.send_envelope(build.cmd("cmd:getserverinfo", 1))
    await _settled(server)
    assert not [s for s in server.gateway.sessions.values() if s.user == alice.uri]
    await _still_serving(server, lobby)
    await alice.close()


async def test_big_history_comes_in_pages_within_the_output_cap(
    server: RunningWorker, lobby: str
) -> None:
    """300 posts of 4,000 characters: 1.2 MB of history, over the 256 KiB output cap."""
    bob = await signed_in(server, "bob")
    await bob.join(lobby)
    for n in range(300):
        await bob.post(lobby, f"{n:04d} " + "x" * 4000)
    await bob.close()
    alice = await signed_in(server)
    await alice.join(lobby)
    seen: list[int] = []
    query = '<last cnt="500"/>'
    pages = 0
    while True:
        reply = await alice.command(
            "cmd:bccontext", f"{build.chanib(lobby)}<bcq>{query}</bcq>", timeout=10
        )
        chan = reply.data.find("chanib") if reply.data is not None else None
        assert chan is not None
        ids = [int(m.get("msgid")) for m in chan.children if m.tag == "msg"]
        assert ids == sorted(ids) and ids
        assert len(ids) * 4000 < server.settings.sip.max_output_bytes  # one page fits the cap
        seen[:0] = ids
        pages += 1
        if chan.get("more") != "true":
            break
        query = f'<before msgid="{ids[0]}" cnt="500"/>'
    assert seen == list(range(1, 301))  # every post, once, in order
    assert pages >= 5
    assert not alice.closed.is_set()  # never cut off as a slow consumer
    await alice.close()


@pytest.fixture
async def small_cap(tmp_path: Path, redis_url: str) -> AsyncIterator[RunningWorker]:
    base = make_settings(tmp_path, redis_url)
    import msgspec

    settings: Settings = msgspec.structs.replace(
        base, sip=msgspec.structs.replace(base.sip, max_output_bytes=32 * 1024)
    )
    async with run_worker(settings) as worker:
        for name in ("alice", "bob"):
            await add_user(worker.store, name)
        yield worker


async def test_a_reader_that_stops_is_cut_off_as_output_is_queued(small_cap: RunningWorker) -> None:
    server = small_cap
    room = await add_room(server.store, "Lobby")
    sleeper = await signed_in(server)
    await sleeper.join(room)
    [conn] = [c for c in server.gateway.connections if getattr(c, "user", "") == sleeper.uri]
    held: list[int] = []
    # One loop turn's worth of output (a burst of fan-out), queued before any flush.
    for _ in range(100):
        conn.send(b"z" * 1000)  # type: ignore[attr-defined]
        held.append(conn._out_bytes)  # type: ignore[attr-defined]
    assert conn._closed  # type: ignore[attr-defined]
    assert max(held) <= 32 * 1024  # cut off as queued, not after 100 KB were held
    bob = await signed_in(server, "bob")  # the worker goes on
    await bob.join(room)
    assert await bob.post(room, "after the cut") > 0
    await bob.close()
    await sleeper.close()


async def test_one_failing_flush_does_not_leave_the_others_stuck(server: RunningWorker) -> None:
    flushed: list[str] = []
    aborted: list[str] = []

    class Broken:
        def flush(self) -> None:
            raise OSError("transport gone")

        def abort(self) -> None:
            aborted.append("broken")

    class Fine:
        def flush(self) -> None:
            flushed.append("fine")

        def abort(self) -> None:
            aborted.append("fine")

    server.gateway.want_flush(Broken())
    server.gateway.want_flush(Fine())
    await asyncio.sleep(0.01)
    assert flushed == ["fine"] and aborted == ["broken"]


async def test_edge_numbers_get_400_not_a_traceback(server: RunningWorker, lobby: str) -> None:
    alice = await signed_in(server)
    await alice.join(lobby)
    for bad in ("18446744073709551616", "²", "-1"):
        reply = await alice.command(
            "cmd:bccontext",
            f'{build.chanib(lobby)}<bcq><before msgid="{bad}" cnt="5"/></bcq>',
            check=False,
        )
        assert reply.code == 400, bad
    response = await alice.request(
        "UPDATE", alice.pool_uri, in_dialog=True, extra=[("Session-Expires", "²")]
    )
    assert response.status == 400 and "Session-Expires" in (response.get("Warning") or "")
    await alice.close()


async def test_author_in_another_case_is_the_same_user(server: RunningWorker, lobby: str) -> None:
    alice = await signed_in(server)
    await alice.join(lobby)
    shouting = f"sip:ALICE@{DOMAIN.upper()}"
    await alice.send_envelope(build.post(lobby, shouting, "hello"))
    for _ in range(100):
        history = await alice.history(lobby)
        if history:
            break
        await asyncio.sleep(0.02)
    assert [m.text for m in history] == ["hello"]
    await alice.close()
