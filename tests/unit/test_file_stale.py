"""Paged sweeps of a folder (core/files/stale.py), on a real directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.files.stale import PAGE_PAUSE_S, SWEEP_EVERY_S, Page, Rounds, stale_page


def _files(folder: Path, names: list[str], age_s: float) -> None:
    then = time.time() - age_s
    for name in names:
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (then, then))


def test_a_page_holds_at_most_the_limit_and_the_next_one_goes_on_after_it(tmp_path: Path) -> None:
    _files(tmp_path, ["e", "a", "d", "b", "c"], age_s=7200)
    (tmp_path / "sub").mkdir()  # not a file: never swept
    pages, after = [], ""
    while True:
        page = stale_page(tmp_path, 3600, after, 2)
        pages.append(page.names)
        after = page.resume
        if not after:
            break
    assert pages == [["a", "b"], ["c", "d"], ["e"]]


def test_a_full_last_page_is_followed_by_an_empty_one_that_ends_the_round(tmp_path: Path) -> None:
    _files(tmp_path, ["a", "b"], age_s=7200)
    assert stale_page(tmp_path, 3600, "", 2) == Page(["a", "b"], "b")
    assert stale_page(tmp_path, 3600, "b", 2) == Page([], "")


def test_a_page_examines_the_limit_of_names_and_asks_only_those_their_age(tmp_path: Path) -> None:
    # New files take a page's places: a page costs `limit` stat calls, not one per file
    # of the folder, and the round still reaches every name.
    _files(tmp_path, ["a", "c", "e"], age_s=7200)
    _files(tmp_path, ["b", "d"], age_s=60)
    assert stale_page(tmp_path, 3600, "", 2) == Page(["a"], "b")
    assert stale_page(tmp_path, 3600, "b", 2) == Page(["c"], "d")
    assert stale_page(tmp_path, 3600, "d", 2) == Page(["e"], "")


def test_only_files_untouched_long_enough_are_on_a_page(tmp_path: Path) -> None:
    _files(tmp_path, ["old"], age_s=7200)
    _files(tmp_path, ["new"], age_s=60)
    assert stale_page(tmp_path, 3600, "", 10).names == ["old"]
    # A hard link changes the status time, not the modification time: by status time
    # the old file has just changed.
    assert stale_page(tmp_path, 3600, "", 10, changed=True).names == []
    assert stale_page(tmp_path, -60, "", 10, changed=True).names == ["new", "old"]


def test_a_missing_folder_is_an_empty_round(tmp_path: Path) -> None:
    assert stale_page(tmp_path / "never", 0, "", 10) == Page([], "")


def test_rounds_go_on_soon_within_a_round_and_wait_between_rounds() -> None:
    rounds = Rounds()
    assert (rounds.after, rounds.due) == ("", 0.0)
    rounds.done(Page(["a", "b"], "b"), now=100.0)
    assert (rounds.after, rounds.due) == ("b", 100.0 + PAGE_PAUSE_S)
    rounds.done(Page(["c"], ""), now=102.0)
    assert (rounds.after, rounds.due) == ("", 102.0 + SWEEP_EVERY_S)
