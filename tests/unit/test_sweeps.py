"""shards/sweeps.py: a sweep runs page after page, and a failing page ends only its round."""

from __future__ import annotations

import asyncio

import pytest

from core.files import stale
from core.files.stale import Page
from shards.sweeps import sweep_forever


async def test_pages_follow_each_other_and_a_failure_starts_the_round_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(stale, "PAGE_PAUSE_S", 0.001)
    monkeypatch.setattr(stale, "SWEEP_EVERY_S", 0.002)
    asked: list[str] = []
    answers: list[Page | Exception] = [Page(["a"], "a"), Page([], ""), Page(["b"], "b"),
                                       OSError("disk gone"), Page([], "")]  # fmt: skip
    done = asyncio.Event()

    async def sweep(after: str) -> Page:
        asked.append(after)
        answer = answers.pop(0)
        if not answers:
            done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    task = asyncio.create_task(sweep_forever(sweep, "test folder"))
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asked == ["", "a", "", "b", ""]
    assert "test folder sweep failed" in caplog.text
