"""Compliance: every activity recorded once, archived once, valid XML, failures retried."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
from lxml import etree

from core.compliance.store.base import ComplianceStore
from core.compliance.store.registry import make_compliance_store
from core.compliance.xml_adapter import SCHEMA
from core.config import ComplianceSettings, Settings
from core.rooms.management import ADMIN, CategoryChange, Management, RoomChange
from core.store.registry import make_store
from shards.compliance import ComplianceService
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, add_user, make_settings, signed_in


def compliance_settings(
    tmp_path: Path, redis_url: str, store_url: str, **options: object
) -> Settings:
    """Both stores on the backend under test: on PostgreSQL the compliance store shares the
    chat store's fresh database (its tables are prefixed), on SQLite it is its own file."""
    base = msgspec.structs.replace(make_settings(tmp_path, redis_url), store=store_url)
    fields: dict[str, object] = {"enabled": True, "adapters": ["xml", "jsonl"], **options}
    if store_url.startswith("postgres"):
        fields.setdefault("store", store_url)
    return msgspec.structs.replace(base, compliance=msgspec.convert(fields, ComplianceSettings))


async def archive(settings: Settings) -> tuple[ComplianceService, ComplianceStore]:
    """A compliance service that holds the store (as after winning the lease)."""
    chat = make_store(settings.store_url)
    await chat.open()
    store = make_compliance_store(settings.compliance_store_url)
    await store.open()
    service = ComplianceService(settings, chat, store)
    await service.take_over()
    return service, store


async def drain(service: ComplianceService) -> None:
    while await service.relay_once():
        pass


def archived(settings: Settings) -> list[dict[str, object]]:
    out = Path(settings.compliance_output_dir)
    return [
        json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()
    ]


async def activity(worker: RunningWorker) -> dict[str, str]:
    """Every command path that touches a room, once; returns the rooms' URIs."""
    for name in ("alice", "bob"):
        await add_user(worker.store, name)
    mgmt = Management(worker.store)
    await mgmt.create_category(ADMIN, "General", CategoryChange())
    await mgmt.create_category(ADMIN, "Ephemeral", CategoryChange(history=False))
    rooms = {}
    for name, cat in (("Main", "General"), ("Other", "General"), ("Fleeting", "Ephemeral")):
        room = await mgmt.create_room(ADMIN, name, cat, RoomChange(privacy="open"))
        rooms[name] = f"ma-chan://{DOMAIN}/{room.id}"
    alice, bob = await signed_in(worker, "alice"), await signed_in(worker, "bob")
    await alice.join(rooms["Main"])  # JOIN
    await bob.command(
        "cmd:bjoin", "".join(f'<chanib uri="{rooms[r]}"/>' for r in ("Main", "Other"))
    )  # 2 JOIN
    await alice.post(rooms["Main"], "hello <archive>")  # CHAT in the post's transaction
    await bob.history(rooms["Main"])  # BACKCHAT (last)
    await bob.history(rooms["Main"], query='<search text="hello" cnt="5"/>')  # BACKCHAT (search)
    await alice.join(rooms["Fleeting"])  # JOIN
    await alice.post(rooms["Fleeting"], "not kept, still archived")  # CHAT without history
    await bob.part(rooms["Other"])  # PART
    await alice.close()  # BYE: PART of Main and Fleeting
    await bob.close()  # BYE: PART of Main
    return rooms


