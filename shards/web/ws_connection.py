"""One browser WebSocket: one XCCOS session on the gateway, JSON at the edge (shards layer).

The session is the same ``Session`` a SIP dialog gets: its requests pass the same
admission queue and per-session queue into the same command handler, and room events
reach it through the same delivery queue, as the same envelope bytes. Only the framing
differs: the envelope goes out bare and ``core.browser.translate`` turns it into JSON.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import msgspec
from aiohttp import WSMsgType, web

from core.browser import messages as m
from core.browser.translate import Encoder, to_envelope
from core.config import WebSocketSettings
from shards.worker.gateway import Gateway
from shards.worker.session import Session

log = logging.getLogger(__name__)

# Close codes (docs/websocket.md): 1009 and 1003 are RFC 6455 §7.4.1's; 4000-4999 are ours.
CLOSE_IDLE = 4000  # no request within websocket.idle_timeout_s
CLOSE_ENDED = 4001  # the server ended the session (signed out, disabled, shutting down)
CLOSE_BINARY = 1003  # the protocol is JSON text only

_decoder = msgspec.json.Decoder(m.ClientMessage)
_encoder = msgspec.json.Encoder()


class BareFraming:
    """A session's framing for a WebSocket: the envelope itself (no SIP around it)."""

    __slots__ = ("call_id",)

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id

    def info(self, body: bytes) -> bytes:
        return body

    def request(self, method: str, extra: str = "") -> bytes:
        return b""  # no BYE: the socket's close code says the session ended


def _request_id(data: str) -> int:
    """The id of a request that did not decode, when it has one, for its error."""
    try:
        rid = msgspec.json.decode(data, type=dict[str, object]).get("id")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0
    return rid if isinstance(rid, int) and 0 < rid <= 2**53 else 0


class WsConnection:
    """Implements the gateway's ``Connection``: written in a turn, flushed at its end, one
    writer task per socket; output past ``max_output_bytes`` cuts the reader off."""

    def __init__(
        self,
        gateway: Gateway,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        user: str,
        ha1: dict[str, str],
        encoder: Encoder,
        settings: WebSocketSettings,
    ) -> None:
        self._gw = gateway
        self._ws = ws
        self._transport = transport
        self._user = user
        self._ha1 = ha1
        self._encoder = encoder
        self._max_output = settings.max_output_bytes
        self._idle_s = settings.idle_timeout_s
        self._out: list[bytes] = []  # JSON messages queued in this turn
        self._out_bytes = 0
        # Flushed frames the writer has not sent yet (usually one). A list and a future made
        # when the writer waits, not a deque and an Event: 1.5 KiB less per socket.
        self._frames: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._idle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
        sid = gateway.new_session_id()
        self.session = Session(
            host=gateway,
            dialog=BareFraming(f"ws-{sid}"),
            user=user,
            session_id=sid,
            gateway=gateway.worker_id,
            send=self._send_envelope,
            end=self._end_session,
        )

    @property
    def user(self) -> str | None:
        return self._user

    @property
    def signed_in_ha1(self) -> dict[str, str]:
        return self._ha1

    # -- the session's life ---------------------------------------------------------------

    async def run(self) -> None:
        """Serves the socket until it closes; the session ends with it."""
        gw = self._gw
        gw.connections.add(self)
        gw.add_session(self.session)
        gw.load_follows(self.session)
        info = gw.handler.info
        self._queue(
            m.Hello(
                user=self._user,
                session=self.session.session_id,
                message_size_limit=info.message_size_limit,
                history_max=info.history_max,
                search_limit=info.search_limit,
            )
        )
        writer = asyncio.get_running_loop().create_task(self._write())
        self._touch()
        try:
            async for msg in self._ws:
                if msg.type == WSMsgType.TEXT:
                    self._touch()
                    self._on_text(cast(str, msg.data))
                elif msg.type == WSMsgType.BINARY:
                    await self._ws.close(code=CLOSE_BINARY, message=b"JSON text frames only")
        finally:
            self._closed = True
            gw.connections.discard(self)
            if self._idle is not None:
                self._idle.cancel()
            writer.cancel()
            self._end_session(self.session, False)

    def _end_session(self, session: Session, server_ended: bool) -> None:
        rooms = session.close()
        if rooms:
            self._gw.leave_rooms(session.session_id, rooms)
        if server_ended:
            self._close(CLOSE_ENDED, "the session ended")

    def _touch(self) -> None:
        if self._idle_s <= 0:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self._idle_s, self._idle_timeout)

    def _idle_timeout(self) -> None:
        log.info("closing the WebSocket of %s: idle for %.0f s", self._user, self._idle_s)
        self._close(CLOSE_IDLE, "idle")

    def _close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._flush()
        task = asyncio.get_running_loop().create_task(
            self._ws.close(code=code, message=reason.encode()[:120])
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests -------------------------------------------------------------------------

    def _on_text(self, data: str) -> None:
        try:
            req = _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._queue(m.Error(id=_request_id(data), code=400, reason=str(exc)[:200]))
            return
        if isinstance(req, m.Ping):
            self._queue(m.Pong(id=req.id))
            return
        session = self.session
        if not session.can_queue():
            self._gw.metrics.rejected("session")
            self._queue(m.Error(id=req.id, code=503, reason="too many requests queued; retry"))
            return
        ticket = self._gw.admission.admit()
        if ticket is None:
            self._queue(m.Error(id=req.id, code=503, reason="server busy; retry"))
            return
        with ticket:  # the place goes back at the end of this block unless submit holds it
            session.submit(to_envelope(req), ticket)

    # -- output ---------------------------------------------------------------------------

    def _send_envelope(self, body: bytes) -> None:
        """What the session sends (an envelope a SIP client would get in an INFO)."""
        for data in self._encoder.encode(body):
            self._append(data)

    def _queue(self, msg: m.ServerMessage) -> None:
        self._append(_encoder.encode(msg))

    def _append(self, data: bytes) -> None:
        if self._closed:
            return
        self._out.append(data)
        self._out_bytes += len(data) + 1
        queued = self._out_bytes + self._transport.get_write_buffer_size()
        if queued > self._max_output:
            self._cut_off()
            return
        if len(self._out) == 1:
            self._gw.want_flush(self)

    def flush(self) -> None:
        """One frame (a JSON array) of what this loop turn queued, handed to the writer."""
        self._flush()

    def _flush(self) -> None:
        if not self._out:
            return
        frame = b"[" + b",".join(self._out) + b"]"
        self._out.clear()
        self._frames.append(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _write(self) -> None:
        """The one writer: frames in order; it waits while the socket drains, and what
        piles up meanwhile counts against the output cap (``_out_bytes`` is kept)."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._frames:
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
                continue
            frame = self._frames.pop(0)
            try:
                await self._ws.send_frame(frame, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                return  # closing: the reader's loop ends the session
            self._out_bytes = max(0, self._out_bytes - len(frame))

    def _cut_off(self) -> None:
        log.warning(
            "closing the WebSocket of %s: slow consumer over %d bytes", self._user, self._max_output
        )
        self._gw.metrics.slow_consumers.inc()
        self._out.clear()
        self._frames.clear()
        self.abort()

    def abort(self) -> None:
        self._closed = True
        self._transport.abort()

    def sign_out(self, why: str) -> None:
        log.info("signing out the WebSocket of %s: %s", self._user, why)
        self._close(CLOSE_ENDED, why)
