"""Files over real HTTP against `pchat serve --compliance`, with kill -9 of the compliance
service mid-run: every upload and download archived exactly once, the archive valid
against the XSD, each upload's bytes archived beside its .ATTACH manifest."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from core.compliance.store.registry import make_compliance_store
from core.compliance.xml_adapter import SCHEMA
from core.files.names import stored_name
from core.store.registry import make_store
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster
from tests.e2e.compliance import archived_events, wait_drained
from tests.e2e.test_compliance_kill import pid_of, store_urls

RUN_S = 4.0  # of steady uploads and downloads


def archive_env(chat_url: str, compliance_url: str) -> dict[str, str]:
    """The server's settings: both stores, the XML and JSONL adapters, .ATTACH manifests."""
    return {
        "PCHAT_COMPLIANCE__ADAPTERS": '["xml", "jsonl"]',
        "PCHAT_COMPLIANCE__XML_ATTACH": "true",
        "PCHAT_STORE": chat_url,
        "PCHAT_COMPLIANCE__STORE": compliance_url,
    }


def basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}@{DOMAIN}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize(
    ("backend", "workers", "file_service"),
    [
        pytest.param("sqlite", 1, False, id="sqlite"),
        pytest.param("postgres", 1, False, id="postgres"),
        # Through the file service (shards/file_service.py, beside 2 workers): its transfers
        # are recorded and kept for compliance exactly as the workers' own.
        pytest.param("sqlite", 2, True, id="file-service"),
    ],
)
async def test_every_upload_and_download_is_archived_once_across_kill_9(
    tmp_path: Path, backend: str, workers: int, file_service: bool
) -> None:
    async with store_urls(backend, tmp_path) as (chat_url, compliance_url):
        env = archive_env(chat_url, compliance_url)
        cluster = Cluster(tmp_path, workers, "--compliance", env=env, file_service=file_service)
        try:
            await cluster.start()
            if file_service:
                await cluster.wait_files_healthy()
            sent, downloads = await transfers(cluster)
            await drained(cluster, chat_url, compliance_url)
        finally:
            await cluster.stop()
    check_archive(tmp_path / "compliance", sent, downloads)
    assert list((tmp_path / "compliance-files").iterdir()) == []  # archived: copies gone


async def transfers(cluster: Cluster) -> tuple[dict[str, tuple[str, bytes]], Counter[str]]:
    """Alice uploads, Bob downloads, the compliance service is killed in between. Returns
    {stored name: (file id, bytes)} of the acknowledged uploads, and the downloads served."""
    for user in ("alice", "bob"):
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    uri = await cluster.admin("room", "add", "Drop", "--category", "General", "--privacy", "open")
    room = uri.rpartition("/")[2]
    sent: dict[str, tuple[str, bytes]] = {}
    downloads: Counter[str] = Counter()
    end = time.monotonic() + RUN_S
    pick = random.Random(7).choice
    port = cluster.files if cluster.files > 0 else cluster.http  # the service, when on
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:

        async def traffic() -> None:
            i = 0
            while time.monotonic() < end:
                i += 1
                data, name = os.urandom(2000 + 97 * (i % 40)), f"doc {i}.pdf"
                url = f"/api/rooms/{room}/files"
                async with http.post(
                    url, params={"name": name}, data=data, headers=basic("alice")
                ) as r:
                    assert r.status == 201, await r.text()
                    body = await r.json()
                sent[stored_name(body["id"], name)] = (body["id"], data)
                stored, (file_id, data) = pick(list(sent.items()))
                async with http.get(f"/api/files/{file_id}", headers=basic("bob")) as r:
                    assert r.status == 200 and await r.read() == data
                downloads[stored] += 1

        async def chaos() -> None:
            await asyncio.sleep(1.0)
            await cluster.admin("compliance", "run-now")
            await asyncio.sleep(0.7)  # kill -9 wherever it is: relaying, copying, archiving
            os.kill(pid_of(cluster.data_dir, "compliance.pid")[-1], signal.SIGKILL)
            await asyncio.sleep(1.0)
            await cluster.admin("compliance", "run-now")

        await asyncio.gather(traffic(), chaos())
    return sent, downloads


async def drained(cluster: Cluster, chat_url: str, compliance_url: str) -> None:
    """The restarted service has archived everything and removed its copies."""
    chat, archive = make_store(chat_url), make_compliance_store(compliance_url)
    await chat.open()
    await archive.open()
    try:
        await wait_drained(
            chat, archive, lambda: cluster.admin("compliance", "run-now"), files=True
        )
    finally:
        await archive.close()
        await chat.close()


def check_archive(out: Path, sent: dict[str, tuple[str, bytes]], downloads: Counter[str]) -> None:
    events = archived_events(out)
    assert len({e["id"] for e in events}) == len(events), "an event was archived twice"
    uploads = Counter(e["text"] for e in events if e["kind"] == "FILEUPLOAD")
    assert uploads == Counter(sent.keys()), "an upload was lost or archived twice"
    fetched = Counter(e["text"] for e in events if e["kind"] == "FILEDOWNLOAD")
    assert fetched == downloads, "a download was lost or archived twice"
    assert all(e["file_id"] == sent[e["text"]][0] for e in events if e["kind"].startswith("FILE"))
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    messages: Counter[tuple[str, str]] = Counter()
    for xml_file in out.glob("*.xml"):
        doc = etree.parse(str(xml_file))
        schema.assertValid(doc)
        for m in doc.findall(".//Messages/Message"):
            if m.get("type", "").startswith("FILE"):
                messages[(m.get("type", ""), m.get("content", ""))] += 1
    assert messages == Counter(
        {("FILEUPLOAD", s): n for s, n in uploads.items()}
        | {("FILEDOWNLOAD", s): n for s, n in fetched.items()}
    )
    manifests = list(out.glob("*.ATTACH"))
    assert len(manifests) == uploads.total() + fetched.total()
    for path in manifests:
        manifest = etree.parse(str(path))
        schema.assertValid(manifest)
        root = manifest.getroot()
        if root.get("type") == "FILEUPLOAD":
            archived = root.get("archived", "")
            assert (out / archived).read_bytes() == sent[root.get("content", "")][1]
