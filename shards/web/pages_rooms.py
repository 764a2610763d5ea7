"""My Rooms: the pages where users create, change and disable the rooms they manage.

Every change goes through `Management` (core/rooms/management.py), the same checks as
the JSON API and `pchat admin`; these handlers only read forms and draw results. A room
the user may not see answers 404, one they see but do not manage 403, as the API does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

from core.errors import PchatError
from core.rooms import rules
from core.rooms.management import (
    ROOM_TEXT_CHARS,
    Actor,
    Management,
    RoomChange,
    copy_given,
    invitations_on,
    listed,
)  # fmt: skip
from core.store.base import CategoryRecord, ChatStore, RoomRecord
from shards.web.html import Markup, Viewer, join, options, page, refusal, render
from shards.web.pages_signin import Form, PageGate, redirect
from shards.web.pickers import chosen, picker, pool, text
from shards.web.room_files import files_section

DONE = {"created": "Room created.", "saved": "Changes saved.", "disabled": "Room disabled.",
        "enabled": "Room enabled.", "deleted": "Room deleted."}  # fmt: skip
PRIVACY = [("open", "Open: anyone may find and read it"),
           ("closed", "Closed: anyone may find it; members read it"),
           ("secret", "Secret: only members find and read it")]  # fmt: skip

_LIST = """<p>$create</p>
<table><caption class="hint">Rooms you manage</caption>
<thead><tr><th scope="col">Room</th><th scope="col">Category</th><th scope="col">Privacy</th>
<th scope="col">State</th></tr></thead>
<tbody>
$rows
</tbody></table>"""

# Administrators only (Management.removable_room): a room's managers disable it instead.
_REMOVAL = """<h2>History and deletion</h2><div class="card">
<p><a href="/rooms/$id/history">Recent history: remove a message</a></p>
<p><a href="/rooms/$id/delete">Delete this room…</a></p></div>"""

_ROW = """<tr><td><a href="/rooms/$id">$name</a></td><td>$category</td><td>$privacy</td>
<td>$state</td></tr>"""

_ROOM_FORM = """<form method="post" action="$action" class="card" id="room-form">
<input type="hidden" name="csrf" value="$csrf">
$category_field
<p><label for="name">Name</label>
<input id="name" name="name" type="text" maxlength="$max" required value="$name"
 aria-describedby="name-check">
<button type="submit" name="action" value="check" class="secondary" id="check-name"
 data-check="$room_id">Check name</button></p>
