"""A delivery turn's writes leave as the turn ends (shards/worker/output.py), on real sockets.

Waiting one more loop turn for the flush put a round of every socket's reads between a
post's fan-out and its writes (bench/README.md, the fan-out profile of 2026-12-03).
"""

from __future__ import annotations

import asyncio
import socket

from shards.worker.connection import SipConnection
from shards.worker.runner import RunningWorker


class _Recipient:
    def __init__(self, session_id: str, conn: SipConnection) -> None:
        self.session_id = session_id
        self._conn = conn

    def deliver(self, room_id: str, body: bytes) -> None:
        self._conn.send(body)


async def _connected(server: RunningWorker) -> tuple[socket.socket, SipConnection]:
    """A plain client socket and the worker's connection for it."""
    before = set(server.gateway.connections)
    sock = socket.create_connection(("127.0.0.1", server.sip_port))
    for _ in range(500):
        new = set(server.gateway.connections) - before
        if new:
            conn = new.pop()
            assert isinstance(conn, SipConnection)
            return sock, conn
        await asyncio.sleep(0.01)
    raise AssertionError("the worker never accepted the connection")


def _read(sock: socket.socket, size: int) -> bytes:
    # Blocking, on the loop's thread: nothing the loop has not done yet can happen now, so
    # the bytes are there only if the delivery turn itself wrote them.
    sock.settimeout(2.0)
    got = b""
    try:
        while len(got) < size:
            chunk = sock.recv(size - len(got))
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        pass
    return got


async def test_a_delivery_turn_writes_before_the_loop_turns_again(server: RunningWorker) -> None:
    socks = []
    targets = []
    for n in range(3):
        sock, conn = await _connected(server)
        socks.append(sock)
        targets.append(_Recipient(f"s{n}", conn))
    deliveries = server.gateway.local.deliveries
    deliveries.push("room", b"post one;", tuple(targets))
    deliveries.push("room", b"post two;", tuple(targets), skip="s1")
    await asyncio.sleep(0)  # exactly one loop turn: the delivery turn, then this task
    try:
        assert _read(socks[0], 18) == b"post one;post two;"  # both posts, in order
        assert _read(socks[1], 9) == b"post one;"  # the author of the second is skipped
        assert _read(socks[2], 18) == b"post one;post two;"
    finally:
        for sock in socks:
            sock.close()


async def test_output_queued_after_a_delivery_turn_is_still_flushed(server: RunningWorker) -> None:
    sock, conn = await _connected(server)
    try:
        server.gateway.local.deliveries.push("room", b"post;", (_Recipient("s", conn),))
        await asyncio.sleep(0)  # the delivery turn flushed what it queued
        conn.send(b"reply;")  # queued later in the same turn: the next turn's flush
        await asyncio.sleep(0.05)
        assert _read(sock, 11) == b"post;reply;"
    finally:
        sock.close()
