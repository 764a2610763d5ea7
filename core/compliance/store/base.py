"""The compliance store's interface (store layer, HS-3): activity waiting for the adapters.

The invariants every backend keeps, each inside one transaction:

* rows keep their outbox id as key, so moving the same outbox row twice stores it once;
* a run claims its events as a batch before any adapter writes, and a batch's events
  never change; a run that crashed is finished under the same batch (same file names),
  so an archive never holds an event twice;
* a batch's rows are deleted only when every adapter has succeeded;
* every change checks the caller's epoch (``take_over``): a service that lost its lease
  and woke up later changes nothing, so it cannot copy back rows already archived.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from core.errors import StoreError
from core.store.base import OutboxRecord


class Fenced(StoreError):
    """Another compliance service has taken over since this one's ``take_over``."""


class Batch(msgspec.Struct, frozen=True):
    id: int
    created_ms: int
    attempts: int
    events: list[OutboxRecord]


class Status(msgspec.Struct, frozen=True):
    pending_events: int  # in the compliance store, not yet archived
    oldest_ms: int  # ts of the oldest of them (0: none)
    open_batch: int  # the batch being retried (0: none)
    attempts: int
    last_error: str
    last_success_ms: int
    run_requested: bool
    files_to_remove: int = 0  # compliance file store copies archived, not yet removed

    @classmethod
    def of(cls, pending: Any, oldest: Any, open_row: Any, last: Any, requested: Any,
           gc: Any) -> Status:  # fmt: skip
        """From a backend's raw answers: the counts, the oldest ts, the open batch's (id,
        attempts, last_error) row, the last success, the run_now flag's row, the gc count."""
        return cls(
            pending_events=int(pending),
            oldest_ms=int(oldest or 0),
            open_batch=int(open_row[0]) if open_row else 0,
            attempts=int(open_row[1]) if open_row else 0,
            last_error=str(open_row[2]) if open_row else "",
            last_success_ms=int(last or 0),
            run_requested=requested is not None,
            files_to_remove=int(gc),
        )


class ComplianceStore(Protocol):
    """What the compliance service and ``pchat admin compliance`` need.

    Driver, disk and network failures surface as ``core.errors.StoreError``; a change
    made after another service's ``take_over`` raises ``Fenced`` and changes nothing.
    """

    async def open(self) -> None:
        """Connects and creates or migrates the schema; a second call is a no-op."""

    async def close(self) -> None: ...

    async def take_over(self) -> int:
        """Starts a new epoch and makes it this instance's; returns it. Called by the
        service each time it wins the lease; older epochs are fenced off from then on."""

    async def insert(self, rows: list[OutboxRecord]) -> None:
        """Idempotent by outbox id: a relay that crashed before deleting re-inserts nothing."""

    async def claim_batch(self, max_events: int) -> Batch | None:
        """The unfinished batch if there is one, else a new one of the oldest free events."""

    async def batch_failed(self, batch_id: int, error: str) -> None: ...

    async def batch_done(self, batch_id: int, files: list[str]) -> None:
        """Every adapter succeeded: the batch's rows go (ARCHITECTURE §5), and ``files``
        (the compliance file store copies of its uploads) are queued for removal."""

    async def files_to_remove(self, limit: int) -> list[str]:
        """Up to ``limit`` queued copies, oldest first."""

    async def files_removed(self, names: list[str]) -> None:
        """The copies are gone from disk: their queue entries go too."""

    async def files_referred(self, names: list[str]) -> set[str]:
        """Those of ``names`` (stored file names) that a pending FILEUPLOAD event or the
        removal queue still refers to: their compliance copies must stay."""

    async def request_run(self) -> None:
        """`pchat admin compliance run-now`: the service runs its adapters at its next look."""

    async def take_run_request(self) -> bool: ...

    async def status(self) -> Status: ...
