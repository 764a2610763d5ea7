"""The ceiling: raw uvloop writers with no chat logic, and the load processes' counting side.

In the same run as the fan-out test, each writer process (one per server worker, sharing
a port with SO_REUSEPORT like the workers) writes messages of the delivered INFOs' average
size to as many connections as the chat run had sessions, round-robin, as fast as the
sockets take them. ``batch`` = 1 is one ``write()`` per message, what a server without
write coalescing could do; ``batch`` = 8 puts 8 messages in each write. The receivers only
count bytes: what is measured is the machine's socket throughput, not anybody's parsing.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Protocol, cast

from client.client import bound_socket

# Per-connection kernel send buffer, as the server sets it (sip.max_output_bytes default).
SNDBUF_BYTES = 256 * 1024
CONNECT_CONCURRENCY = 200  # connections being opened at once per load process


class _AgentConfig(Protocol):
    @property
    def agent_id(self) -> int: ...
    @property
    def local_host(self) -> str | None: ...


class _Count(asyncio.Protocol):
    __slots__ = ("_box",)

    def __init__(self, box: CeilingReceivers) -> None:
        self._box = box

    def data_received(self, data: bytes) -> None:
        box = self._box.bytes
        second = int(time.time())
        box[second] = box.get(second, 0) + len(data)


class CeilingReceivers:
    """The load process's side: holds connections to the writers, counts bytes per second."""

    def __init__(self) -> None:
        self.bytes: dict[int, int] = {}
        self._transports: list[asyncio.Transport] = []

    async def connect(self, cfg: _AgentConfig, host: str, port: int, count: int) -> int:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one() -> None:
            async with gate:
                if cfg.local_host:
                    sock = bound_socket(cfg.local_host)
                    await loop.sock_connect(sock, (host, port))
                    transport, _ = await loop.create_connection(lambda: _Count(self), sock=sock)
                else:
                    transport, _ = await loop.create_connection(lambda: _Count(self), host, port)
                self._transports.append(transport)

        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        return sum(1 for r in results if not isinstance(r, BaseException))

    async def run(self, pipe: Connection, cfg: _AgentConfig, op: str, *args: Any) -> None:
        if op == "connect":
            connected = await self.connect(cfg, args[0], args[1], args[2])
            pipe.send(("ceiling_ready", cfg.agent_id, connected))
        elif op == "report":
            taken, self.bytes = self.bytes, {}
            pipe.send(("ceiling_bytes", cfg.agent_id, taken))
        elif op == "close":
            for transport in self._transports:
                transport.abort()
            self._transports.clear()
            pipe.send(("ceiling_closed", cfg.agent_id))


class _Peer(asyncio.Protocol):
    __slots__ = ("transport", "paused", "_writer")

    def __init__(self, writer: _Writer) -> None:
        self._writer = writer
        self.transport: asyncio.WriteTransport | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.WriteTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
        self._writer.peers.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._writer.peers:
            self._writer.peers.remove(self)

    def pause_writing(self) -> None:
        self.paused = True  # the receiver is behind: skip it rather than buffer for it

    def resume_writing(self) -> None:
        self.paused = False


class _Writer:
    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self.peers: list[_Peer] = []

    async def serve(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(4096)
        sock.setblocking(False)
        server = await loop.create_server(lambda: _Peer(self), sock=sock)
        inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

        def read() -> None:
            while True:
                try:
                    message = self.pipe.recv()
                except (EOFError, OSError):
                    message = ("exit",)
                loop.call_soon_threadsafe(inbox.put_nowait, message)
                if message[0] == "exit":
                    return

        threading.Thread(target=read, daemon=True).start()
        self.pipe.send(("listening",))
        while True:
            message = await inbox.get()
            if message[0] == "exit":
                break
            if message[0] == "count":
                self.pipe.send(("count", len(self.peers)))
            elif message[0] == "go":
                written = await self.blast(message[1], message[2], message[3])
                self.pipe.send(("written", written))
        server.close()
        for peer in list(self.peers):
            if peer.transport is not None:
                peer.transport.abort()

    async def blast(self, size: int, batch: int, seconds: float) -> int:
        """Round-robin writes for ``seconds``; returns the messages handed to write()."""
        loop = asyncio.get_running_loop()
        data = (b"x" * (size - 2) + b"\r\n") * batch
        written = 0
        end = loop.time() + seconds
        while loop.time() < end:
            for peer in self.peers:
                if not peer.paused and peer.transport is not None:
                    peer.transport.write(data)
                    written += batch
            await asyncio.sleep(0)  # let the loop flush, read and call pause/resume
        return written


def writer_main(port: int, pipe: Connection) -> None:
    """Entry of a ceiling writer process (multiprocessing, spawn)."""
    import uvloop

    uvloop.run(_Writer(pipe).serve(port))
