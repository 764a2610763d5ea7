"""Deleting a room and removing posts from its history, on the room pages (shards layer).

Both are `Management` calls (core/rooms/management.py ``delete_room``, ``remove_message``),
the same rule as the JSON API and `pchat admin`: administrators only (the history is a
compliance record; a room's managers disable it instead). A room one may not see answers
404, any other non-administrator 403 (``Management.removable_room``). Deleting asks first: a
page says what goes (the history, the files) and the form needs its box ticked. The
history page lists the newest posts with their message ids, each with its Remove button.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from core.errors import BadRequest, PchatError
from core.rooms.management import Management
from core.store.base import ChatStore, RoomRecord
from shards.web.html import Markup, Viewer, join, page, refusal, render
from shards.web.pages_signin import PageGate, redirect
from shards.web.pickers import address, text
from shards.web.signin import Session

# Posts listed on the history page: enough to find a post just made, few enough to read;
# an older one is removed by its id through the API or `pchat admin message remove`.
MAX_LISTED_MESSAGES = 50
DONE = {"removed": "Message removed."}

_CONFIRM = """<form method="post" action="/rooms/$id/delete" class="card">
<input type="hidden" name="csrf" value="$csrf">
<p>Deleting <strong>$name</strong> removes its whole history and its $files for good.
To keep them, disable the room instead.</p>
<p><input type="checkbox" id="confirm" name="confirm" value="yes" required>
<label class="choice" for="confirm">Yes, delete this room and everything in it</label></p>
<p><button type="submit" class="danger">Delete room</button>
<a href="/rooms/$id">Cancel</a></p></form>"""

_HISTORY = """<p><a href="/rooms/$id">Back to the room</a></p>
<table><caption class="hint">$caption</caption>
<thead><tr><th scope="col">Message id</th><th scope="col">From</th>
<th scope="col">Sent (UTC)</th><th scope="col">Text</th><th scope="col">Remove</th></tr></thead>
<tbody>
$rows
</tbody></table>"""

_MESSAGE = """<tr><td>$seq</td><td>$who</td><td>$when</td><td class="text">$text</td>
<td><form method="post" action="/rooms/$id/messages/$seq/remove" class="inline">
<input type="hidden" name="csrf" value="$csrf">
<button type="submit" class="secondary" aria-label="Remove message $seq">Remove</button>
</form></td></tr>"""


class RemovalPages:
    def __init__(
        self,
        store: ChatStore,
        mgmt: Management,
        gate: PageGate,
        changed: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._mgmt = mgmt
        self._gate = gate
        self._changed = changed  # tells every worker at once, as the API does

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/rooms/{room}/delete", self.confirm)
        r.add_post("/rooms/{room}/delete", self.delete)
        r.add_get("/rooms/{room}/history", self.history)
        r.add_post("/rooms/{room}/messages/{msgid}/remove", self.remove)

    async def _removable(
        self, request: web.Request, title: str
    ) -> tuple[Session, RoomRecord] | web.Response:
        session = await self._gate.signed_in(request)
        if isinstance(session, web.Response):
            return session
        try:
            room = await self._mgmt.removable_room(session.actor, request.match_info["room"])
        except PchatError as exc:
            return refusal(title, self._gate.viewer(session), exc)
        return session, room

    async def _confirm_page(
        self, viewer: Viewer, room: RoomRecord, notice: str = "", status: int = 200
    ) -> web.Response:
        count = len(await self._store.room_files(room.id))
        files = "1 file" if count == 1 else f"{count} files"
        body = render(_CONFIRM, id=room.id, csrf=viewer.csrf, name=room.name, files=files)
        title = f"Delete {room.name}"
        return page(title, body, viewer, status=status, notice=notice, error=status >= 400)

    async def confirm(self, request: web.Request) -> web.Response:
        found = await self._removable(request, "Delete room")
        if isinstance(found, web.Response):
            return found
        session, room = found
        return await self._confirm_page(self._gate.viewer(session), room)

    async def delete(self, request: web.Request) -> web.Response:
        checked = await self._gate.form(request)
        if isinstance(checked, web.Response):
            return checked
        session, data = checked
        viewer = self._gate.viewer(session)
        ref = request.match_info["room"]
        try:
            room = await self._mgmt.removable_room(session.actor, ref)
            if text(data, "confirm") != "yes":
                notice = "Tick the box to confirm; nothing was deleted."
                return await self._confirm_page(viewer, room, notice, BadRequest.sip_status)
            await self._mgmt.delete_room(session.actor, room.id)
        except PchatError as exc:
            return refusal("Delete room", viewer, exc)
        await self._changed()
        return redirect("/rooms?done=deleted")

    async def history(self, request: web.Request) -> web.Response:
        found = await self._removable(request, "History")
        if isinstance(found, web.Response):
            return found
        session, room = found
        posts = (await self._store.history_last(room.id, MAX_LISTED_MESSAGES))[::-1]
        rows = join(
            render(
                _MESSAGE,
                id=room.id,
                seq=m.seq,
                who=address(m.author),
                text=m.text,
                csrf=session.csrf,
                when=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.ts_ms / 1000)),
            )  # fmt: skip
            for m in posts
        )
        caption = f"The newest {MAX_LISTED_MESSAGES} posts, newest first" if posts else ""
        empty = Markup('<tr><td colspan="5">No posts kept.</td></tr>')
        body = render(_HISTORY, id=room.id, caption=caption, rows=rows or empty)
        notice = DONE.get(request.query.get("done", ""), "")
        viewer = self._gate.viewer(session)
        return page(f"History of {room.name}", body, viewer, notice=notice)

    async def remove(self, request: web.Request) -> web.Response:
        checked = await self._gate.form(request)
        if isinstance(checked, web.Response):
            return checked
        session, _ = checked
        ref = request.match_info["room"]
        try:
            msgid = int(request.match_info["msgid"])
        except ValueError:
            return refusal("History", self._gate.viewer(session), BadRequest("no such message id"))
        try:
            room = await self._mgmt.removable_room(session.actor, ref)
            await self._mgmt.remove_message(session.actor, room.id, msgid)
        except PchatError as exc:
            return refusal("History", self._gate.viewer(session), exc)
        await self._changed()
        return redirect(f"/rooms/{room.id}/history?done=removed")
