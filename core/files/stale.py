"""Paged sweeps of a folder of stored files: a bounded page of old names per call.

Both file folders (the file store's and the compliance file store's) may hold more files
than fit in memory at once. A page is the ``limit`` smallest names after a cursor (a heap
over the folder read as a stream, names only), and only those are asked their age: one
page costs one pass over the folder's entries, ``limit`` stat calls and ``limit`` names
of memory, however large the folder is. The next page starts after the last name of this
one; a short page ends the round and the next round starts from the beginning. Calls are
blocking: callers run them off the loop.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

SWEEP_PAGE = 1000  # names examined per page: one short store lookup each, a few ms of disk
SWEEP_EVERY_S = 600.0  # between rounds: crash leftovers are rare and nothing waits for them
PAGE_PAUSE_S = 1.0  # between the pages of one round: the round goes on without hogging


class Page(msgspec.Struct, frozen=True):
    names: list[str]  # sorted: the old ones among the (at most limit) names examined
    resume: str  # where the next page starts; "": this page ended the round


def stale_page(folder: Path, older_than_s: float, after: str, limit: int,
               *, changed: bool = False) -> Page:  # fmt: skip
    """Of the ``limit`` smallest names after ``after`` of the regular files in ``folder``,
    those not touched for ``older_than_s``: by modification time, or by status change time
    with ``changed`` (a hard link's second name keeps the file's modification time, but the
    link itself is a status change)."""
    if not folder.is_dir():
        return Page([], "")
    with os.scandir(folder) as entries:
        examined = heapq.nsmallest(limit, _files_after(entries, after))
    cutoff = time.time() - older_than_s
    old = [name for name in examined if _changed_before(folder / name, cutoff, changed)]
    return Page(old, examined[-1] if len(examined) == limit else "")


def _files_after(entries: Iterable[os.DirEntry[str]], after: str) -> Iterator[str]:
    for entry in entries:  # is_file comes with the entry on Linux: no stat call
        if entry.name > after and entry.is_file(follow_symlinks=False):
            yield entry.name


def _changed_before(path: Path, cutoff: float, changed: bool) -> bool:
    try:
        info = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False  # removed since the folder was read
    return (info.st_ctime if changed else info.st_mtime) < cutoff


class Rounds:
    """When the next page of a sweep is due, and where it starts."""

    __slots__ = ("after", "due")

    def __init__(self, first_due: float = 0.0) -> None:
        self.after = ""
        self.due = first_due

    def done(self, page: Page, now: float) -> None:
        """Moves past ``page``: the next page soon, or the next round later."""
        self.after = page.resume
        self.due = now + (PAGE_PAUSE_S if page.resume else SWEEP_EVERY_S)
