"""The SIP answer of an INFO that carries posts: sent once every post in it has its outcome.

An INFO without posts is answered 200 at once (XCCOS.md §1.3). An INFO with posts waits:
SIPE shows a post as "not delivered" only when its INFO fails, and ignores rpl:grpchat.
So the answer is the first refusal's status (403 not joined / not allowed, 404 no such or
disabled room, 413 too long, 503 owner unreachable...), else 200. The envelope's rpls wait
with it, so that a 200 still comes before its rpls and a refusal's rpl comes before the
error, which lets a client that stops at the error status still read why.
"""

from __future__ import annotations

from collections.abc import Callable

from core.errors import PchatError


class PostAnswer:
    """Counts the posts of one envelope still running; holds the envelope's rpls until then.

    ``respond(refusal)`` sends the SIP response (None: 200); ``send_inner`` sends one rpl.
    Both are called exactly once per held item / once per answer."""

    __slots__ = ("_respond", "_send_inner", "_running", "_refusal", "_held", "_sealed")

    def __init__(
        self,
        respond: Callable[[PchatError | None], None],
        send_inner: Callable[[str], None],
    ) -> None:
        self._respond: Callable[[PchatError | None], None] | None = respond
        self._send_inner = send_inner
        self._running = 0
        self._refusal: PchatError | None = None
        # At most one rpl per envelope item, and items are capped (limits.envelope_items).
        self._held: list[str] = []
        self._sealed = False  # every item of the envelope has been started

    @property
    def answered(self) -> bool:
        return self._respond is None

    def started(self) -> None:
        self._running += 1

    def reply(self, inner: str) -> None:
        """An rpl of this envelope: held while the answer is pending, else sent."""
        if self._respond is None:
            self._send_inner(inner)
        else:
            self._held.append(inner)

    def post_done(self, inner: str, refusal: PchatError | None) -> None:
        self._running -= 1
        if refusal is not None and self._refusal is None:
            self._refusal = refusal
        self.reply(inner)
        self._finish()

    def seal(self) -> None:
        self._sealed = True
        self._finish()

    def fail(self, error: PchatError) -> None:
        """The envelope will not finish (the session ended, a bug): answer with ``error``."""
        respond, self._respond = self._respond, None
        self._held.clear()
        if respond is not None:
            respond(error)

    def _finish(self) -> None:
        if not self._sealed or self._running or self._respond is None:
            return
        respond, self._respond = self._respond, None
        held, self._held = self._held, []
        if self._refusal is None:
            respond(None)
        for inner in held:
            self._send_inner(inner)
        if self._refusal is not None:
            respond(self._refusal)
