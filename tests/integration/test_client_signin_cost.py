"""What one sign-in costs the client (the load generator's side, bench/README.md): one
deadline for the whole sequence instead of a timer per step and per reply, and a connect to a
numeric address that never asks the resolver. Against a real worker and real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from client.client import LeanClient, PchatClient
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, PASSWORD, add_room


async def test_a_whole_sign_in_runs_under_one_deadline(
    server: RunningWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    followed = await add_room(server.store, "Followed")
    await server.store.follow(f"sip:alice@{DOMAIN}", "followed")
    timers = {"wait_for": 0, "timeout": 0}
    wait_for, timeout = asyncio.wait_for, asyncio.timeout

    def counting_wait_for(*args: Any, **kwargs: Any) -> Any:
        timers["wait_for"] += 1
        return wait_for(*args, **kwargs)

    def counting_timeout(*args: Any, **kwargs: Any) -> Any:
        timers["timeout"] += 1
        return timeout(*args, **kwargs)

    client = await PchatClient.connect("127.0.0.1", server.sip_port, f"alice@{DOMAIN}", PASSWORD)
    try:
        monkeypatch.setattr(asyncio, "wait_for", counting_wait_for)
        monkeypatch.setattr(asyncio, "timeout", counting_timeout)
        answered = await client.sign_in()
        monkeypatch.undo()
        # SUBSCRIBE (twice: the digest challenge), INVITE, five commands, the followed
        # room's bjoin and history: one deadline for them all.
        assert timers == {"wait_for": 0, "timeout": 1}
        assert answered["joined"] == [followed] and answered["server_info"]
        assert not client._tx and not client._replies
        # Outside the sign-in a command keeps its own timeout.
        assert await client.command("cmd:getinv", f'<inv inviteId="1" domain="{DOMAIN}"/>')
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def _silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers: a server that stalls every sign-in."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_stalled_sign_in_fails_at_its_deadline() -> None:
    async with _silent_server() as port:
        client = await PchatClient.connect("127.0.0.1", port, f"alice@{DOMAIN}", PASSWORD)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.sign_in(timeout=0.3)
        assert time.monotonic() - started < 5  # the sequence's deadline, not 10 s per step
        assert not client._tx  # the waiting request went with the deadline
        await client.close()


async def test_the_lean_connect_to_a_numeric_address_asks_no_resolver(
    server: RunningWorker,
) -> None:
    loop = asyncio.get_running_loop()
    asked: list[tuple[Any, ...]] = []
    getaddrinfo = loop.getaddrinfo

    async def counting(*args: Any, **kwargs: Any) -> Any:
        asked.append(args)
        return await getaddrinfo(*args, **kwargs)

    loop.getaddrinfo = counting  # type: ignore[method-assign]
    try:
        client = await LeanClient.connect_lean(
            "127.0.0.1", server.sip_port, f"alice@{DOMAIN}", PASSWORD, local_host="127.0.0.2"
        )
        try:
            assert client._local.startswith("127.0.0.2:")  # bound where it was told
            await client.sign_in()
            assert asked == []
        finally:
            client.abort()
        # A name still goes to the resolver, as before.
        by_name = await LeanClient.connect_lean(
            "localhost", server.sip_port, f"bob@{DOMAIN}", PASSWORD, local_host="127.0.0.2"
        )
        by_name.abort()
        assert [a[0] for a in asked] == ["localhost"]
    finally:
        del loop.getaddrinfo  # type: ignore[method-assign]


async def test_the_lean_connect_reports_a_refused_connection() -> None:
    async with _silent_server() as port:
        pass  # closed: nothing listens on the port any more
    with pytest.raises(ConnectionRefusedError):
        await LeanClient.connect_lean(
            "127.0.0.1", port, f"alice@{DOMAIN}", PASSWORD, local_host="127.0.0.2"
        )
