"""PendingOutput: every connection written to is flushed once, whoever flushes first."""

from __future__ import annotations

import asyncio

from shards.worker.output import PendingOutput


class Conn:
    def __init__(self, name: str, log: list[str], *, broken: bool = False) -> None:
        self.name = name
        self._log = log
        self._broken = broken

    def flush(self) -> None:
        if self._broken:
            raise OSError("transport gone")
        self._log.append(f"flush {self.name}")

    def abort(self) -> None:
        self._log.append(f"abort {self.name}")


async def test_a_direct_flush_writes_now_and_the_scheduled_one_catches_later_output() -> None:
    log: list[str] = []
    output = PendingOutput()
    output.want_flush(Conn("a", log))
    output.flush_all()  # a delivery turn ended
    assert log == ["flush a"]
    output.want_flush(Conn("b", log))  # queued after it, in the same turn
    await asyncio.sleep(0)
    assert log == ["flush a", "flush b"]
    await asyncio.sleep(0)
    assert output.flushes == 2  # nothing flushed twice, no empty flush counted


async def test_one_failing_flush_aborts_that_connection_only() -> None:
    log: list[str] = []
    output = PendingOutput()
    output.want_flush(Conn("broken", log, broken=True))
    output.want_flush(Conn("fine", log))
    output.flush_all()
    assert log == ["abort broken", "flush fine"]
