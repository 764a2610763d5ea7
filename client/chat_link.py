"""The connection of `pchat chat`: it says when the session ends and why, reconnects with
backoff, rejoins the rooms and catches up on the posts missed meanwhile, by message id."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime

from client.errors import SipError, XccosError
from client.inbox import ChatMessage
from client.session import PchatClient
from core.files.post import parse_file_post
from core.xccos import build

BACKOFF_FIRST = 0.5  # s: a worker killed and restarted by its supervisor is back within ~1 s
BACKOFF_MAX = 10.0  # s: a long outage costs one sign-in every 10 s, not a reconnect storm
CATCHUP_PAGE = 500  # posts per bccontext request: its largest cnt (XCCOS.md §4)
# Pages read per room on reconnecting (10,000 posts): past that the terminal is flooded
# anyway, and the chat says how to read further back (/history).
CATCHUP_PAGES = 20
# (room, msgid) of recent posts shown, to drop the overlap of catch-up and live posts; the
# overlap is the posts of the few seconds a reconnect takes, far below this.
SHOWN_KEPT = 2000
NETWORK_ERRORS = (OSError, ConnectionError, TimeoutError)

Connect = Callable[[], Awaitable[PchatClient]]


def when(ts: str) -> str:
    """The server's UTC timestamp as local date and time with the time zone named."""
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return ts
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def refusal(exc: SipError) -> str:
    """Why the server will not sign this user in again, said plainly ('' if it might)."""
    if exc.status == 401:
        return f"the server does not accept this user and password ({exc})"
    if exc.status == 403:
        return f"the server refuses this user: persistent chat is not enabled for it ({exc})"
    return ""


def shown_text(text: str) -> str:
    """A post as the chat prints it: a file post says how to fetch its file."""
    post = parse_file_post(text)
    if post is None:
        return text
    return f"[file] {post.name} ({post.size:,} bytes)  /download {post.file_id}"


class Link:
    def __init__(self, connect: Connect, out: Callable[[str], None]) -> None:
        self._connect = connect
        self.out = out
        self.client: PchatClient | None = None
        self.up = asyncio.Event()
        self.over = asyncio.Event()  # no more reconnecting: see ``fatal``
        self.fatal = ""
        self.rooms: dict[str, str] = {}  # joined room URI -> the name it is shown by
        self.last: dict[str, int] = {}  # room URI -> the highest msgid shown
        self._shown: set[tuple[str, int]] = set()
        self._shown_order: deque[tuple[str, int]] = deque()

    def show(self, m: ChatMessage, *, mine: bool = False) -> None:
        key = (m.room, m.msgid)
        if key in self._shown:
            return
        self._shown.add(key)
        self._shown_order.append(key)
        if len(self._shown_order) > SHOWN_KEPT:
            self._shown.discard(self._shown_order.popleft())
        self.last[m.room] = max(self.last.get(m.room, 0), m.msgid)
        room = self.rooms.get(m.room, m.room)
        who = "you" if mine else m.author.removeprefix("sip:")
        tail = "  (sent)" if mine else ""
        self.out(f"#{m.msgid} {when(m.ts)} [{room}] {who}: {shown_text(m.text)}{tail}")

    def _stop(self, why: str) -> None:
        self.fatal = why
        self.over.set()
        self.out(f"* {why}")

    async def run(self) -> None:
        """Sign in, serve the session until it ends, say why, and sign in again."""
        delay, first = BACKOFF_FIRST, True
        while True:
            try:
                client = await self._connect()
                try:
                    caught = await self._resume(client)
                except BaseException:
                    await client.close()
                    raise
            except SipError as exc:
                if first or refusal(exc):
                    return self._stop(refusal(exc) or f"cannot sign in: {exc}")
                self.out(f"* cannot sign in yet ({exc}); retrying in {delay:.1f} s")
            except (*NETWORK_ERRORS, XccosError) as exc:
                if first:
                    return self._stop(f"cannot sign in: {exc or type(exc).__name__}")
                self.out(
                    f"* still disconnected ({exc or type(exc).__name__}); retrying in {delay:.1f} s"
                )
            else:
                worker = f", worker {client.server_worker}" if client.server_worker >= 0 else ""
                verb = "connected" if first else "reconnected"
                extra = "" if first else f"; caught up on {caught} missed posts"
                self.out(f"* {verb} as {client.address}{worker}{extra}")
                first, delay = False, BACKOFF_FIRST
                await self._serve(client)
                continue
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _serve(self, client: PchatClient) -> None:
        self.client = client
        self.up.set()
        while not client.ended.is_set():
            try:
                self.show(await client.next_post(0.5))
            except TimeoutError:
                continue
        while client.posts.items:  # what arrived before the end is still news
            self.show(await client.next_post(0))
        self.up.clear()
        if client.bye_from_server:
            self.out("* the server ended the session (signed out); signing in again")
        else:
            self.out("* connection to the server lost; reconnecting")
        await client.close()

    async def _resume(self, client: PchatClient) -> int:
        """Rejoins the rooms; shows every post after the last one shown; returns how many."""
        shown = 0
        for uri, name in list(self.rooms.items()):
            reply = await client.command("cmd:join", build.chanib(uri), check=False)
            if reply.code == 503:  # the room's worker is restarting: try again after a while
                raise XccosError(reply)
            if reply.code != 200:
                self.out(f"* could not rejoin {name}: {reply.code} {reply.text}")
                del self.rooms[uri]
                continue
            shown += await self.catch_up(client, uri)
        return shown

    async def catch_up(self, client: PchatClient, uri: str) -> int:
        after, shown = self.last.get(uri, 0), 0
        for _ in range(CATCHUP_PAGES):
            page = await client.history(uri, query=f'<after msgid="{after}" cnt="{CATCHUP_PAGE}"/>')
            for message in page:
                self.show(message)
            shown += len(page)
            if len(page) < CATCHUP_PAGE:
                return shown
            after = page[-1].msgid
        self.out(f"* more posts were missed in {self.rooms.get(uri, uri)}; /history N shows them")
        return shown
