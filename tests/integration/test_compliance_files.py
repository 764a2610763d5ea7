"""Compliance for files: the compliance file store, FILEUPLOAD/FILEDOWNLOAD in the XML
archive and its .ATTACH manifests, on both store backends.

The outbox rows are written through the chat store's API, as the file routes write them
(the upload's row with its file record, in one transaction; the download's before a byte
is sent), with the bytes in the file store's directory.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import pytest
from lxml import etree

from core.compliance.events import Activity, file_event, to_outbox
from core.compliance.xml_adapter import SCHEMA
from core.config import Settings
from core.files.names import new_file_id, stored_name
from core.store.base import ChatStore, FileRecord
from shards import compliance
from tests.conftest import DOMAIN
from tests.integration.test_compliance import archive, compliance_settings, drain

ALICE, BOB = f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"


async def upload(settings: Settings, chat: ChatStore, data: bytes, name: str) -> FileRecord:
    """What the upload route leaves: the bytes under their stored name, the record and its
    row (core/compliance/events.py file_event, as the route builds it)."""
    file_id = new_file_id()
    folder = Path(settings.files_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / stored_name(file_id, name)).write_bytes(data)
    record = FileRecord(
        id=file_id, room_id="lobby", name=name, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), uploader=ALICE, ts_ms=1_700_000_000_000,
    )  # fmt: skip
    await chat.add_file(record, [file_event("FILEUPLOAD", record, ALICE, record.ts_ms)])
    return record


async def download(chat: ChatStore, record: FileRecord, user: str) -> None:
    await chat.add_outbox([file_event("FILEDOWNLOAD", record, user, record.ts_ms + 1)])


def stored(record: FileRecord) -> str:
    return stored_name(record.id, record.name)


def copies(settings: Settings) -> list[str]:
    folder = Path(settings.compliance_files_dir)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def jsonl(settings: Settings) -> list[dict[str, object]]:
    out = Path(settings.compliance_output_dir)
    return [json.loads(x) for f in sorted(out.glob("*.jsonl")) for x in f.read_text().splitlines()]


async def test_every_transfer_is_archived_once_with_valid_xml_and_manifests(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    settings = compliance_settings(tmp_path, redis_url, store_url, xml_attach=True)
    service, store = await archive(settings)
    chat = service._chat
    files = {name: secrets.token_bytes(3000 + i) for i, name in enumerate(["a.pdf", "b <&>.txt"])}
    records = [await upload(settings, chat, data, name) for name, data in files.items()]
    for record in records:
        await download(chat, record, BOB)
    await download(chat, records[0], ALICE)
    await drain(service)
    assert copies(settings) == sorted(stored(r) for r in records)  # kept until archived
    for r in records:  # the file store may lose them now: the archive uses the copies
        (Path(settings.files_dir) / stored(r)).unlink()
    assert await service.run_adapters()
    assert await service.remove_archived_copies() == 2
    assert copies(settings) == [] and (await store.status()).files_to_remove == 0

    events = jsonl(settings)
    transfers = sorted((e["kind"], e["user"], e["text"]) for e in events)
    a, b = (stored(r) for r in records)
    assert transfers == sorted(
        [("FILEUPLOAD", ALICE, a), ("FILEUPLOAD", ALICE, b), ("FILEDOWNLOAD", BOB, a),
         ("FILEDOWNLOAD", BOB, b), ("FILEDOWNLOAD", ALICE, a)]
    )  # fmt: skip
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    out = Path(settings.compliance_output_dir)
    [xml_file] = out.glob("*.xml")
    doc = etree.parse(str(xml_file))
    schema.assertValid(doc)
    messages = [(m.get("type"), m.get("content")) for m in doc.findall(".//Messages/Message")]
    assert sorted(messages) == sorted((k, t) for k, _, t in transfers)  # stored names, once each
    manifests = sorted(out.glob("*.ATTACH"))
    assert len(manifests) == len(transfers)
    for path in manifests:
        manifest = etree.parse(str(path))
        schema.assertValid(manifest)
        root = manifest.getroot()
        record = next(r for r in records if stored(r) == root.get("content"))
        assert (root.get("fileName"), root.get("sha256")) == (record.name, record.sha256)
        if root.get("type") == "FILEUPLOAD":
            assert (out / root.get("archived", "")).read_bytes() == files[record.name]
        else:
            assert root.get("archived") is None
    ids = [int(p.stem.rpartition("-")[2]) for p in manifests]
    assert sorted(ids) == sorted(int(str(e["id"])) for e in events)  # one per transfer


async def test_a_recorded_upload_always_has_its_copy(
    tmp_path: Path, redis_url: str, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 mid-copy leaves a temp file and no event; the next relay copies again, then
    commits; a crash after the copy but before the commit copies nothing twice."""
    settings = compliance_settings(tmp_path, redis_url, store_url, xml_attach=True)
    service, store = await archive(settings)
    data = secrets.token_bytes(5000)
    record = await upload(settings, service._chat, data, "x.bin")
    folder = Path(settings.compliance_files_dir)
    folder.mkdir(parents=True)
    (folder / f".{stored(record)}.tmp").write_bytes(data[:100])  # the copy a kill cut short
    calls: list[str] = []
    keep = service._files.keep

    def counting_keep(source: Path, name: str) -> bool:
        calls.append(name)
        return keep(source, name)

    monkeypatch.setattr(service._files, "keep", counting_keep)
    rows = await service._chat.outbox_head(10)
    assert await service._keep_files(rows) == rows  # copied, then "killed" before the commit
    assert (folder / stored(record)).read_bytes() == data
    await drain(service)  # the next service: the finished copy stays, the event moves once
    assert calls == [stored(record), stored(record)] and copies(settings) == [stored(record)]
    assert (await store.status()).pending_events == 1
    (Path(settings.files_dir) / stored(record)).unlink()
    assert await service.run_adapters()
    assert (Path(settings.compliance_output_dir) / stored(record)).read_bytes() == data


