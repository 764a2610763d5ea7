"""The HTTP management API: rooms and categories for signed-in users (HTTP Basic).

The same rules as `pchat admin` (core/rooms/management.py): administrators manage
everything, creators create rooms in their categories, managers change their rooms.
Passwords are checked against the stored digest HA1, so no plain password is kept.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from core.auth.throttle import Throttle
from core.errors import BadRequest, PchatError
from core.files.base import FileStorage
from core.rooms.management import Actor, CategoryChange, Management, RoomChange
from core.store.base import CategoryRecord, ChatStore, RoomRecord
from core.xccos.ids import room_uri
from shards.web.access import USER_KEY
from shards.web.csrf import SAFE_METHODS, CsrfGuard, from_browser, token_for, token_refusal
from shards.web.signin import Credentials, Sessions, Throttled, ha1_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_JSON_BYTES = 64 * 1024  # a room with thousands of members still fits
CSRF_KEY = web.RequestKey("pchat_csrf", str)  # the session's token ("" for HTTP Basic)


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
        self,
        store: ChatStore,
        domain: str,
        changed: Callable[[], Awaitable[None]],
        throttle: Throttle,
        guard: CsrfGuard | None = None,
        *,
        invitations_per_change: int = 1000,
        files: FileStorage | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self._guard = guard or CsrfGuard([], "")
        self._store = store
        self._domain = domain
        self._mgmt = Management(store, invitations_per_change=invitations_per_change, files=files)
        self._changed = changed  # tells every worker at once (the revision poll is the backstop)
        self._credentials = Credentials(store, domain, throttle)
        self._sessions = sessions  # None: HTTP Basic only (no page sign-in)

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/csrf", self._wrap(self.csrf_token))
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
            actor = await self.authenticate(request)
            if isinstance(actor, web.Response):
                return actor
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

    async def authenticate(
        self, request: web.Request, *, json_only: bool = True
    ) -> Actor | web.Response:
        """The signed-in user of a request, or the response that refuses it: the type and
        origin checks first (before any password is looked at), then HTTP Basic through
        the throttle or the pages' session cookie, then a browser's CSRF token (always,
        for a cookie: only a browser holds one). Every web part signs in here; the file
        store passes ``json_only=False`` for its uploads' raw bodies."""
        refused = self._guard.refusal(request, json_only=json_only)
        if refused is not None:
            return refused
        signed = await self._actor(request)
        if signed is None:
            return web.Response(
                status=401,
                text="sign in with your SIP address and password (HTTP Basic, or /signin)\n",
                headers={"WWW-Authenticate": self._challenge(request)},
            )
        if isinstance(signed, web.Response):
            return signed
        actor, session_token = signed
        request[CSRF_KEY] = session_token
        request[USER_KEY] = actor.uri  # for the access log (shards/web/access.py)
        if request.method not in SAFE_METHODS and (session_token or from_browser(request)):
            expected = session_token or await self._token(actor)
            token_refused = token_refusal(request, expected, always=bool(session_token))
            if token_refused is not None:
                return token_refused
        return actor

    def _challenge(self, request: web.Request) -> str:
        """Basic, except to a page's script (a fetch: Sec-Fetch-Mode is not "navigate"),
        which is told of the session scheme: a Basic challenge there makes the browser
        stop the page with its own password box instead of letting the page sign in."""
        if request.headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
            return f'Session realm="{self._domain}", signin="/signin"'
        return f'Basic realm="{self._domain}", charset="UTF-8"'

    async def _actor(self, request: web.Request) -> tuple[Actor, str] | web.Response | None:
        """The signed-in user and, when by cookie, their session's token; None: no or
        wrong credentials; a 429 when the throttle refuses the attempt unchecked."""
        header = request.headers.get("Authorization")
        if header is None and self._sessions is not None:
            session = await self._sessions.session(request)
            return (session.actor, session.csrf) if session is not None else None
        if header is None or not header.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        # "sip:bob@example.com:pw" names the user with its scheme: skip it before splitting.
        scheme = "sip:" if decoded[:4].lower() == "sip:" else ""
        username, _, password = decoded[len(scheme) :].partition(":")
        result = await self._credentials.check(username, password, request.remote or "?")
        if isinstance(result, Throttled):
            return web.Response(
                status=429,
                text="too many sign-in attempts; try later\n",
                headers={"Retry-After": str(result.retry_after_s)},
            )
        return (result, "") if result is not None else None

    async def _token(self, actor: Actor) -> str:
        record = await self._store.get_user(actor.uri)
        return token_for(ha1_of(record) if record else "", actor.uri)

    async def csrf_token(self, request: web.Request, actor: Actor) -> web.Response:
        """The token a web page sends back in X-CSRF-Token; other origins cannot read it
        (no CORS headers are ever sent)."""
        return _json({"token": request.get(CSRF_KEY) or await self._token(actor)})

    async def _body(self, request: web.Request, kind: type[msgspec.Struct]) -> msgspec.Struct:
        if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
            raise BadRequest("body too large")
        return msgspec.json.decode(await request.read(), type=kind)

    async def list_rooms(self, request: web.Request, actor: Actor) -> web.Response:
        return _json([_room(self._domain, r, actor) for r in await self._mgmt.rooms_for(actor)])

    async def get_room(self, request: web.Request, actor: Actor) -> web.Response:
        room = await self._mgmt.visible_room(actor, request.match_info["room"])
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
