"""Admission: the bounded number of INFOs a worker has accepted and not yet answered.

Every admitted request holds a ``Ticket``. The place is given back when the last hold
on the ticket is released, and every hold is released by a ``with`` block, a
``finally`` or a task's done callback, so no path (an exception, a cancelled task, a
closed session) can keep a place for good (ARCHITECTURE invariant 4).
"""

from __future__ import annotations

from collections.abc import Callable


class Admission:
    """The worker's admission queue: ``admit()`` or 503."""

    __slots__ = ("cap", "inflight", "_on_reject")

    def __init__(self, cap: int, on_reject: Callable[[], None]) -> None:
        self.cap = cap  # limits.admission_queue: about 0.2 s of work (core/config.py)
        self.inflight = 0
        self._on_reject = on_reject

    def admit(self) -> Ticket | None:
        """A ticket holding one place, or None when the queue is full (answer 503)."""
        if self.inflight >= self.cap:
            self._on_reject()
            return None
        self.inflight += 1
        return Ticket(self)


class Ticket:
    """One admitted request. Created with one hold (the admitting ``with`` block's);
    whoever goes on with the request takes a hold of its own before that block ends."""

    __slots__ = ("_admission", "_holds")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._holds = 1

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def done(self) -> bool:
        return self._holds == 0

    def hold(self) -> Callable[..., None]:
        """Another hold; returns its one-shot release (usable as a done callback)."""
        if self._holds == 0:
            raise RuntimeError("ticket already gave its place back")
        self._holds += 1
        released = False

        def release(*_: object) -> None:
            nonlocal released
            if not released:
                released = True
                self.release()

        return release

    def release(self) -> None:
        if self._holds == 0:
            return
        self._holds -= 1
        if self._holds == 0:
            self._admission.inflight -= 1
