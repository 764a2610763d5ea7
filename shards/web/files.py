"""The room file store over HTTP: upload to a room, download by the file's random id.

The room's rules decide (core/rooms/rules.py): uploading needs the right to post and
the category's file_upload switch, downloading the right to read; a room one may not
see answers 404, as if it did not exist. The body streams to disk in bounded chunks,
hashed on the way, and every disk call runs off the event loop; the chat store keeps
only the record (name, size, sha256), written with its compliance row.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import quote

import msgspec
from aiohttp import web

from core.compliance.events import Activity, Kind, to_outbox
from core.config import Settings
from core.errors import BadRequest, Forbidden, NotFound, PchatError, TooLarge
from core.rooms.management import Actor
from core.rooms.rules import can_post, can_read, can_see, uploads_on
from core.store.base import ChatStore, FileRecord, OutboxEvent, RoomRecord


class Authenticate(Protocol):
    """`ManagementApi.authenticate`: the signed-in user, or the response refusing it."""

    def __call__(
        self, request: web.Request, *, json_only: bool = ...
    ) -> Awaitable[Actor | web.Response]: ...


MAX_NAME_CHARS = 255  # what common file systems accept for one name
_ID = re.compile(r"[A-Za-z0-9_-]{24}")  # secrets.token_urlsafe(18): 144 random bits
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def check_name(name: str) -> str:
    """The uploader's file name, kept as given when it is a plain single name."""
    if not name or len(name) > MAX_NAME_CHARS or _BAD_NAME.search(name) or name in {".", ".."}:
        raise BadRequest(f"file name must be 1 to {MAX_NAME_CHARS} characters, no path or controls")
    return name


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


class FileApi:
    def __init__(self, store: ChatStore, settings: Settings, authenticate: Authenticate) -> None:
        self._store = store
        self._dir = Path(settings.files_dir)
        self._max_bytes = settings.files.max_upload_kb * 1000
        self._chunk = settings.files.chunk_bytes
        self._record = settings.compliance.enabled
        self._authenticate = authenticate

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/rooms/{room}/files", self._wrap(self.upload))
        app.router.add_get("/api/files/{file}", self._wrap(self.download))

    def _wrap(
        self, handler: Callable[[web.Request, Actor], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            actor = await self._authenticate(request, json_only=False)
            if isinstance(actor, web.Response):
                return actor
            try:
                return await handler(request, actor)
            except PchatError as exc:
                return _json({"error": str(exc) or exc.reason}, exc.sip_status)

        return run

    async def _room(self, room_id: str, user: str, *, post: bool) -> RoomRecord:
        room = await self._store.get_room(room_id)
        category = await self._store.get_category(room.category_id) if room else None
        if room is None or category is None or not can_see(room, category, user):
            raise NotFound("no such room")
        if post and not can_post(room, category, user):
            raise Forbidden("you may not post in this room")
        if post and not uploads_on(room, category):
            raise Forbidden("file upload is off in this room or its category")
        if not post and not can_read(room, category, user):
            raise Forbidden("you may not read this room")
        return room

    def _events(self, kind: Kind, record: FileRecord, user: str) -> list[OutboxEvent]:
        if not self._record:
            return []
        activity = Activity(
            kind=kind,
            user=user,
            room_id=record.room_id,
            ts_ms=int(time.time() * 1000),
            text=record.name,
        )
        return [to_outbox(activity)]

    async def upload(self, request: web.Request, actor: Actor) -> web.StreamResponse:
        name = check_name(request.query.get("name", ""))
        room = await self._room(request.match_info["room"], actor.uri, post=True)
        if self._max_bytes == 0:
            raise Forbidden("file upload is off on this server (files.max_upload_kb = 0)")
        if request.content_length is not None and request.content_length > self._max_bytes:
            raise TooLarge(f"files are limited to {self._max_bytes // 1000} KB")
        await asyncio.to_thread(self._dir.mkdir, parents=True, exist_ok=True)
        file_id = secrets.token_urlsafe(18)
        final = self._dir / file_id
        size, digest = await self._receive(request, final.with_suffix(".part"))
        record = FileRecord(
            id=file_id,
            room_id=room.id,
            name=name,
            size=size,
            sha256=digest,
            uploader=actor.uri,
            ts_ms=int(time.time() * 1000),
        )
        await asyncio.to_thread(os.replace, final.with_suffix(".part"), final)
        try:
            await self._store.add_file(record, self._events("FILEUPLOAD", record, actor.uri))
        except BaseException:
            await asyncio.to_thread(final.unlink, missing_ok=True)
            raise
        return _json({"url": f"/api/files/{file_id}", **msgspec.structs.asdict(record)}, 201)

    async def _receive(self, request: web.Request, part: Path) -> tuple[int, str]:
        """Streams the body into ``part``; (size, sha256 hex). Past the cap: removed, 413."""
        sha, size = hashlib.sha256(), 0
        out: BinaryIO = await asyncio.to_thread(part.open, "wb")
        try:
            async for chunk in request.content.iter_chunked(self._chunk):
                size += len(chunk)
                if size > self._max_bytes:
                    raise TooLarge(f"files are limited to {self._max_bytes // 1000} KB")
                sha.update(chunk)
                await asyncio.to_thread(out.write, chunk)
        except BaseException:
            await asyncio.to_thread(out.close)
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise
        await asyncio.to_thread(out.close)
        return size, sha.hexdigest()

    async def download(self, request: web.Request, actor: Actor) -> web.StreamResponse:
        file_id = request.match_info["file"]
        record = await self._store.get_file(file_id) if _ID.fullmatch(file_id) else None
        if record is None:
            raise NotFound("no such file")
        await self._room(record.room_id, actor.uri, post=False)
        events = self._events("FILEDOWNLOAD", record, actor.uri)
        if events:
            await self._store.add_outbox(events)  # recorded before a byte leaves
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(record.name, safe='')}",
            "X-Content-Type-Options": "nosniff",
        }
        # FileResponse opens and stats in an executor and sends with sendfile.
        return web.FileResponse(self._dir / file_id, chunk_size=self._chunk, headers=headers)
