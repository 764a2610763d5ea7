"""The compliance file store: copies of uploaded files kept until they are archived.

With compliance on, an upload's bytes are kept here in the upload's own path, before its
record and FILEUPLOAD event are written (shards/web/files.py): so a recorded upload always
has its file, even if the file, its post or its room is deleted before the relay moves
the event, and after ``kill -9``. The relay keeps them again before an event moves into
the compliance store (events of older versions), which finds the finished copy and does
nothing. A copy is a hard link where the two folders share a file system (a stored file
is never changed once named, so a second name is as good as a copy, and costs no bytes
or time), else a copy (copy, fsync, rename). Once every adapter has archived the event's
batch, the copy's name is queued in the compliance store and removed
(``ComplianceStore.files_to_remove``). Calls are blocking: callers run them off the loop.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from core.files.directory import fsync_folder
from core.files.names import file_id_of
from core.files.stale import Page, stale_page


def check_stored_name(name: str) -> str:
    """A name the file store gives (core/files/names.py), never a path: an event's payload
    cannot name a file outside either directory."""
    if file_id_of(name) is None:
        raise ValueError(f"not a stored file name: {name[:80]!r}")
    return name


def temp_of(target: Path) -> Path:
    """Where ``target`` is written before its rename (a crash may leave it behind)."""
    return target.with_name(f".{target.name}.tmp")


def copy_of_temp(name: str) -> str | None:
    """The stored name whose copy the temp ``name`` was to become (``temp_of``); None when
    ``name`` is no such temp."""
    if name.startswith(".") and name.endswith(".tmp") and file_id_of(name[1:-4]):
        return name[1:-4]
    return None


def replace_durably(target: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Temp file (``fill`` writes it), fsync, rename, fsync of the folder: ``target`` is
    whole or absent, and a reader sees all of it or nothing."""
    tmp = temp_of(target)
    with open(tmp, "wb") as dst:
        fill(dst)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, target)
    fsync_folder(target.parent)


def copy_durably(source: Path, target: Path) -> None:
    """``source`` copied to ``target``, which is whole or absent (`replace_durably`)."""
    with open(source, "rb") as src:
        # 1 MiB at a time: bounded memory
        replace_durably(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))


def _linked(source: Path, target: Path) -> bool:
    """``target`` made a durable second name of ``source``; False where the file system
    cannot (another device, or no hard links): the caller copies instead."""
    try:
        os.link(source, target)
    except FileExistsError:
        return True  # made by another process meanwhile: whole, as every name here is
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    fsync_folder(target.parent)
    temp_of(target).unlink(missing_ok=True)  # a copy a crash cut short: not needed now
    return True


class ComplianceFileStore:
    """One directory of copies, named as in the file store."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / check_stored_name(name)

    def keep(self, source: Path, name: str) -> bool:
        """Keeps ``source`` as ``name`` (a hard link, else a copy) unless a finished copy
        is there; False when ``source`` is gone (deleted before it could be kept)."""
        target = self.path(name)
        if target.exists():
            return True  # a link or a rename is atomic: an existing copy is a whole one
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            if not _linked(source, target):
                copy_durably(source, target)
        except FileNotFoundError:
            if source.exists():
                raise  # the folder vanished under us: an error, not a missing file
            return False
        return True

    def remove(self, names: list[str]) -> None:
        """Unlinks copies, and the temps of copies (``.<name>.tmp``) the sweep found."""
        for name in names:
            copy = copy_of_temp(name)
            try:
                target = temp_of(self.path(copy)) if copy else self.path(name)
            except ValueError:
                continue  # never stored under a bad name: nothing to remove
            target.unlink(missing_ok=True)

    def stale(self, older_than_s: float, after: str, limit: int) -> Page:
        """A page of copies (and temps a crash left) whose status has not changed for
        ``older_than_s`` (core/files/stale.py): a copy's second name is a link, which
        changes the file's status time, not its modification time."""
        page = stale_page(self.folder, older_than_s, after, limit, changed=True)
        mine = [n for n in page.names if file_id_of(n) or copy_of_temp(n)]
        return Page(mine, page.resume)
