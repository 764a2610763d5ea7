"""What the compliance e2e tests share: waiting for a drained backlog, reading the archive."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.compliance.store.base import ComplianceStore
from core.store.base import ChatStore

DRAIN_S = 30.0  # a killed service restarts and archives the rest well within this


async def wait_drained(
    chat: ChatStore,
    archive: ComplianceStore,
    run_now: Callable[[], Awaitable[object]],
    *,
    files: bool = False,
) -> None:
    """Asks for a run (``run_now``) each second until the chat store's outbox and the
    compliance store are empty (with ``files``, the file copies removed too)."""
    deadline = time.monotonic() + DRAIN_S
    while True:
        await run_now()
        await asyncio.sleep(1.0)
        outbox, _ = await chat.outbox_stats()
        status = await archive.status()
        if outbox == 0 and status.pending_events == 0 and (not files or not status.files_to_remove):
            return
        assert time.monotonic() < deadline, f"backlog not drained: {outbox}, {status}"


def archived_events(out: Path) -> list[dict[str, Any]]:
    """Every event the JSON Lines adapter wrote into ``out``, in file order."""
    return [
        json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()
    ]
