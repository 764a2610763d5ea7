"""`pchat chat`: a person at a terminal joins, reads history, posts and sees others live."""

from __future__ import annotations

import asyncio
import os
import sys

from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, PASSWORD, add_room, signed_in


async def read_until(stream: asyncio.StreamReader, text: str, timeout: float = 10.0) -> str:
    seen = ""
    async with asyncio.timeout(timeout):
        while text not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"chat ended before printing {text!r}; it printed:\n{seen}")
            seen += line.decode()
    return seen


async def test_terminal_chat_session(server: RunningWorker) -> None:
    lobby = await add_room(server.store, "Lobby")
    bob = await signed_in(server, "bob")
    await bob.join(lobby)
    await bob.post(lobby, "an earlier word")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    env["PCHAT_PASSWORD"] = PASSWORD  # not on the command line, where `ps` shows it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "chat", "--user", f"alice@{DOMAIN}",
        "--port", str(server.sip_port), "--domain", DOMAIN, "--room", "Lobby",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        await read_until(proc.stdout, "bob@example.com: an earlier word")  # history on joining
        proc.stdin.write(b"hello from the terminal\n")
        await proc.stdin.drain()
        assert (await bob.next_post(10)).text == "hello from the terminal"
        await bob.post(lobby, "welcome, alice")
        await read_until(proc.stdout, "bob@example.com: welcome, alice")  # live posts are printed
        proc.stdin.write(b"/rooms lob\n")
        await proc.stdin.drain()
        await read_until(proc.stdout, lobby)
        proc.stdin.write(b"/quit\n")
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await bob.close()
