"""Administrators' pages: categories (the ethical wall, creators, switches) and users.

As on the room pages, every change is a `Management` call (core/rooms/management.py), so
a non-administrator gets the same 403 here as from the API or `pchat admin`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web

from core.errors import BadRequest, PchatError
from core.rooms.management import CategoryChange, Management, need_admin
from core.store.base import CategoryRecord, ChatStore, UserRecord
from shards.web.html import Markup, Viewer, join, page, refusal, render
from shards.web.pages_signin import PageGate, redirect
from shards.web.pickers import address, chosen, picker, text
from shards.web.signin import Session

# Users listed at once; a search narrows a bigger directory (one page stays quick to use).
MAX_LISTED_USERS = 500
DONE = {"created": "Category created.", "saved": "Changes saved.", "deleted": "Category deleted.",
        "user": "User changed."}  # fmt: skip
SWITCHES = [("invitations", "Invitations to new members"), ("file_upload", "File uploads"),
            ("history", "Keep history (off: posts are delivered, not kept)")]  # fmt: skip
USER_OPS = {"enable": {"enabled": True}, "disable": {"enabled": False},
            "grant": {"admin": True}, "revoke": {"admin": False}}  # fmt: skip

_CATEGORIES = """<table><thead><tr><th scope="col">Category</th><th scope="col">Description</th>
<th scope="col">Creators</th><th scope="col">Allowed</th><th scope="col">Denied</th></tr></thead>
<tbody>$rows</tbody></table>
<h2>New category</h2>
<form method="post" action="/admin/categories" class="card">
<input type="hidden" name="csrf" value="$csrf">
<p><label for="new-name">Name</label><input id="new-name" name="name" type="text" required></p>
<p><label for="new-description">Description</label>
<input id="new-description" name="description" type="text"></p>
<p><button type="submit">Create category</button></p></form>"""

_CATEGORY_ROW = """<tr><td><a href="/admin/categories/$id">$name</a></td><td>$description</td>
<td>$creators</td><td>$allowed</td><td>$denied</td></tr>"""

_CATEGORY_FORM = """<form method="post" action="/admin/categories/$id" class="card">
<input type="hidden" name="csrf" value="$csrf">
<p><label for="name">Name</label>
<input id="name" name="name" type="text" required value="$name"></p>
<p><label for="description">Description</label>
<input id="description" name="description" type="text" value="$description"></p>
<fieldset><legend>Switches</legend>$switches</fieldset>
$pickers
<p class="hint">Nobody allowed means everyone is; denied always wins.</p>
<p><button type="submit">Save changes</button></p></form>
<form method="post" action="/admin/categories/$id/delete" class="card">
<input type="hidden" name="csrf" value="$csrf">
<p>A category can be deleted once it has no rooms.</p>
<button type="submit" class="secondary">Delete category</button></form>"""

_USERS = """<form method="get" action="/admin/users" class="card" role="search">
<p><label for="q">Find users</label><input id="q" name="q" type="text" value="$q">
<button type="submit">Find</button></p></form>
<table><caption class="hint">$caption</caption>
<thead><tr><th scope="col">User</th><th scope="col">Persistent chat</th>
<th scope="col">Administrator</th></tr></thead><tbody>$rows</tbody></table>"""

_USER_ROW = """<tr><td>$who</td>
<td>$state $chat_form</td><td>$role $admin_form</td></tr>"""

_USER_FORM = """<form method="post" action="/admin/users" class="inline">
<input type="hidden" name="csrf" value="$csrf"><input type="hidden" name="uri" value="$uri">
<input type="hidden" name="q" value="$q">
<button type="submit" name="op" value="$op" class="secondary"
 aria-label="$label $who">$label</button></form>"""


def _names(principals: list[str]) -> str:
    return ", ".join(address(p) for p in principals) or "—"


class AdminPages:
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
        self._changed = changed

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/admin/categories", self.categories)
        r.add_post("/admin/categories", self.create_category)
        r.add_get("/admin/categories/{category}", self.category)
        r.add_post("/admin/categories/{category}", self.update_category)
        r.add_post("/admin/categories/{category}/delete", self.delete_category)
        r.add_get("/admin/users", self.users)
        r.add_post("/admin/users", self.set_user)

    async def _admin(self, request: web.Request) -> Session | web.Response:
        session = await self._gate.signed_in(request)
        if isinstance(session, web.Response):
            return session
        try:
            need_admin(session.actor, "this")
        except PchatError as exc:
            return refusal("Refused", self._gate.viewer(session), exc)
        return session

    async def _changing(
        self, request: web.Request, work: Callable[[Session, dict[str, str]], Awaitable[str]]
    ) -> web.Response:
        """A checked form, the change (which returns where to go next), the notice."""
        checked = await self._gate.form(request)
        if isinstance(checked, web.Response):
            return checked
        session, data = checked
        fields = {k: v for k, v in data.items() if isinstance(v, str)}
        try:
            target = await work(session, fields)
        except PchatError as exc:
            return refusal("Refused", self._gate.viewer(session), exc)
        await self._changed()
        return redirect(target)

    # -- categories ----------------------------------------------------------------------

    async def categories(self, request: web.Request) -> web.Response:
        session = await self._admin(request)
        if isinstance(session, web.Response):
            return session
        rows = join(
            render(
                _CATEGORY_ROW,
                id=c.id,
                name=c.name,
                description=c.description,
                creators=_names(c.creators),
                allowed=_names(c.allowed) if c.allowed else "everyone",
                denied=_names(c.denied),
            )  # fmt: skip
            for c in sorted(await self._store.list_categories(), key=lambda c: c.name.casefold())
        )
        body = render(_CATEGORIES, rows=rows, csrf=session.csrf)
        notice = DONE.get(request.query.get("done", ""), "")
        return page("Categories", body, self._gate.viewer(session), notice=notice)

    async def create_category(self, request: web.Request) -> web.Response:
        async def work(session: Session, data: dict[str, str]) -> str:
            change = CategoryChange(description=data.get("description", ""))
            made = await self._mgmt.create_category(
                session.actor, data.get("name", "").strip(), change
            )
            return f"/admin/categories/{made.id}?done=created"

        return await self._changing(request, work)

    async def category(self, request: web.Request) -> web.Response:
        session = await self._admin(request)
        if isinstance(session, web.Response):
            return session
        viewer = self._gate.viewer(session)
        try:
            found = await self._mgmt.category(request.match_info["category"])
        except PchatError as exc:
            return refusal("Refused", viewer, exc)
        body = self._category_form(viewer, found, await self._store.list_users())
        notice = DONE.get(request.query.get("done", ""), "")
        return page(f"Category {found.name}", body, viewer, notice=notice)

    @staticmethod
    def _category_form(viewer: Viewer, c: CategoryRecord, users: list[UserRecord]) -> Markup:
        everyone = sorted(users, key=lambda u: u.uri)
        switches = join(
            render(
                '<p><input type="checkbox" id="$f" name="$f" value="on"$c>'
                ' <label class="choice" for="$f">$label</label></p>',
                f=field,
                label=label,
                c=Markup(" checked" if getattr(c, field) else ""),
            )  # fmt: skip
            for field, label in SWITCHES
        )
        pickers = join([
            picker("creators", "Creators", everyone, c.creators),
            picker("allowed", "Allowed", everyone, c.allowed),
            picker("denied", "Denied", everyone, c.denied),
        ])  # fmt: skip
        return render(_CATEGORY_FORM, id=c.id, csrf=viewer.csrf, name=c.name,
                      description=c.description, switches=switches, pickers=pickers)  # fmt: skip

    async def update_category(self, request: web.Request) -> web.Response:
        ref = request.match_info["category"]

        async def work(session: Session, _: dict[str, str]) -> str:
            data = await request.post()  # already read and cached by the gate
            change = CategoryChange(
                name=text(data, "name").strip() or None,
                description=text(data, "description"),
                creators=chosen(data, "creators"),
                allowed=chosen(data, "allowed"),
                denied=chosen(data, "denied"),
                **{field: text(data, field) == "on" for field, _ in SWITCHES},
            )
            done = await self._mgmt.update_category(session.actor, ref, change)
            return f"/admin/categories/{done.id}?done=saved"

        return await self._changing(request, work)

    async def delete_category(self, request: web.Request) -> web.Response:
        ref = request.match_info["category"]

        async def work(session: Session, _: dict[str, str]) -> str:
            await self._mgmt.delete_category(session.actor, ref)
            return "/admin/categories?done=deleted"

        return await self._changing(request, work)

    # -- users ---------------------------------------------------------------------------

    async def users(self, request: web.Request) -> web.Response:
        session = await self._admin(request)
        if isinstance(session, web.Response):
            return session
        query = request.query.get("q", "").strip().lower()
        found = [u for u in await self._store.list_users() if query in u.uri.lower()
                 or query in u.display_name.lower()]  # fmt: skip
        found.sort(key=lambda u: u.uri)
        rows = join(self._user_row(session, u, query) for u in found[:MAX_LISTED_USERS])
        caption = f"{len(found)} user(s)" + (
            f", the first {MAX_LISTED_USERS} shown: narrow the search"
            if len(found) > MAX_LISTED_USERS
            else ""
        )
        body = render(_USERS, q=query, caption=caption, rows=rows)
        notice = DONE.get(request.query.get("done", ""), "")
        return page("Users", body, self._gate.viewer(session), notice=notice)

    @staticmethod
    def _user_row(session: Session, u: UserRecord, query: str) -> Markup:
        who = f"{address(u.uri)} ({u.display_name})" if u.display_name else address(u.uri)

        def button(op: str, label: str) -> Markup:
            return render(
                _USER_FORM, csrf=session.csrf, uri=u.uri, op=op, label=label, who=who, q=query
            )

        return render(
            _USER_ROW, who=who, state="on" if u.enabled else "off", role="yes" if u.admin else "no",
            chat_form=button("disable", "Disable") if u.enabled else button("enable", "Enable"),
            admin_form=button("revoke", "Remove administrator") if u.admin
            else button("grant", "Make administrator"),
        )  # fmt: skip

    async def set_user(self, request: web.Request) -> web.Response:
        async def work(session: Session, data: dict[str, str]) -> str:
            op = USER_OPS.get(data.get("op", ""))
            if op is None:
                raise BadRequest("op must be enable, disable, grant or revoke")
            await self._mgmt.set_user(session.actor, data.get("uri", ""), **op)
            return "/admin/users?" + urlencode({"done": "user", "q": data.get("q", "")})

        return await self._changing(request, work)