<p id="name-check" role="status" class="hint">$check</p>
<p><label for="description">Description</label>
<textarea id="description" name="description" maxlength="$max">$description</textarea></p>
<fieldset><legend>Privacy</legend>$privacy</fieldset>
$type_field
<p><input type="checkbox" id="invitations" name="invitations" value="on"$inv_checked$inv_off>
$inv_shown
<label class="choice" for="invitations">Send invitations to new members</label></p>
$inv_hint
<p><input type="checkbox" id="file_upload" name="file_upload" value="on"$up_checked$up_off>
$up_shown
<label class="choice" for="file_upload">Allow file uploads</label></p>
$up_hint
$pickers
<p><button type="submit" name="action" value="save">$submit</button></p>
</form>"""

# Says that a switch's box was there to be changed (see `_switch`).
_SHOWN = '<input type="hidden" name="{}_shown" value="1">'
_TYPE = """<p><label for="type">Type</label><select id="type" name="type">$choices</select></p>
<p class="hint">In an auditorium only presenters post.</p>"""


class RoomPages:
    def __init__(
        self,
        store: ChatStore,
        mgmt: Management,
        gate: PageGate,
        changed: Callable[[], Awaitable[None]],
        *,
        max_upload_kb: int,
    ) -> None:
        self._store = store
        self._mgmt = mgmt
        self._gate = gate
        self._changed = changed  # tells every worker at once, as the API does
        self._max_upload_kb = max_upload_kb

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/rooms", self.my_rooms)
        r.add_get("/rooms/new", self.new_form)
        r.add_post("/rooms/new", self.create)
        r.add_get("/rooms/check-name", self.check_name)
        r.add_get("/rooms/{room}", self.room_page)
        r.add_post("/rooms/{room}", self.update)
        r.add_post("/rooms/{room}/disable", self.disable)
        r.add_post("/rooms/{room}/enable", self.enable)

    # -- the list ------------------------------------------------------------------------

    async def my_rooms(self, request: web.Request) -> web.Response:
        session = await self._gate.signed_in(request)
        if isinstance(session, web.Response):
            return session
        actor = session.actor
        categories = {c.id: c for c in await self._store.list_categories()}
        mine = [
            r
            for r in await self._mgmt.rooms_for(actor)
            if actor.admin
            or (
                r.category_id in categories
                and rules.can_manage(r, categories[r.category_id], actor.uri)
            )
        ]
        rows = join(
            render(
                _ROW,
                id=r.id,
                name=r.name,
                category=categories[r.category_id].name if r.category_id in categories else "?",
                privacy=r.privacy,
                state="disabled" if r.disabled else "enabled",
            )
            for r in sorted(mine, key=lambda r: r.name.casefold())
        )
        create = Markup("")
        if self._creatable(actor, list(categories.values())):
            create = Markup('<a href="/rooms/new">Create a room</a>')
        empty = Markup('<tr><td colspan="4">You manage no rooms yet.</td></tr>')
        body = render(_LIST, create=create, rows=rows or empty)
        notice = DONE.get(request.query.get("done", ""), "")
        return page("My Rooms", body, self._gate.viewer(session), notice=notice)

    @staticmethod
    def _creatable(actor: Actor, categories: list[CategoryRecord]) -> list[CategoryRecord]:
        return [c for c in categories if actor.admin or rules.can_create(c, actor.uri)]

    # -- check names ---------------------------------------------------------------------

    async def check_name(self, request: web.Request) -> web.Response:
        """{"free": bool}: may a room (other than ``room``) take this name?"""
        session = await self._gate.signed_in(request)
        if isinstance(session, web.Response):
            return session
        name = request.query.get("name", "")
        return web.json_response(
            {"name": name, "free": await self._name_free(name, request.query.get("room", ""))}
        )

    async def _name_free(self, name: str, room_id: str) -> bool:
        found = await self._store.get_room_by_name(name.strip())
        return found is None or found.id == room_id

    async def _check_notice(self, name: str, room_id: str) -> str:
        if not name.strip():
            return "Type a name to check."
        if await self._name_free(name, room_id):
            return f"{name.strip()!r} is free."
        return f"{name.strip()!r} is taken; choose another name."

    # -- create --------------------------------------------------------------------------

    async def new_form(self, request: web.Request) -> web.Response:
        session = await self._gate.signed_in(request)
        if isinstance(session, web.Response):
            return session
        draft = RoomRecord(id="", name="", category_id=request.query.get("category", ""))
        return await self._create_page(session.actor, self._gate.viewer(session), draft)

    async def _create_page(
        self, actor: Actor, viewer: Viewer, draft: RoomRecord, notice: str = "", status: int = 200
    ) -> web.Response:
        allowed = self._creatable(actor, await self._store.list_categories())
        if not allowed:
            return page("Create a room", Markup(""), viewer, status=403,
                        notice="You may not create rooms in any category.", error=True)  # fmt: skip
        category = next((c for c in allowed if c.id == draft.category_id), allowed[0])
        draft.category_id = category.id
        chooser = render(
            """<p><label for="category">Category</label>
