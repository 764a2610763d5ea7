"""The room file store over HTTP: upload to a room, download by the file's random id.

The room's rules decide (core/rooms/rules.py): uploading needs the right to post and
both upload switches (category and room), downloading the right to read; a room one may
not see answers 404, as if it did not exist. The body streams to the storage backend
(core/files/) in bounded chunks, hashed on the way, every disk call off the event loop.
Order of an upload: bytes durable under their stored name, then the record (with its
FILEUPLOAD compliance row, one transaction), then the file post through the room's
owner, like any post. Sign-in: HTTP Basic (the SIP credentials) or the short-lived
token a SIP client got in rpl:getservinfo (core/auth/filetoken.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import msgspec
from aiohttp import web

from core.auth.filetoken import FileTokens
from core.compliance.events import Kind, file_event
from core.compliance.file_store import ComplianceFileStore
from core.config import Settings
from core.errors import Forbidden, NotFound, Overloaded, PchatError, StorageFull, TooLarge
from core.files.base import FileStorage
from core.files.names import FILE_ID, check_name, file_id_of, new_file_id, stored_name
from core.files.places import Pace, TransferPlaces
from core.files.post import file_post_text
from core.files.stale import SWEEP_PAGE, Page
from core.rooms.management import Actor
from core.rooms.owner import FILE_POSTER, PostResult
from core.rooms.rules import can_post, can_read, can_see, uploads_on
from core.store.base import ChatStore, FileRecord, OutboxEvent, RoomRecord
from shards import metrics
from shards.web.access import USER_KEY
from shards.web.csrf import from_browser
from shards.web.signin import SESSION_COOKIE

log = logging.getLogger(__name__)

# A cut-off upload's part file, or a stored file whose record was never written, is
# removed once untouched this long: an upload in progress writes at least every few
# seconds, so an hour never catches a live one, even on a slow link.
STALE_S = 3600.0
# A transfer refused for want of a place (503) is retried after this: a 1 MB transfer
# takes well under a second, so a place is usually free again by then.
RETRY_AFTER_S = 1
# The query parameter of a worker's 307 to the file service: a file token (as Bearer) for
# the user the worker signed in. The access log never writes query strings.
TOKEN_PARAM = "file_token"


class Authenticate(Protocol):
    """`ManagementApi.authenticate`: the signed-in user, or the response refusing it."""

    def __call__(
        self, request: web.Request, *, json_only: bool = ...
    ) -> Awaitable[Actor | web.Response]: ...


# RoomRouter.append_post: (room id, session, user, client key, text) -> the durable post.
Poster = Callable[[str, str, str, str, str], Awaitable[PostResult]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


def _unauthorized(why: str) -> web.Response:
    return web.Response(status=401, text=why + "\n", headers={"WWW-Authenticate": "Bearer"})


class FileApi:
    def __init__(
        self,
        store: ChatStore,
        settings: Settings,
        authenticate: Authenticate,
        storage: FileStorage,
        *,
        post: Poster,
        base_url: str,
        tokens: FileTokens | None = None,
        redirect_to: str = "",
    ) -> None:
        self._store = store
        self._storage = storage
        self._max_bytes = settings.files.max_upload_kb * 1000
        self._quota = settings.files.room_quota_kb * 1000  # 0: none
        self._chunk = settings.files.chunk_bytes
        self.places = TransferPlaces(settings.files.max_transfers)
        self._pace = Pace(settings.files.upload_kb_s * 1000)
        self._record = settings.compliance.enabled
        # With compliance on, each upload is kept there before it is recorded.
        self._copies = ComplianceFileStore(settings.compliance_files_dir) if self._record else None
        self._authenticate = authenticate
        self._post = post
        self._base = base_url.rstrip("/")  # the download URLs in file posts
        self._tokens = tokens
        # The file service's base URL (shards/file_service.py) on a worker while it runs;
        # "": this process carries the bytes itself.
        self._redirect_to = redirect_to.rstrip("/")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/rooms/{room}/files", self._wrap(self.upload, transfer=True))
        app.router.add_get("/api/rooms/{room}/files", self._wrap(self.list_files))
        app.router.add_get("/api/files/{file}", self._wrap(self.download, transfer=True))

    def _redirect(self, request: web.Request, actor: Actor) -> web.Response | None:
        """307 to the same path on the file service (the method and the body are kept),
        with a file token for the user signed in here in the query (TOKEN_PARAM): a client
        drops its Authorization header on a redirect to another origin (the service's
        port), and would reach it signed out. Not for a browser (it sends Origin or
        Sec-Fetch-Site, or holds the session cookie): its fetch would lose the cookie and
        the CSRF header there, so the pages' and the web chat's transfers stay here."""
        if not self._redirect_to or self._tokens is None:
            return None
        if from_browser(request) or SESSION_COOKIE in request.cookies:
            return None
        token = self._tokens.issue(actor.uri, time.time())
        target = request.rel_url.update_query({TOKEN_PARAM: token})
        return web.Response(
            status=307, headers={"Location": self._redirect_to + str(target), "Content-Length": "0"}
        )

    def _wrap(
        self,
        handler: Callable[[web.Request, Actor], Awaitable[web.StreamResponse]],
        *,
        transfer: bool = False,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            actor = await self._signed_in(request)
            if isinstance(actor, web.Response):
                return actor
            moved = self._redirect(request, actor) if transfer else None
            if moved is not None:
                return moved
            try:
                return await handler(request, actor)
            except PchatError as exc:
                response = _json({"error": str(exc) or exc.reason}, exc.sip_status)
                if isinstance(exc, Overloaded):
                    response.headers["Retry-After"] = str(RETRY_AFTER_S)
                return response

        return run

    async def _signed_in(self, request: web.Request) -> Actor | web.Response:
        """A Bearer file token (or one in the query, from a worker's 307), else what the
        management API accepts (HTTP Basic, the session cookie)."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:].strip()
        elif TOKEN_PARAM in request.query and not header:
            given = request.query[TOKEN_PARAM]
        else:
            return await self._authenticate(request, json_only=False)
        user = self._tokens.user_of(given, time.time()) if self._tokens else None
        record = await self._store.get_user(user) if user else None
        if record is None or not record.enabled:
            return _unauthorized("the file token is not valid (expired?): ask getserverinfo again")
        request[USER_KEY] = record.uri  # for the access and audit logs
        return Actor(record.uri, admin=record.admin)

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
        return [file_event(kind, record, user, int(time.time() * 1000))]

    def _check_size(self, size: int, used: int) -> None:
        if size > self._max_bytes:
            raise TooLarge(f"files are limited to {self._max_bytes // 1000} KB")
        if self._quota and used + size > self._quota:
            free = max(self._quota - used, 0) // 1000
            raise StorageFull(
                f"the room's files are limited to {self._quota // 1000} KB; {free} KB free"
            )

    async def upload(self, request: web.Request, actor: Actor) -> web.StreamResponse:
        name = check_name(request.query.get("name", ""))
        room = await self._room(request.match_info["room"], actor.uri, post=True)
        if self._max_bytes == 0:
            raise Forbidden("file upload is off on this server (files.max_upload_kb = 0)")
        # The quota is checked before and during the transfer; uploads racing into one
        # room may pass it by at most what they carry together.
        used = await self._store.room_file_bytes(room.id) if self._quota else 0
        self._check_size(request.content_length or 0, used)
        file_id = new_file_id()
        stored = stored_name(file_id, name)
        with self.places.take():  # given back when the body is in, or the upload failed
            size, digest = await self._receive(request, stored, used)
        await self._keep_for_compliance(stored)
        record = FileRecord(
            id=file_id,
            room_id=room.id,
            name=name,
            size=size,
            sha256=digest,
            uploader=actor.uri,
            ts_ms=int(time.time() * 1000),
        )
        try:
            await self._store.add_file(record, self._events("FILEUPLOAD", record, actor.uri))
        except PchatError:
            await self._forget(record)
            raise
        msgid, post_error = await self._announce(record, actor.uri)
        body = {"url": self._url(file_id), "msgid": msgid, **msgspec.structs.asdict(record)}
        if post_error:
            body["post_error"] = post_error  # stored and listed, but not announced
        body["post_seq"] = msgid
        return _json(body, 201)

    async def _keep_for_compliance(self, stored: str) -> None:
        """With compliance on, the compliance file store keeps the bytes before the upload
        is recorded, so its FILEUPLOAD event always has its file, whatever is deleted
        before the relay moves it (core/compliance/file_store.py); else no 201."""
        if self._copies is None:
            return
        source = Path(self._storage.local_path(stored))
        try:
            kept = await asyncio.to_thread(self._copies.keep, source, stored)
        except OSError as exc:
            log.error("cannot keep %s in the compliance file store: %s", stored, exc)
            kept = False
        if not kept:
            await self._storage.remove([stored])
            raise Overloaded("the compliance file store cannot keep the file; try again later")

    async def _forget(self, record: FileRecord) -> None:
        """The record failed: the bytes go unless the record is there after all (a commit
        whose answer was lost); when that cannot be told, the sweep decides later."""
        try:
            if await self._store.get_file(record.id) is None:
                name = stored_name(record.id, record.name)
                await self._storage.remove([name])
                if self._copies is not None:
                    await asyncio.to_thread(self._copies.remove, [name])
        except PchatError:
            log.warning("file %s: record unknown; the sweep removes it if unrecorded", record.id)

    def _url(self, file_id: str) -> str:
        return f"{self._base}/api/files/{file_id}"

    async def _announce(self, record: FileRecord, user: str) -> tuple[int, str]:
        """The file post, through the room's owner (order, durability, fan-out, the CHAT
        row); (its msgid, "") or (0, why it failed)."""
        text = file_post_text(record.name, record.size, self._url(record.id))
        try:
            result = await self._post(record.room_id, FILE_POSTER, user, f"file:{record.id}", text)
        except NotFound:
            # The room was deleted while the file streamed in: the file goes with it.
            await self._store.delete_file(record.id)
            await self._storage.remove([stored_name(record.id, record.name)])
            raise
        except PchatError as exc:
            return 0, str(exc) or exc.reason
        await self._store.set_file_post(record.id, result.seq)
        return result.seq, ""

    async def _receive(self, request: web.Request, stored: str, used: int) -> tuple[int, str]:
        """Streams the body to storage; (size, sha256 hex). Past a cap: nothing kept."""
        size = 0
        writer = await self._storage.create(stored)
        try:
            async for chunk in request.content.iter_chunked(self._chunk):
                size += len(chunk)
                self._check_size(size, used)
                await writer.write(chunk)
                wait = self._pace.delay(time.monotonic(), len(chunk))
                if wait:
                    await asyncio.sleep(wait)
            digest = await writer.commit()
        except BaseException:
            await writer.abort()
            raise
        return size, digest

    async def list_files(self, request: web.Request, actor: Actor) -> web.StreamResponse:
        room = await self._room(request.match_info["room"], actor.uri, post=False)
        files = await self._store.room_files(room.id)
        return _json([{"url": self._url(f.id), **msgspec.structs.asdict(f)} for f in files])

    async def download(self, request: web.Request, actor: Actor) -> web.StreamResponse:
        file_id = request.match_info["file"]
        record = await self._store.get_file(file_id) if FILE_ID.fullmatch(file_id) else None
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
        path = self._storage.local_path(stored_name(record.id, record.name))
        # FileResponse opens and stats in an executor and sends with sendfile (on uvloop:
        # reads of chunk_bytes in the executor). A download needs a free place to start
        # but does not hold it while it is sent (core/files/places.py says why).
        self.places.need()
        return web.FileResponse(path, chunk_size=self._chunk, headers=headers)

    async def sweep(self, after: str = "", limit: int = SWEEP_PAGE) -> Page:
        """Removes what crashes left behind, one page of names (see ``FileStorage.sweep``)."""

        async def recorded(name: str) -> bool:
            file_id = file_id_of(name)
            return file_id is not None and await self._store.get_file(file_id) is not None

        page = await self._storage.sweep(recorded, STALE_S, after, limit)
        if page.names:
            metrics.FILES_SWEPT.labels("uploads").inc(len(page.names))
            log.info("file store: removed %d files left by interrupted uploads", len(page.names))
        return page
