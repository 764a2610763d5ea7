"""ComplianceStore contract on both backends (real SQLite file, real PostgreSQL database)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.compliance.store.base import ComplianceStore, Fenced
from core.compliance.store.registry import make_compliance_store
from core.compliance.store.sqlite import UPLOADED
from core.config import load_settings
from core.store.base import OutboxRecord


@pytest.fixture
def compliance_url(store_url: str, tmp_path: Path) -> str:
    """PostgreSQL: the fresh chat store database (its tables are prefixed); SQLite: a file."""
    return store_url if store_url.startswith("postgres") else f"sqlite://{tmp_path / 'comp.db'}"


@pytest.fixture
async def archive(compliance_url: str) -> AsyncIterator[ComplianceStore]:
    store = make_compliance_store(compliance_url)
    await store.open()
    await store.take_over()
    try:
        yield store
    finally:
        await store.close()


def rows(*ids: int) -> list[OutboxRecord]:
    return [OutboxRecord(id=i, kind="CHAT", payload=f'{{"n":{i}}}', ts_ms=1000 + i) for i in ids]


async def test_insert_is_idempotent_by_outbox_id(archive: ComplianceStore) -> None:
    await archive.insert(rows(1, 2, 3))
    await archive.insert(rows(2, 3, 4))  # a relay that crashed before deleting the outbox rows
    status = await archive.status()
    assert (status.pending_events, status.oldest_ms) == (4, 1001)


async def test_an_unfinished_batch_is_claimed_again_unchanged(archive: ComplianceStore) -> None:
    await archive.insert(rows(1, 2, 3))
    first = await archive.claim_batch(2)
    assert first is not None and [e.id for e in first.events] == [1, 2]
    await archive.insert(rows(0))  # arrives late with a lower id: not added to the open batch
    again = await archive.claim_batch(10)
    assert again == first  # a run that crashed is finished under the same batch
    await archive.batch_failed(first.id, "xml: disk full " + "x" * 5000)
    status = await archive.status()
    assert (status.open_batch, status.attempts) == (first.id, 1)
    assert status.last_error.startswith("xml: disk full") and len(status.last_error) == 1000
    await archive.batch_done(first.id, [])
    second = await archive.claim_batch(10)
    assert second is not None and second.id > first.id
    assert [e.id for e in second.events] == [0, 3]
    await archive.batch_done(second.id, [])
    assert await archive.claim_batch(10) is None
    status = await archive.status()
    assert status.pending_events == 0 and status.open_batch == 0 and status.last_success_ms


async def test_concurrent_claims_make_one_batch(compliance_url: str) -> None:
    """Claims racing on two PostgreSQL connections never split or double the free events."""
    store = make_compliance_store(compliance_url, (2, 2))
    await store.open()
    try:
        await store.take_over()
        await store.insert(rows(*range(1, 201)))
        claims = await asyncio.gather(*(store.claim_batch(1000) for _ in range(4)))
        assert all(c is not None for c in claims)
        assert len({c.id for c in claims if c}) == 1
        assert all(len(c.events) == 200 for c in claims if c)
    finally:
        await store.close()


async def test_a_service_that_lost_the_store_changes_nothing(compliance_url: str) -> None:
    """A service paused past its lease wakes up after another one archived its rows: its
    late copy of those rows is refused, so they are never archived twice."""
    old, new = make_compliance_store(compliance_url), make_compliance_store(compliance_url)
    for s in (old, new):
        await s.open()
    try:
        assert await old.take_over() < await new.take_over()
        await new.insert(rows(1, 2))
        batch = await new.claim_batch(10)
        assert batch is not None
        await new.batch_done(batch.id, [])
        refused: list[Any] = [
            old.insert(rows(1, 2)),
            old.claim_batch(10),
            old.batch_failed(batch.id, "late"),
            old.batch_done(batch.id, ["f"]),
        ]
        for call in refused:
            with pytest.raises(Fenced):
                await call
        status = await new.status()
        assert (status.pending_events, status.files_to_remove) == (0, 0)
        never = make_compliance_store(compliance_url)  # never took over: may only read
        await never.open()
        with pytest.raises(Fenced):
            await never.insert(rows(3))
        await never.close()
    finally:
        for s in (old, new):
            await s.close()


async def test_archived_copies_are_queued_for_removal(archive: ComplianceStore) -> None:
    await archive.insert(rows(1, 2))
    batch = await archive.claim_batch(10)
    assert batch is not None
    await archive.batch_done(batch.id, ["a.txt", "b.pdf"])
    await archive.batch_done(batch.id, ["a.txt", "b.pdf"])  # repeated after a crash: no copy
    assert (await archive.status()).files_to_remove == 2
    assert await archive.files_to_remove(1) == ["a.txt"]
    await archive.files_removed(["a.txt"])
    assert await archive.files_to_remove(10) == ["b.pdf"]
    await archive.files_removed(["b.pdf"])
    assert await archive.files_to_remove(10) == []


async def test_copies_referred_are_those_of_pending_uploads_and_the_queue(
    archive: ComplianceStore,
) -> None:
    pending, queued, loose = "Ab_" + "x" * 21 + ".pdf", "Q" * 24 + ".txt", "L" * 24
    lookalike = "Ab_" + "_" * 21 + ".pdf"  # "_" is LIKE's wildcard: it must not match
    upload = OutboxRecord(id=1, kind="FILEUPLOAD", payload=f'{{"text":"{pending}"}}', ts_ms=1)
    chat = OutboxRecord(id=2, kind="CHAT", payload=f'{{"text":"{loose}"}}', ts_ms=2)
    await archive.insert([upload, chat])
    assert await archive.files_referred([pending, queued, loose, lookalike]) == {pending}
    batch = await archive.claim_batch(10)
    assert batch is not None
    await archive.batch_done(batch.id, [queued])  # the pending upload's batch, archived
    assert await archive.files_referred([pending, queued, loose, lookalike]) == {queued}
    await archive.files_removed([queued])
    assert await archive.files_referred([pending, queued, loose]) == set()
    assert await archive.files_referred([]) == set()


async def test_run_requests_and_reopen_keep_rows(compliance_url: str) -> None:
    store = make_compliance_store(compliance_url)
    await store.open()
    await store.open()  # a second open is a no-op
    await store.take_over()
    await store.insert(rows(7))
    await store.request_run()
    await store.request_run()
    await store.close()
    store = make_compliance_store(compliance_url)
    await store.open()
    assert (await store.status()).run_requested
    assert await store.take_run_request() is True
    assert await store.take_run_request() is False
    assert (await store.status()).pending_events == 1
    await store.close()


async def test_pool_size_from_settings_reaches_the_pool(compliance_url: str) -> None:
    if not compliance_url.startswith("postgres"):
        pytest.skip("SQLite has one connection; no pool to size")
    env = {
        "PCHAT_COMPLIANCE__STORE": compliance_url,
        "PCHAT_COMPLIANCE__STORE_POOL_MIN": "2",
        "PCHAT_COMPLIANCE__STORE_POOL_MAX": "3",
    }
    settings = load_settings(env=env)
    assert settings.compliance_store_url == compliance_url
    store = make_compliance_store(settings.compliance_store_url, settings.compliance_store_pool)
    await store.open()
    try:
        pool: Any = store._pool  # type: ignore[attr-defined]
        assert (pool.get_min_size(), pool.get_max_size()) == (2, 3)
    finally:
        await store.close()


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="sqlite:, postgresql:, postgres:") as info:
        make_compliance_store("mysql://u:secret@h/db")
    assert "secret" not in str(info.value)


async def test_the_uploads_lookup_reads_their_index_not_every_event(tmp_path: Path) -> None:
    store = make_compliance_store(f"sqlite://{tmp_path / 'comp.db'}")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "comp.db") as conn:
        plan = " ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {UPLOADED}", ("x",)))
    assert "events_uploads" in plan, plan
