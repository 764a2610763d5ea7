"""`pchat chat`: a terminal client on the client library (sign in, search, join, post, read).

The connection (chat_link), the posts typed (chat_outbox) and the lines read (chat_input)
run side by side; this module reads commands and says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from client import files
from client.chat_input import Lines
from client.chat_link import NETWORK_ERRORS, Connect, Link, shown_text, when
from client.chat_outbox import Outbox
from client.errors import SipError, XccosError
from client.session import PchatClient
from core.xccos.envelope import Reply

HELP = """commands:
  /rooms TEXT    find rooms by name     /join NAME|URI   join a room (and show its history)
  /part          leave the room         /history [N]     last N posts of the room
  /search TEXT   search the room's posts /who            who is online in the room
  /follow        follow the room        /quit            leave (so does Ctrl-D)
  /upload PATH   post a file to the room /download ID [PATH]  save a posted file
  //TEXT         post TEXT starting with one /
anything else is posted to the room you joined last"""
MAX_HISTORY = 500  # bccontext's largest cnt (XCCOS.md §4)


def say(text: str) -> None:
    print(text, flush=True)


class Chat:
    def __init__(self, connect: Connect) -> None:
        self.link = Link(connect, say)
        self.outbox = Outbox(self.link)
        self.room = ""
        self.commands: dict[str, Callable[[str], Awaitable[None]]] = {
            "/help": self._help, "/rooms": self._rooms, "/join": self.join,
            "/part": self._part, "/follow": self._follow, "/history": self._history,
            "/search": self._search, "/who": self._who, "/upload": self._upload,
            "/download": self._download,
        }  # fmt: skip

    @property
    def client(self) -> PchatClient:
        if not self.link.up.is_set() or self.link.client is None:
            raise ConnectionError("not connected; the chat is reconnecting")
        return self.link.client

    async def handle(self, text: str) -> None:
        if text.startswith("/") and not text.startswith("//"):
            name, _, rest = text.partition(" ")
            command = self.commands.get(name)
            if command is None:
                say(f"error: unknown command {name}; /help lists the commands (not posted)")
                return
            await command(rest.strip())
        elif not self.room:
            say("error: join a room first: /join NAME (not posted)")
        else:
            self.outbox.add(self.room, text.removeprefix("/"))

    def _need_room(self) -> str:
        if not self.room:
            raise ValueError("join a room first: /join NAME")
        return self.room

    async def _help(self, _: str) -> None:
        say(HELP)

    async def _rooms(self, text: str) -> None:
        rooms = await self.client.search(text)
        for room in rooms:
            say(f"{room.get('name')}\t{room.get('uri')}\t{room.get('description', '')}")
        say(f"{len(rooms)} rooms found")

    async def join(self, target: str) -> None:
        if not target:
            raise ValueError("/join NAME or /join ma-chan://…")
        uri = target
        if not target.startswith("ma-chan://"):
            found = [
                r
                for r in await self.client.search(target)
                if r.get("name", "").lower() == target.lower()
            ]
            if not found:
                raise ValueError(f"no room named {target!r}; try /rooms")
            uri = found[0]["uri"]
        await self.client.join(uri)
        self.link.rooms[uri] = target
        self.room = uri
        for message in await self.client.history(uri):
            self.link.show(message)
        say(f"* joined {target}")

    async def _part(self, _: str) -> None:
        room = self._need_room()
        await self.client.part(room)
        say(f"* left {self.link.rooms.pop(room, room)}")
        self.room = next(reversed(self.link.rooms), "")

    async def _follow(self, _: str) -> None:
        await self.client.follow(self._need_room())
        say("* following")

    async def _history(self, count: str) -> None:
        n = int(count or 25)
        if not 1 <= n <= MAX_HISTORY:
            raise ValueError(f"/history N: N from 1 to {MAX_HISTORY}")
        await self._print(f'<last cnt="{n}"/>', "no posts")

    async def _search(self, text: str) -> None:
        if not text:
            raise ValueError("/search TEXT")
        esc = text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
        await self._print(f'<search text="{esc}" cnt="{MAX_HISTORY}"/>', "no post matches")

    async def _print(self, query: str, none: str) -> None:
        """Prints the posts a bccontext query finds (again, even if shown before)."""
        room = self._need_room()
        found = await self.client.history(room, query=query)
        for m in found:
            say(f"#{m.msgid} {when(m.ts)} {m.author.removeprefix('sip:')}: {shown_text(m.text)}")
        if not found:
            say(none)

    async def _upload(self, path: str) -> None:
        if not path:
            raise ValueError("/upload PATH")
        room = self._need_room()
        try:
            record = await files.upload(self.client, room, Path(path).expanduser())
        except aiohttp.ClientError as exc:
            raise files.TransferError(f"upload failed: {exc}") from exc
        posted = f"as #{record['msgid']}" if record.get("msgid") else "(not announced)"
        say(f"* uploaded {record['name']} ({record['size']:,} bytes) {posted}: id {record['id']}")

    async def _download(self, args: str) -> None:
        file_id, _, target = args.partition(" ")
        if not file_id:
            raise ValueError("/download ID [PATH]")
        dest = Path(target.strip()).expanduser() if target.strip() else None
        try:
            saved = await files.download(self.client, file_id, dest)
        except aiohttp.ClientError as exc:
            raise files.TransferError(f"download failed: {exc}") from exc
        say(f"* saved {saved}")

    async def _who(self, _: str) -> None:
        room = self._need_room()
        count, online = online_of(await self.client.join(room))  # a join again says who is on
        names = ", ".join(online) or "(the room is too big to list them)"
        say(f"online in {self.link.rooms.get(room, room)} ({count}): {names}")


def online_of(reply: Reply) -> tuple[str, list[str]]:
    """The online count and addresses a join reply lists (XCCOS.md §3: uib table, aib 3984)."""
    data = reply.data
    users = {u.get("id"): u.get("uri") for u in (data.findall("uib") if data else [])}
    chan = data.find("chanib") if data is not None else None
    online, count = [], ""
    for el in chan.findall("aib") if chan is not None else []:
        if el.get("key") == "3984":
            ids = [i for i in el.get("value").split(",") if i]
            online = [users.get(i, i).removeprefix("sip:") for i in ids]
    for el in chan.findall("info") if chan is not None else []:
        if el.get("id") == "urn:parlano:ma:info:ucnt":
            count = el.text
    return count or str(len(online)), online


async def run_chat(connect: Connect, first_room: str | None) -> int:
    """Runs the chat until /quit, end of input or a refused sign-in; 0, or 1 if refused."""
    chat = Chat(connect)
    lines = Lines(asyncio.get_running_loop())
    tasks = [asyncio.ensure_future(chat.link.run()), asyncio.ensure_future(chat.outbox.run())]
    try:
        await _wait_first(chat.link.up.wait(), chat.link.over.wait())
        if chat.link.over.is_set():
            return 1
        if first_room:
            await _guard(chat.join(first_room))
        say("/help lists the commands")
        while True:
            line = await _wait_first(lines.next(), chat.link.over.wait())
            if chat.link.over.is_set() or not isinstance(line, str):
                break
            text = line.strip()
            if text == "/quit":
                break
            if text:
                await _guard(chat.handle(text))
        if not chat.link.over.is_set() and chat.outbox.pending:
            await _wait_first(chat.outbox.idle.wait(), chat.link.over.wait(), timeout=15)
    finally:
        chat.outbox.abandon()
        for task in tasks:
            task.cancel()
        if chat.link.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chat.link.client.close(), 2)
    return 1 if chat.link.fatal else 0


async def _guard(step: Awaitable[None]) -> None:
    try:
        await step
    except (XccosError, SipError, ValueError, *NETWORK_ERRORS) as exc:
        say(f"error: {exc or type(exc).__name__}")


async def _wait_first(*steps: Awaitable[object], timeout: float | None = None) -> object:
    tasks = [asyncio.ensure_future(s) for s in steps]
    done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    return tasks[0].result() if tasks[0] in done else None
