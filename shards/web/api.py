"""The HTTP management API: rooms and categories for signed-in users (HTTP Basic).

The same rules as `pchat admin` (core/rooms/management.py): administrators manage
everything, creators create rooms in their categories, managers change their rooms.
Passwords are checked against the stored digest HA1, so no plain password is kept.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from core.errors import BadRequest, PchatError
from core.rooms.management import Actor, CategoryChange, Management, RoomChange
from core.sip.digest import compute_ha1
from core.store.base import CategoryRecord, ChatStore, RoomRecord
from core.xccos.ids import room_uri

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_JSON_BYTES = 64 * 1024  # a room with thousands of members still fits


FAILURE_WINDOW_S = 60.0
MAX_FAILURES = 10  # wrong passwords per address and minute before 429 (SIP allows 3/connection)
# Addresses remembered at once: enough for any real office; past it the oldest are forgotten,
# so a flood of addresses cannot grow the table.
MAX_TRACKED = 10_000


class SignInFailures:
    """Failed HTTP Basic sign-ins per client address, in a sliding minute."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)

    def blocked(self, peer: str) -> bool:
        entry = self._seen.get(peer)
        if entry is None:
            return False
        if time.monotonic() - entry[0] > FAILURE_WINDOW_S:
            del self._seen[peer]
            return False
        return entry[1] >= MAX_FAILURES

    def failed(self, peer: str) -> None:
        now = time.monotonic()
        start, count = self._seen.pop(peer, (now, 0))
        if now - start > FAILURE_WINDOW_S:
            start, count = now, 0
        self._seen[peer] = (start, count + 1)
        while len(self._seen) > MAX_TRACKED:
            del self._seen[next(iter(self._seen))]


class RoomBody(RoomChange, kw_only=True, forbid_unknown_fields=True):
    """POST /api/rooms: a new room's name and category, then any RoomChange field."""

    name: str = ""
    category: str = ""


class CategoryBody(CategoryChange, kw_only=True, forbid_unknown_fields=True):
    name: str = ""


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


ROLE_FIELDS = ("members", "managers", "presenters")
CATEGORY_LISTS = ("allowed", "denied", "creators")


def _room(domain: str, room: RoomRecord, actor: Actor) -> dict[str, object]:
    """Role lists only for administrators and the room's managers."""
    out: dict[str, object] = {"uri": room_uri(domain, room.id), **msgspec.structs.asdict(room)}
    if not actor.admin and actor.uri not in room.managers:
        for field in ROLE_FIELDS:
            out.pop(field)
    return out


def _category(domain: str, c: CategoryRecord, actor: Actor) -> dict[str, object]:
    """Who is allowed and denied is for administrators only."""
    out: dict[str, object] = {"uri": f"ma-cat://{domain}/{c.id}", **msgspec.structs.asdict(c)}
    if not actor.admin:
        for field in CATEGORY_LISTS:
            out.pop(field)
    return out


