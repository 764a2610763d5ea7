"""The sign-in and sign-out pages, and the gate every other page passes (shards layer).

A page answers only a signed-in session (else a redirect to /signin). A form that changes
something is accepted only with an ``Origin`` of this server (browsers send it on every
POST; a foreign page's is refused) and the session's token in its ``csrf`` field.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from shards.web.access import USER_KEY
from shards.web.audit_trail import CLAIMED_KEY
from shards.web.csrf import CsrfGuard
from shards.web.html import Markup, Viewer, page, render
from shards.web.signin import CSRF_FIELD, Credentials, Session, Sessions, Throttled

Form = MultiDictProxy[str | bytes | bytearray | web.FileField]  # what request.post() gives
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
HOME = "/rooms"

_FORM = """<form method="post" action="/signin" class="card">
<input type="hidden" name="next" value="$next">
<p><label for="user">SIP address</label>
<input id="user" name="user" type="text" autocomplete="username" required autofocus
 value="$user" placeholder="alice@example.com"></p>
<p><label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p>
</form>"""


def local_path(target: str) -> str:
    """Where to go after signing in: a path of this server only, never another site."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return HOME


def redirect(target: str) -> web.Response:
    """303 See Other: after a form, the browser GETs the result (no re-post on reload)."""
    return web.Response(status=303, headers={"Location": target})


class PageGate:
    """Sign-in, sign-out, and the checks of every page request."""

    def __init__(self, credentials: Credentials, sessions: Sessions, guard: CsrfGuard) -> None:
        self._credentials = credentials
        self._sessions = sessions
        self._guard = guard

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/signin", self.signin_form)
        app.router.add_post("/signin", self.signin)
        app.router.add_post("/signout", self.signout)

    @staticmethod
    def viewer(session: Session) -> Viewer:
        return Viewer(session.actor.uri, session.csrf, admin=session.actor.admin)

    async def signed_in(self, request: web.Request) -> Session | web.Response:
        """The page's session, or a redirect to the sign-in page that comes back here."""
        session = await self._sessions.session(request)
        if session is not None:
            request[USER_KEY] = session.actor.uri  # for the access and audit logs
            return session
        if request.method != "GET":
            return page("Signed out", Markup(""), status=401, notice="Sign in first.", error=True)
        return redirect(f"/signin?next={quote(request.path_qs, safe='')}")

    def _origin_refusal(self, request: web.Request) -> web.Response | None:
        refused = self._guard.refusal(request, json_only=False)
        if refused is None and "Origin" not in request.headers:
            refused = web.Response(status=403, text="a form must be sent by a page (Origin)\n")
        if refused is None and request.content_type not in FORM_TYPES:
            refused = web.Response(status=415, text="a page's request must be a form\n")
        if refused is not None:
            return page("Refused", Markup(""), status=refused.status, notice=refused.text or "")
        return None

    async def form(self, request: web.Request) -> tuple[Session, Form] | web.Response:
        """A changing request's session and form, after the origin and token checks."""
        refused = self._origin_refusal(request)
        if refused is not None:
            return refused
        session = await self.signed_in(request)
        if isinstance(session, web.Response):
            return session
        data = await request.post()
        token = data.get(CSRF_FIELD)
        if not isinstance(token, str) or token != session.csrf:
            return page(
                "Refused",
                Markup(""),
                self.viewer(session),
                status=403,
                notice="This form is out of date or was not sent by this server's page; "
                "reload the page and try again.",
                error=True,
            )
        return session, data

    async def signin_form(self, request: web.Request) -> web.Response:
        body = render(_FORM, next=local_path(request.query.get("next", HOME)), user="")
        return page("Sign in", body)

    async def signin(self, request: web.Request) -> web.Response:
        refused = self._origin_refusal(request)
        if refused is not None:
            return refused
        data = await request.post()
        user, password = data.get("user", ""), data.get("password", "")
        target = local_path(str(data.get("next", HOME)))
        if not isinstance(user, str) or not isinstance(password, str) or not user:
            return self._again(target, "", "Enter your SIP address and password.", 400)
        result = await self._credentials.check(user, password, request.remote or "?")
        if not isinstance(result, Throttled):
            request[CLAIMED_KEY] = result.uri if result is not None else user  # audited
        if isinstance(result, Throttled):
            response = self._again(target, user, "Too many sign-in attempts; try later.", 429)
            response.headers["Retry-After"] = str(result.retry_after_s)
            return response
        if result is None:
            return self._again(target, user, "Wrong SIP address or password.", 401)
        response = redirect(target)
        self._sessions.set_cookie(response, request, await self._sessions.issue(result))
        return response

    def _again(self, target: str, user: str, notice: str, status: int) -> web.Response:
        body = render(_FORM, next=target, user=user)
        return page("Sign in", body, status=status, notice=notice, error=True)

    async def signout(self, request: web.Request) -> web.Response:
        checked = await self.form(request)
        if isinstance(checked, web.Response):
            return checked
        response = redirect("/signin")
        self._sessions.clear_cookie(response, request)
        return response
