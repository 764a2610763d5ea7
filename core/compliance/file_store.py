"""The compliance file store: copies of uploaded files kept until they are archived.

A FILEUPLOAD event moves into the compliance store only after its file's bytes are
copied here (copy, fsync, rename, then the store's commit), so a recorded upload always
has its file, even after ``kill -9``; a copy repeated after a crash finds the finished
copy and does nothing. Once every adapter has archived the event's batch, the copy's
name is queued in the compliance store and removed (``ComplianceStore.files_to_remove``).
Calls are blocking: the service runs them off its event loop.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from core.files.directory import fsync_folder
from core.files.names import file_id_of


def check_stored_name(name: str) -> str:
    """A name the file store gives (core/files/names.py), never a path: an event's payload
    cannot name a file outside either directory."""
    if file_id_of(name) is None:
        raise ValueError(f"not a stored file name: {name[:80]!r}")
    return name


def replace_durably(target: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Temp file (``fill`` writes it), fsync, rename, fsync of the folder: ``target`` is
    whole or absent, and a reader sees all of it or nothing."""
    tmp = target.with_name(f".{target.name}.tmp")
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


class ComplianceFileStore:
    """One directory of copies, named as in the file store."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / check_stored_name(name)

    def keep(self, source: Path, name: str) -> bool:
        """Copies ``source`` in as ``name`` unless a finished copy is there; False when
        ``source`` is gone (the file was deleted before its event moved)."""
        target = self.path(name)
        if target.exists():
            return True  # a rename is atomic: an existing copy is a whole one
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            copy_durably(source, target)
        except FileNotFoundError:
            if source.exists():
                raise  # the folder vanished under us: an error, not a missing file
            return False
        return True

    def remove(self, names: list[str]) -> None:
        for name in names:
            try:
                self.path(name).unlink(missing_ok=True)
            except ValueError:
                continue  # never stored under a bad name: nothing to remove