<select id="category" name="category" data-reload="category">$choices</select></p>
<p class="hint">Who may be chosen below depends on the category.</p>""",
            choices=options([(c.id, c.name) for c in allowed], category.id),
        )
        form = await self._room_form(viewer, draft, category, "/rooms/new", chooser, "Create room")
        error = status >= 400
        return page("Create a room", form, viewer, status=status, notice=notice, error=error)

    async def create(self, request: web.Request) -> web.Response:
        checked = await self._gate.form(request)
        if isinstance(checked, web.Response):
            return checked
        session, data = checked
        viewer = self._gate.viewer(session)
        draft = RoomRecord(id="", name=text(data, "name"), category_id=text(data, "category"))
        change = _change(data, roles=("members", "managers"))
        _draw(draft, change)
        if text(data, "action") == "check":
            notice = await self._check_notice(draft.name, "")
            return await self._create_page(session.actor, viewer, draft, notice)
        try:
            room = await self._mgmt.create_room(
                session.actor, draft.name, draft.category_id, change
            )
        except PchatError as exc:
            notice = str(exc) or exc.reason
            return await self._create_page(session.actor, viewer, draft, notice, exc.sip_status)
        await self._changed()
        return redirect(f"/rooms/{room.id}?done=created")

    # -- one room ------------------------------------------------------------------------

    async def room_page(self, request: web.Request) -> web.Response:
        session = await self._gate.signed_in(request)
        if isinstance(session, web.Response):
            return session
        viewer = self._gate.viewer(session)
        try:
            room, category = await self._mgmt.managed_room(
                session.actor, request.match_info["room"]
            )
        except PchatError as exc:
            return refusal("Room", viewer, exc)
        notice = DONE.get(request.query.get("done", ""), "")
        return await self._edit_page(viewer, room, category, notice)

    async def _edit_page(
        self, viewer: Viewer, room: RoomRecord, category: CategoryRecord, notice: str = "",
        status: int = 200,
    ) -> web.Response:  # fmt: skip
        form = await self._room_form(
            viewer, room, category, f"/rooms/{room.id}", Markup(""), "Save changes"
        )
        toggle = "enable" if room.disabled else "disable"
        switch = render(
            """<h2>State</h2><form method="post" action="/rooms/$id/$op" class="card">
