"""`pchat chat` in a pseudo-terminal (the pty module: no extra dependency), for the tests."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time

from tests.conftest import DOMAIN


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty becomes the controlling terminal (getpass)


def chat_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    env["TZ"] = "UTC"
    env.update(extra)
    return env


class Terminal:
    """A `pchat chat` process whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, port: int, *args: str, user: str = "alice", env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        argv = [sys.executable, "-m", "shards.cli", "chat", "--user", f"{user}@{DOMAIN}",
                "--port", str(port), "--domain", DOMAIN, *args]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env,
            start_new_session=True, preexec_fn=_take_terminal,
        )  # fmt: skip
        os.close(slave)
        self.seen = ""  # everything printed so far
        self._pos = 0  # where the next expect() starts looking

    def _read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.master, 65536)
        except OSError:  # the process is gone and the pty closed
            return b""

    async def expect(self, text: str, timeout: float = 15.0) -> str:
        """Waits until ``text`` is printed after what the last expect() matched."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self._pos :]:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout} s; printed:\n{self.seen}")
            chunk = await asyncio.to_thread(self._read, 0.2)
            self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")
        at = self.seen.index(text, self._pos) + len(text)
        found, self._pos = self.seen[self._pos : at], at
        return found

    async def settle(self, seconds: float) -> None:
        """Reads whatever is printed for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            chunk = await asyncio.to_thread(self._read, 0.1)
            self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def interrupt(self) -> None:
        os.write(self.master, b"\x03")  # Ctrl-C, as the terminal's line discipline sends it

    async def exit_code(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"chat did not exit; printed:\n{self.seen}")
            await self.settle(0.1)
        await self.settle(0.2)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)