class ManagementApi:
    def __init__(
        self, store: ChatStore, domain: str, changed: Callable[[], Awaitable[None]]
    ) -> None:
        self._store = store
        self._domain = domain
        self._mgmt = Management(store)
        self._changed = changed  # tells every worker at once (the revision poll is the backstop)
        self._failures = SignInFailures()

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/rooms", self._wrap(self.list_rooms))
        r.add_post("/api/rooms", self._wrap(self.create_room))
        r.add_get("/api/rooms/{room}", self._wrap(self.get_room))
        r.add_patch("/api/rooms/{room}", self._wrap(self.update_room))
        r.add_post("/api/rooms/{room}/disable", self._wrap(self.disable_room))
        r.add_post("/api/rooms/{room}/enable", self._wrap(self.enable_room))
        r.add_delete("/api/rooms/{room}", self._wrap(self.delete_room))
        r.add_delete("/api/rooms/{room}/messages/{msgid}", self._wrap(self.remove_message))
        r.add_get("/api/categories", self._wrap(self.list_categories))
        r.add_post("/api/categories", self._wrap(self.create_category))
        r.add_patch("/api/categories/{category}", self._wrap(self.update_category))
        r.add_delete("/api/categories/{category}", self._wrap(self.delete_category))

    def _wrap(self, handler: Callable[[web.Request, Actor], Awaitable[web.Response]]) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            peer = request.remote or "?"
            if self._failures.blocked(peer):
                return web.Response(
                    status=429,
                    text="too many failed sign-ins from this address; wait a minute\n",
                    headers={"Retry-After": str(int(FAILURE_WINDOW_S))},
                )
            actor = await self._actor(request)
            if actor is None:
                if "Authorization" in request.headers:
                    self._failures.failed(peer)
                return web.Response(
                    status=401,
                    text="sign in with your SIP address and password (HTTP Basic)\n",
                    headers={"WWW-Authenticate": f'Basic realm="{self._domain}", charset="UTF-8"'},
                )
            try:
                response = await handler(request, actor)
                if request.method != "GET" and response.status < 300:
                    await self._changed()
                return response
            except PchatError as exc:
                return _json({"error": str(exc) or exc.reason}, exc.sip_status)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                return _json({"error": f"bad request body: {exc}"}, 400)

        return run

    async def authenticate(self, request: web.Request) -> Actor | None:
        """The signed-in user of a request (HTTP Basic), for the other web parts."""
        return await self._actor(request)

    async def _actor(self, request: web.Request) -> Actor | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        # "sip:bob@example.com:pw" names the user with its scheme: skip it before splitting.
        scheme = "sip:" if decoded[:4].lower() == "sip:" else ""
        username, _, password = decoded[len(scheme) :].partition(":")
        address = username.lower()
        if "@" not in address:
            address = f"{address}@{self._domain}"
        record = await self._store.get_user(f"sip:{address}")
        stored = record.ha1.get(f"MD5:{address}") if record else None
        if record is None or stored is None or not (record.enabled or record.admin):
            return None  # unknown, or persistent chat is off for this user
        given = compute_ha1("MD5", address, self._domain, password)
        if not hmac.compare_digest(given, stored):
            return None
        return Actor(record.uri, admin=record.admin)

    async def _body(self, request: web.Request, kind: type[msgspec.Struct]) -> msgspec.Struct:
        if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
            raise BadRequest("body too large")
        return msgspec.json.decode(await request.read(), type=kind)

    async def list_rooms(self, request: web.Request, actor: Actor) -> web.Response:
        return _json([_room(self._domain, r, actor) for r in await self._mgmt.rooms_for(actor)])

    async def get_room(self, request: web.Request, actor: Actor) -> web.Response:
        rooms = {r.id: r for r in await self._mgmt.rooms_for(actor)}
        room = await self._mgmt.room(request.match_info["room"])
        if room.id not in rooms:
            return _json({"error": "no such room"}, 404)
        return _json(_room(self._domain, room, actor))

    async def create_room(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, RoomBody)
        assert isinstance(body, RoomBody)
        change = RoomChange(**{f: getattr(body, f) for f in RoomChange.__struct_fields__})
        room = await self._mgmt.create_room(actor, body.name, body.category, change)
        return _json(_room(self._domain, room, actor), 201)

    async def update_room(self, request: web.Request, actor: Actor) -> web.Response:
        change = await self._body(request, RoomChange)
        assert isinstance(change, RoomChange)
        room = await self._mgmt.update_room(actor, request.match_info["room"], change)
        return _json(_room(self._domain, room, actor))

    async def disable_room(self, request: web.Request, actor: Actor) -> web.Response:
        room = await self._mgmt.set_disabled(actor, request.match_info["room"], True)
        return _json(_room(self._domain, room, actor))

    async def enable_room(self, request: web.Request, actor: Actor) -> web.Response:
        room = await self._mgmt.set_disabled(actor, request.match_info["room"], False)
        return _json(_room(self._domain, room, actor))

    async def delete_room(self, request: web.Request, actor: Actor) -> web.Response:
        await self._mgmt.delete_room(actor, request.match_info["room"])
        return _json({"deleted": request.match_info["room"]})

    async def remove_message(self, request: web.Request, actor: Actor) -> web.Response:
        try:
            msgid = int(request.match_info["msgid"])
        except ValueError as exc:
            raise BadRequest("msgid must be a number") from exc
        await self._mgmt.remove_message(actor, request.match_info["room"], msgid)
        return _json({"removed": msgid})

    async def list_categories(self, request: web.Request, actor: Actor) -> web.Response:
        return _json(
            [_category(self._domain, c, actor) for c in await self._store.list_categories()]
        )

    async def create_category(self, request: web.Request, actor: Actor) -> web.Response:
        body = await self._body(request, CategoryBody)
        assert isinstance(body, CategoryBody)
        change = CategoryChange(**{f: getattr(body, f) for f in CategoryChange.__struct_fields__})
        change.name = None
        category = await self._mgmt.create_category(actor, body.name, change)
        return _json(_category(self._domain, category, actor), 201)

    async def update_category(self, request: web.Request, actor: Actor) -> web.Response:
        change = await self._body(request, CategoryChange)
        assert isinstance(change, CategoryChange)
        category = await self._mgmt.update_category(actor, request.match_info["category"], change)
        return _json(_category(self._domain, category, actor))

    async def delete_category(self, request: web.Request, actor: Actor) -> web.Response:
        await self._mgmt.delete_category(actor, request.match_info["category"])
        return _json({"deleted": request.match_info["category"]})
