"""Lines typed into `pchat chat`: read in a daemon thread, with readline editing on a terminal.

A daemon thread, not the loop's executor: a blocking ``input()`` must never keep the process
alive after Ctrl-C or /quit. End of input (Ctrl-D, a closed pipe, /dev/null) is ``None``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

# Bytes of one line from a pipe or file; a longer line is cut there (no post is that long:
# the server's messageSizeLimit is far smaller, and it answers a too-long post with an error).
MAX_LINE_BYTES = 1 << 20
# Lines read ahead of the chat: a pasted block or a piped script waits in the thread beyond
# this, so memory stays bounded however much is fed in.
MAX_LINES_AHEAD = 64


class Lines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(MAX_LINES_AHEAD)
        self.tty = sys.stdin.isatty()
        if self.tty:
            import readline  # noqa: F401  (input() then offers line editing and history)
        threading.Thread(target=self._read, name="pchat-chat-input", daemon=True).start()

    def _read(self) -> None:
        raw = b""
        while True:
            if self.tty:
                try:
                    line: str | None = input()
                except (EOFError, OSError, ValueError, KeyboardInterrupt):
                    line = None
            else:
                line, raw = _raw_line(raw)
            try:
                asyncio.run_coroutine_threadsafe(self._queue.put(line), self._loop).result()
            except (RuntimeError, asyncio.CancelledError):  # the loop is gone: we are exiting
                return
            if line is None:
                return

    async def next(self) -> str | None:
        return await self._queue.get()


def _raw_line(buffered: bytes) -> tuple[str | None, bytes]:
    """One line from file descriptor 0, with os.read: no lock of sys.stdin is held, so the
    interpreter can exit while this thread waits. Returns the line (None at the end) and
    what was read beyond it."""
    while b"\n" not in buffered and len(buffered) < MAX_LINE_BYTES:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            return (buffered.decode(errors="replace") if buffered else None), b""
        buffered += chunk
    line, _, rest = buffered[:MAX_LINE_BYTES].partition(b"\n")
    rest = rest + buffered[MAX_LINE_BYTES:] if len(buffered) > MAX_LINE_BYTES else rest
    return line.decode(errors="replace"), rest
