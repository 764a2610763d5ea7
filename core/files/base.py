"""The file store's interface: where uploaded files' bytes live (HS-3).

The chat store keeps each file's record (core/store/base.py ``FileRecord``); a
``FileStorage`` keeps the bytes under the file's stored name (core/files/names.py).
The directory backend (core/files/directory.py) is the default; a pool's hosts point
it at one shared directory, so a file uploaded through any host is served by all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from core.files.stale import Page


class FileWriter(Protocol):
    """One upload in progress. Until ``commit`` returns nothing is visible under the
    stored name, so a writer cut off at any point (kill -9 included) leaves no file
    that could be served; ``abort`` (or a later sweep) removes what it wrote."""

    async def write(self, chunk: bytes) -> None: ...
    async def commit(self) -> str:
        """The bytes are durable under the stored name when this returns: their sha256
        (hex), hashed as they were written (off the event loop, with the write)."""

    async def abort(self) -> None: ...


class FileStorage(Protocol):
    """Bytes by stored name. Names come from core/files/names.py, never from a user."""

    async def create(self, name: str) -> FileWriter: ...
    def local_path(self, name: str) -> str:
        """Where the bytes can be read with the OS's file calls: downloads are sent from it
        with sendfile and Range support. (An object-store backend would add a streamed
        read here; none exists yet.)"""

    async def remove(self, names: list[str]) -> None:
        """Deletes those files; a name already gone is no error."""

    async def sweep(
        self, recorded: Callable[[str], Awaitable[bool]], stale_s: float, after: str, limit: int
    ) -> Page:
        """Deletes what a crash left, among the next ``limit`` names after ``after``
        untouched for ``stale_s`` (core/files/stale.py): unfinished uploads, and finished
        files whose record was never written (``recorded(name)`` false). Returns the names
        it deleted, and where the next page starts (``Page.resume``)."""
