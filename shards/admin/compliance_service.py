"""`pchat admin compliance …`: the compliance service's backlog and a run on demand."""

from __future__ import annotations

import argparse
import time

from core.compliance.store import ComplianceStore
from core.config import Settings
from core.store.base import ChatStore
from shards.admin.command import Action, Out


async def _compliance_status(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Out
) -> bool:
    outbox, outbox_oldest = await store.outbox_stats()
    archive = ComplianceStore(s.compliance_store_path)
    try:
        status = archive.status()
    finally:
        archive.close()
    now = time.time()

    def age(ts_ms: int) -> str:
        return f"{now - ts_ms / 1000:.0f} s" if ts_ms else "-"

    out(
        f"compliance: {'enabled' if s.compliance.enabled else 'disabled'}"
        f" (adapters: {', '.join(s.compliance.adapters)})"
    )
    out(f"outbox (chat store): {outbox} events, oldest {age(outbox_oldest)}")
    out(
        f"compliance store: {status.pending_events} events not archived,"
        f" oldest {age(status.oldest_ms)}"
    )
    if status.open_batch:
        out(
            f"batch {status.open_batch} being retried: {status.attempts} failed runs,"
            f" last error: {status.last_error}"
        )
    out(
        f"last archive run that succeeded: {age(status.last_success_ms)} ago"
        if status.last_success_ms
        else "no archive run has succeeded yet"
    )
    out(f"output: {s.compliance_output_dir}")
    if status.run_requested:
        out("a run is requested and waits for the service")
    return False


async def _compliance_run_now(
    store: ChatStore, s: Settings, a: argparse.Namespace, out: Out
) -> bool:
    archive = ComplianceStore(s.compliance_store_path)
    try:
        archive.request_run()
    finally:
        archive.close()
    out("run requested; the active compliance service starts it within a second")
    return False


ACTIONS: dict[tuple[str, str], Action] = {
    ("compliance", "status"): _compliance_status,
    ("compliance", "run-now"): _compliance_run_now,
}