<input type="hidden" name="csrf" value="$csrf"><p>This room is $state.</p>
<button type="submit">$label</button></form>$removal""",
            id=room.id, op=toggle, csrf=viewer.csrf, label=f"{toggle.title()} room",
            state="disabled: nobody can find or join it" if room.disabled else "enabled",
            removal=render(_REMOVAL, id=room.id) if viewer.admin else "",
        )  # fmt: skip
        files = await files_section(self._store, room, category, viewer, self._max_upload_kb)
        body = join([form, switch, files])
        return page(room.name, body, viewer, status=status, notice=notice, error=status >= 400)

    async def update(self, request: web.Request) -> web.Response:
        checked = await self._gate.form(request)
        if isinstance(checked, web.Response):
            return checked
        session, data = checked
        viewer = self._gate.viewer(session)
        ref = request.match_info["room"]
        try:
            room, category = await self._mgmt.managed_room(session.actor, ref)
            change = _change(data, roles=("members", "managers", "presenters"))
            if text(data, "action") == "check":
                _draw(room, change)
                notice = await self._check_notice(room.name, room.id)
                return await self._edit_page(viewer, room, category, notice)
            await self._mgmt.update_room(session.actor, ref, change)
        except PchatError as exc:
            return refusal("Room", viewer, exc)
        await self._changed()
        return redirect(f"/rooms/{room.id}?done=saved")

    async def disable(self, request: web.Request) -> web.Response:
        return await self._set_disabled(request, True)

    async def enable(self, request: web.Request) -> web.Response:
        return await self._set_disabled(request, False)

    async def _set_disabled(self, request: web.Request, disabled: bool) -> web.Response:
        checked = await self._gate.form(request)
        if isinstance(checked, web.Response):
            return checked
        session, _ = checked
        try:
            room = await self._mgmt.set_disabled(
                session.actor, request.match_info["room"], disabled
            )
        except PchatError as exc:
            return refusal("Room", self._gate.viewer(session), exc)
        await self._changed()
        return redirect(f"/rooms/{room.id}?done={'disabled' if disabled else 'enabled'}")

    # -- the form ------------------------------------------------------------------------

    async def _room_form(
        self, viewer: Viewer, room: RoomRecord, category: CategoryRecord, action: str,
        category_field: Markup, submit: str,
    ) -> Markup:  # fmt: skip
        offered = pool(await self._store.list_users(), category)
        roles = [("members", "Members", room.members), ("managers", "Managers", room.managers)]
        if room.id:
            roles.append(("presenters", "Presenters", room.presenters))
        pickers = join(picker(field, legend, offered, held) for field, legend, held in roles)
        if not room.id:
            pickers = join([Markup('<p class="hint">You are added as a manager.</p>'), pickers])
        radios = join(
            render(
                '<p><input type="radio" id="privacy-$v" name="privacy" value="$v"$c>'
                ' <label class="choice" for="privacy-$v">$label</label></p>',
                v=v, label=label, c=Markup(" checked" if room.privacy == v else ""),
            )
            for v, label in PRIVACY
        )  # fmt: skip
        type_field = Markup("")
        if room.id:
            kinds = [("normal", "Normal"), ("auditorium", "Auditorium")]
            type_field = render(_TYPE, choices=options(kinds, room.type))
        hint = "" if category.invitations else "Invitations are off in this room's category."
        up_hint = "" if category.file_upload else "File uploads are off in this room's category."
        return render(
            _ROOM_FORM,
            action=action, csrf=viewer.csrf, category_field=category_field, max=ROOM_TEXT_CHARS,
            name=room.name, room_id=room.id, check="", description=room.description,
            privacy=radios, type_field=type_field, pickers=pickers, submit=submit,
            inv_checked=Markup(" checked" if invitations_on(room, category) else ""),
            inv_off=Markup("" if category.invitations else " disabled"),
            inv_shown=Markup(_SHOWN.format("invitations") if category.invitations else ""),
            inv_hint=render('<p class="hint">$h</p>', h=hint) if hint else Markup(""),
            up_checked=Markup(" checked" if rules.uploads_on(room, category) else ""),
            up_off=Markup("" if category.file_upload else " disabled"),
            up_shown=Markup(_SHOWN.format("file_upload") if category.file_upload else ""),
            up_hint=render('<p class="hint">$h</p>', h=up_hint) if up_hint else Markup(""),
        )  # fmt: skip


def _change(data: Form, *, roles: tuple[str, ...]) -> RoomChange:
    """The form's fields as a change: the role lists replace the room's whole lists."""
    privacy = text(data, "privacy")
    kind = text(data, "type")
    change = RoomChange(
        name=text(data, "name"),
        description=text(data, "description"),
        privacy=privacy if privacy in ("open", "closed", "secret") else None,  # type: ignore[arg-type]
        type=kind if kind in ("normal", "auditorium") else None,  # type: ignore[arg-type]
        invitations=_switch(data, "invitations"),
        file_upload=_switch(data, "file_upload"),
    )
    for role in roles:
        setattr(change, role, chosen(data, role))
    return change


def _switch(data: Form, field: str) -> Literal["inherit", "off"] | None:
    """A room switch's box; None (kept as it is) when the category's switch is off and
    the box was shown disabled: a browser sends nothing for it either way."""
    if not text(data, f"{field}_shown"):
        return None
    return "inherit" if text(data, field) == "on" else "off"


def _draw(room: RoomRecord, change: RoomChange) -> None:
    """Shows a form's values again (after "check name" or an error) without saving."""
    copy_given(
        room, change, ("name", "description", "privacy", "type", "invitations", "file_upload")
    )
    for role in ("members", "managers", "presenters"):
        value = getattr(change, role)
        if value is not None:
            setattr(room, role, listed(value))
