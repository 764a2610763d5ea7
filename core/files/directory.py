"""The directory backend of the file store: one file per stored name in one directory.

Every disk call runs in a thread (asyncio.to_thread), never on the event loop. An
upload is written to ``<name>.part``, fsynced, renamed to ``<name>`` and the directory
fsynced, so a name that exists always holds the whole file, even after kill -9 or a
power cut; the record is written after that (shards/web/files.py), so a recorded file
always has its bytes. The directory may be shared by a pool's hosts (NFS and the like
keep rename atomic within one directory).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from core.files.names import PART_SUFFIX, file_id_of
from core.files.stale import Page, stale_page


def fsync_folder(path: Path) -> None:
    """Make a rename in ``path`` durable (the compliance store's copies use it too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself is durable only once the directory is
    finally:
        os.close(fd)


class DirectoryWriter:
    __slots__ = ("_out", "_part", "_final", "_sha")

    def __init__(self, out: BinaryIO, part: Path, final: Path) -> None:
        self._out = out
        self._part = part
        self._final = final
        self._sha = hashlib.sha256()

    def _write(self, chunk: bytes) -> None:
        self._sha.update(chunk)  # hashlib releases the GIL on large buffers: off the loop
        self._out.write(chunk)

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._write, chunk)

    def _commit(self) -> None:
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        os.replace(self._part, self._final)
        fsync_folder(self._final.parent)

    async def commit(self) -> str:
        await asyncio.to_thread(self._commit)
        return self._sha.hexdigest()

    def _abort(self) -> None:
        self._out.close()
        self._part.unlink(missing_ok=True)

    async def abort(self) -> None:
        await asyncio.to_thread(self._abort)


class DirectoryStorage:
    """``FileStorage`` on a directory (created on first use)."""

    def __init__(self, directory: str) -> None:
        self._dir = Path(directory)

    def _open(self, name: str) -> tuple[BinaryIO, Path, Path]:
        self._dir.mkdir(parents=True, exist_ok=True)
        final = self._dir / name
        part = final.with_name(name + PART_SUFFIX)
        return part.open("xb"), part, final  # "x": a random name is never reused

    async def create(self, name: str) -> DirectoryWriter:
        return DirectoryWriter(*await asyncio.to_thread(self._open, name))

    def local_path(self, name: str) -> str:
        return str(self._dir / name)

    def _remove(self, names: list[str]) -> None:
        for name in names:
            (self._dir / name).unlink(missing_ok=True)

    async def remove(self, names: list[str]) -> None:
        if names:
            await asyncio.to_thread(self._remove, names)

    async def sweep(
        self, recorded: Callable[[str], Awaitable[bool]], stale_s: float, after: str, limit: int
    ) -> Page:
        page = await asyncio.to_thread(stale_page, self._dir, stale_s, after, limit)
        gone: list[str] = []
        for name in page.names:
            if name.endswith(PART_SUFFIX):
                stem = name[: -len(PART_SUFFIX)]
                if file_id_of(stem) is not None:
                    gone.append(name)  # an upload cut off: an upload in progress writes often
            elif file_id_of(name) is not None and not await recorded(name):
                gone.append(name)  # renamed, then the process died before the record
        await self.remove(gone)
        return Page(gone, page.resume)