async def test_every_event_is_archived_exactly_once(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    settings = compliance_settings(tmp_path, redis_url, store_url)
    async with run_worker(settings) as worker:
        rooms = await activity(worker)
    service, store = await archive(settings)  # stopped: the parts of closed sessions are in
    await drain(service)
    assert await service.run_adapters()
    events = archived(settings)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was archived twice"
    kinds = sorted(
        (e["kind"], e["user"].removeprefix("sip:").split("@")[0], e["room_id"]) for e in events
    )  # type: ignore[union-attr]
    main, other, fleeting = (rooms[r].rpartition("/")[2] for r in ("Main", "Other", "Fleeting"))
    assert kinds == sorted(
        [
            ("JOIN", "alice", main), ("JOIN", "bob", main), ("JOIN", "bob", other),
            ("CHAT", "alice", main), ("BACKCHAT", "bob", main), ("BACKCHAT", "bob", main),
            ("JOIN", "alice", fleeting), ("CHAT", "alice", fleeting), ("PART", "bob", other),
            ("PART", "alice", main), ("PART", "alice", fleeting), ("PART", "bob", main),
        ]
    )  # fmt: skip
    chats = {e["text"]: e for e in events if e["kind"] == "CHAT"}
    assert chats["hello <archive>"]["msgid"] == 1 and chats["hello <archive>"]["session"]
    assert (await store.status()).pending_events == 0  # deleted once archived
    # the XML archive holds the same events and matches its schema
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    [xml_file] = Path(settings.compliance_output_dir).glob("*.xml")
    doc = etree.parse(str(xml_file))
    schema.assertValid(doc)
    messages = doc.findall(".//Messages/Message")
    assert len(messages) == len(events)
    chat = [
        m for m in messages if m.get("type") == "CHAT" and m.get("content") == "hello <archive>"
    ]
    assert chat and chat[0].find("Sender").get("uri") == f"sip:alice@{DOMAIN}"  # type: ignore[union-attr]
    channels = {c.get("name") for c in doc.findall(".//Channel")}
    assert channels == {"Main", "Other", "Fleeting"}


async def test_compliance_cannot_be_bypassed_by_any_room_path(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    """With compliance on, the store never holds a post without its CHAT row, and each
    join, part and history read is in the outbox before its reply."""
    settings = compliance_settings(tmp_path, redis_url, store_url)
    async with run_worker(settings) as worker:
        for name in ("alice",):
            await add_user(worker.store, name)
        mgmt = Management(worker.store)
        await mgmt.create_category(ADMIN, "General", CategoryChange())
        room = await mgmt.create_room(ADMIN, "Watched", "General", RoomChange(privacy="open"))
        uri = f"ma-chan://{DOMAIN}/{room.id}"
        alice = await signed_in(worker, "alice")
        steps = [
            ("JOIN", alice.join(uri)),
            ("CHAT", alice.post(uri, "one")),
            ("BACKCHAT", alice.history(uri, query='<before msgid="2" cnt="1"/>')),
            ("BACKCHAT", alice.history(uri, query='<after msgid="0" cnt="1"/>')),
            ("PART", alice.part(uri)),
        ]
        for kind, step in steps:
            before = len(await worker.store.outbox_head(1000))
            await step  # the reply has come: its record must already be durable
            rows = await worker.store.outbox_head(1000)
            assert [r.kind for r in rows[before:]] == [kind]
        await alice.close()


async def test_a_failing_adapter_keeps_rows_and_recovers_exactly_once(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the archive folder should be")
    settings = compliance_settings(tmp_path, redis_url, store_url, output_dir=str(blocked / "out"))
    async with run_worker(settings) as worker:
        await activity(worker)
        service, store = await archive(settings)
        await drain(service)
        pending = (await store.status()).pending_events
        assert pending > 0
        for attempt in range(3):
            assert not await service.run_adapters()
            status = await store.status()
            assert status.pending_events == pending and status.attempts == attempt + 1
            assert "jsonl" in status.last_error or "xml" in status.last_error
        blocked.unlink()  # the operator fixes the folder
        await worker.store.add_outbox([])  # nothing new meanwhile
        assert await service.run_adapters()
    events = archived(settings)
    assert len(events) == pending == len({e["id"] for e in events})
    assert len(list(Path(settings.compliance_output_dir).glob("*.xml"))) == 1  # one batch, one file
    assert (await store.status()).pending_events == 0


async def test_a_crash_between_copy_and_delete_duplicates_nothing(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    settings = compliance_settings(tmp_path, redis_url, store_url)
    async with run_worker(settings) as worker:
        await activity(worker)
    service, store = await archive(settings)  # the worker has stopped: every record is in
    rows = await service._chat.outbox_head(1000)
    await store.insert(rows)  # copied, then "killed" before the outbox rows were deleted
    await drain(service)  # the next service copies them again and deletes them
    batch = await store.claim_batch(100_000)
    assert batch is not None
    del batch  # claimed, then "killed" before the adapters ran
    assert await service.run_adapters()  # the same batch is finished, not a new one
    events = archived(settings)
    assert sorted(e["id"] for e in events) == sorted(r.id for r in rows)
    assert len(list(Path(settings.compliance_output_dir).glob("*.jsonl"))) == 1


async def test_admin_status_and_run_now(tmp_path: Path, redis_url: str, store_url: str) -> None:
    """Without a service holding the lease, status says so, and run-now says the request
    waits; with one (the e2e test in tests/e2e/test_admin.py), run-now names it."""
    import argparse

    from shards import admin

    settings = compliance_settings(tmp_path, redis_url, store_url)
    async with run_worker(settings) as worker:
        await activity(worker)
    lines: list[str] = []
    await admin.run(settings, argparse.Namespace(object="compliance", op="status"), lines.append)
    assert lines[0] == "compliance service: not running (pchat serve --compliance runs it)"
    assert any(
        line.startswith("outbox (chat store): ") and not line.startswith("outbox (chat store): 0 ")
        for line in lines
    )
    if not store_url.startswith("postgres"):
        assert not os.path.exists(tmp_path / "compliance.db")  # status creates none
    await admin.run(settings, argparse.Namespace(object="compliance", op="run-now"), lines.append)
    assert lines[-1].startswith("run requested, but no compliance service runs now")
    service, store = await archive(settings)
    assert await store.take_run_request() is True  # it waits for the next service
    assert await store.take_run_request() is False
