"""`pchat chat`: a terminal client on the client library (sign in, search, join, post, read)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from client.client import ChatMessage, PchatClient, SipError, XccosError
from core.config import Settings

HELP = """commands:
  /search TEXT   find rooms            /join NAME|URI   join a room (and show its history)
  /part          leave the room        /history [N]     last N posts of the room
  /follow        follow the room       /quit            leave
anything else is posted to the room you joined last"""


def _show(message: ChatMessage, names: dict[str, str]) -> None:
    room = names.get(message.room, message.room)
    print(
        f"[{room}] {message.ts[11:19]} {message.author.removeprefix('sip:')}: {message.text}",
        flush=True,
    )


async def run_chat(settings: Settings, args: argparse.Namespace) -> int:
    try:
        client = await PchatClient.connect(
            args.host, args.port, args.user, args.password, domain=settings.domain
        )
        await client.sign_in()
    except (OSError, SipError, XccosError) as exc:
        print(f"pchat chat: cannot sign in: {exc}", file=sys.stderr)
        return 1
    print(f"signed in as {client.uri}. /help for commands.", flush=True)
    names: dict[str, str] = {}
    state: dict[str, str] = {}

    async def receive() -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                _show(await client.next_post(3600), names)

    async def join(target: str) -> None:
        uri = target
        if not target.startswith("ma-chan://"):
            found = [
                r
                for r in await client.search(target)
                if r.get("name", "").lower() == target.lower()
            ]
            if not found:
                print(f"no room named {target!r}; try /search")
                return
            uri = found[0]["uri"]
        await client.join(uri)
        names[uri] = target
        state["room"] = uri
        for message in await client.history(uri):
            _show(message, names)

    receiver = asyncio.get_running_loop().create_task(receive())
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        if args.room:
            await join(args.room)
        while line := (await reader.readline()).decode():
            text = line.strip()
            if not text:
                continue
            try:
                if text == "/quit":
                    break
                if text == "/help":
                    print(HELP)
                elif text.startswith("/search"):
                    for room in await client.search(text[7:].strip()):
                        print(
                            f"{room.get('name')}\t{room.get('uri')}\t{room.get('description', '')}"
                        )
                elif text.startswith("/join "):
                    await join(text[6:].strip())
                elif "room" not in state:
                    print("join a room first: /join NAME")
                elif text == "/part":
                    await client.part(state.pop("room"))
                elif text == "/follow":
                    await client.follow(state["room"])
                elif text.startswith("/history"):
                    count = int(text[8:].strip() or 25)
                    for message in await client.history(
                        state["room"], query=f'<last cnt="{count}"/>'
                    ):
                        _show(message, names)
                else:
                    await client.post(state["room"], text)
            except (XccosError, SipError, ValueError) as exc:
                print(f"error: {exc}", flush=True)
    finally:
        receiver.cancel()
        await client.close()
    return 0