async def test_copy_work_per_round_is_bounded(
    tmp_path: Path, redis_url: str, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compliance, "FILE_COPY_BYTES_PER_ROUND", 2500)
    monkeypatch.setattr(compliance, "FILE_REMOVALS_PER_ROUND", 2)
    settings = compliance_settings(tmp_path, redis_url, store_url)
    service, store = await archive(settings)
    chat = service._chat
    for i in range(5):
        record = await upload(settings, chat, secrets.token_bytes(1000), f"f{i}")
        await download(chat, record, BOB)
    # 1000 + 1000 < 2500 <= 3000: three uploads (and the downloads between) per round
    assert await service.relay_once() == 6
    assert len(copies(settings)) == 3
    assert await service.relay_once() == 4
    assert await service.relay_once() == 0
    assert await service.run_adapters()
    assert [await service.remove_archived_copies() for _ in range(4)] == [2, 2, 1, 0]
    assert copies(settings) == []
    assert len(jsonl(settings)) == 10


async def test_a_file_deleted_before_its_upload_moved_is_recorded_without_it(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    settings = compliance_settings(tmp_path, redis_url, store_url, xml_attach=True)
    service, store = await archive(settings)
    record = await upload(settings, service._chat, b"gone soon", "gone.txt")
    (Path(settings.files_dir) / stored(record)).unlink()  # e.g. its room was deleted at once
    await drain(service)
    assert await service.run_adapters()
    out = Path(settings.compliance_output_dir)
    [manifest] = out.glob("*.ATTACH")
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    schema.assertValid(etree.parse(str(manifest)))
    assert etree.parse(str(manifest)).getroot().get("archived") is None
    assert [e["kind"] for e in jsonl(settings)] == ["FILEUPLOAD"]


async def test_a_stored_name_that_is_a_path_is_never_followed(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    settings = compliance_settings(tmp_path, redis_url, store_url, xml_attach=True)
    service, store = await archive(settings)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the archive")
    bad = Activity(kind="FILEUPLOAD", user=ALICE, room_id="lobby", ts_ms=1, text="../secret.txt")
    await service._chat.add_outbox([to_outbox(bad)])
    await drain(service)  # recorded (the outbox never stalls on it), nothing copied
    assert copies(settings) == []
    assert await service.run_adapters()
    out = Path(settings.compliance_output_dir)
    assert not any("not for the archive" in p.read_text() for p in out.iterdir() if p.is_file())


def keep_copy(settings: Settings, service: compliance.ComplianceService, name: str) -> None:
    """What the upload route does before its record: the bytes, and their copy."""
    source = Path(settings.files_dir) / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"bytes of " + name.encode())
    assert service._files.keep(source, name)


async def test_the_sweep_removes_only_copies_no_event_refers_to(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    """Kept: a pending upload's copy (its file deleted since), an archived one queued for
    removal, and what the store never names. Removed: a copy whose upload never got its
    record (a crash between the two), and a copy a crash cut short."""
    settings = compliance_settings(tmp_path, redis_url, store_url)
    service, store = await archive(settings)
    chat = service._chat
    archived = await upload(settings, chat, b"archived", "a.txt")
    await drain(service)
    assert await service.run_adapters()  # queued for removal, not yet removed
    pending = await upload(settings, chat, b"pending", "p.txt")
    await drain(service)
    await chat.delete_file(pending.id)  # its room went: the event still needs the copy
    orphan = stored_name(new_file_id(), "o.pdf")
    keep_copy(settings, service, orphan)  # killed before the record and its event
    folder = Path(settings.compliance_files_dir)
    cut_short = f".{stored_name(new_file_id(), 'c.bin')}.tmp"
    (folder / cut_short).write_bytes(b"half")
    (folder / "README").write_text("an operator's note")
    page = await service.sweep_copies(older_than_s=-60)  # everything counts as old
    assert sorted(page.names) == sorted([orphan, cut_short]) and page.resume == ""
    assert copies(settings) == sorted([stored(archived), stored(pending), "README"])
    assert await service.sweep_copies(older_than_s=3600) == compliance.Page([], "")
    assert await service.remove_archived_copies() == 1  # the normal path still works
    assert await service.run_adapters()
    assert await service.remove_archived_copies() == 1
    assert copies(settings) == ["README"]


async def test_the_sweep_waits_while_the_outbox_is_behind(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    """An upload whose event has not left the outbox yet looks unreferred to the compliance
    store: while the outbox holds old rows, the sweep removes nothing."""
    settings = compliance_settings(tmp_path, redis_url, store_url)
    service, store = await archive(settings)
    waiting = await upload(settings, service._chat, b"waiting", "w.txt")
    keep_copy(settings, service, stored(waiting))  # made by the route, event not yet moved
    orphan = stored_name(new_file_id(), "o.pdf")
    keep_copy(settings, service, orphan)
    assert await service.sweep_copies(older_than_s=-60) == compliance.Page([], "")
    assert copies(settings) == sorted([stored(waiting), orphan])
    await drain(service)
    assert (await service.sweep_copies(older_than_s=-60)).names == [orphan]
    assert copies(settings) == [stored(waiting)]


async def test_a_sweep_page_is_bounded_and_the_next_goes_on(
    tmp_path: Path, redis_url: str, store_url: str
) -> None:
    settings = compliance_settings(tmp_path, redis_url, store_url)
    service, store = await archive(settings)
    orphans = sorted(stored_name(new_file_id(), f"{i}.bin") for i in range(3))
    for name in orphans:
        keep_copy(settings, service, name)
    first = await service.sweep_copies(limit=2, older_than_s=-60)
    assert first.names == orphans[:2] and first.resume == orphans[1]
    assert await service.sweep_copies(first.resume, 2, -60) == compliance.Page(orphans[2:], "")
    assert copies(settings) == []
