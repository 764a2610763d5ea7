"""With compliance on, an upload is kept in the compliance file store before it is
recorded (shards/web/files.py, core/compliance/file_store.py): a hard link where both
folders share a file system; when it cannot be kept, no 201 and nothing recorded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp

from core.files.names import stored_name
from shards.worker.runner import RunningWorker
from tests.integration.files_fixtures import outbox_kinds, stored_path, upload


async def test_an_upload_is_kept_for_compliance_before_its_201(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    resp = await upload(http, "lobby", b"minutes of the meeting", name="m.txt")
    assert resp.status == 201
    body = await resp.json()
    name = stored_name(body["id"], "m.txt")
    copy = Path(files_server.settings.compliance_files_dir) / name
    original = stored_path(files_server, body["id"], "m.txt")
    assert copy.read_bytes() == b"minutes of the meeting"
    assert os.stat(copy).st_ino == os.stat(original).st_ino  # a second name, no bytes copied
    original.unlink()  # deleted before any relay: the copy stays
    assert copy.read_bytes() == b"minutes of the meeting"


async def test_an_upload_the_compliance_store_cannot_keep_gets_503_and_leaves_nothing(
    files_server: RunningWorker, http: aiohttp.ClientSession
) -> None:
    folder = Path(files_server.settings.compliance_files_dir)
    shutil.rmtree(folder, ignore_errors=True)
    folder.write_text("not a folder")  # the compliance file store is unusable
    resp = await upload(http, "lobby", b"abc", name="a.txt")
    assert resp.status == 503
    assert "compliance file store" in (await resp.json())["error"]
    assert await files_server.store.room_files("lobby") == []
    assert await outbox_kinds(files_server) == []  # no FILEUPLOAD without its file
    assert list(Path(files_server.settings.files_dir).iterdir()) == []
