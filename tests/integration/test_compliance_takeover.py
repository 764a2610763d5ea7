"""A compliance service dies mid-batch and another one (another host's, on the shared
store) takes over: the batch is finished exactly once, and the old one, if it wakes up,
changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.compliance.adapters import conversations
from core.compliance.store.base import Fenced
from shards.compliance import LEASE_KEY
from shards.worker.runner import run_worker
from tests.integration.test_compliance import activity, archive, compliance_settings, drain


async def test_a_batch_left_by_a_dead_service_is_finished_once_by_the_next(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    settings = compliance_settings(tmp_path, redis_url, store_url, lease_ttl_s=1.0)
    async with run_worker(settings) as worker:
        await activity(worker)
    old, old_store = await archive(settings)
    rows = await old._chat.outbox_head(1000)
    await drain(old)
    batch = await old_store.claim_batch(100_000)
    assert batch is not None
    out = Path(settings.compliance_output_dir)
    out.mkdir(parents=True)
    old._adapters[0].write(batch.id, conversations(batch.events), out)  # then kill -9
    redis = aioredis.Redis.from_url(redis_url)
    await redis.delete(LEASE_KEY)  # the dead service's lease has run out
    new, new_store = await archive(settings)
    await new_store.request_run()
    stop = asyncio.Event()
    task = asyncio.create_task(new.run(redis, stop))
    try:
        for _ in range(100):
            status = await new_store.status()
            if status.pending_events == 0 and status.last_success_ms:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the new service did not finish the batch: {status}")
    finally:
        stop.set()
        await task
        await redis.delete(LEASE_KEY)
        await redis.aclose()
    events = [
        json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()
    ]
    assert sorted(e["id"] for e in events) == sorted(r.id for r in rows)  # each once
    assert len(list(out.glob("*.xml"))) == 1  # the old service's file, replaced whole
    for late in (old_store.batch_done(batch.id, []), old_store.insert(rows)):
        with pytest.raises(Fenced):
            await late  # the old service wakes up: it cannot put archived rows back
    assert (await new_store.status()).pending_events == 0
