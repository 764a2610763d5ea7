"""What a signing-in session asks for, read once and handed out once (sans-IO).

A sign-in asks getassociations member, manager and follower, then getinv, and the worker
loads the user's follows for the new session: five store reads of the same moment. The
worker reads them together when the session opens (`ChatStore.signin_rooms`, one thread
hop) and parks the pending read here; each of the session's first asks of a kind takes
its part once. Anything later asks the store again, and so does a take that finds the
read older than `MAX_AGE_S` or dropped: by an admin change (the worker's revision refresh
clears everything; a new invitation comes with one), by the session's own
follow/unfollow, or by invitations of its user shown elsewhere on this worker (another
session's getinv, an ntc:inv), which its parked list would show again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

Kind = Literal["member", "manager", "follower", "invitations"]
KINDS: tuple[Kind, ...] = ("member", "manager", "follower", "invitations")
# As fresh as the user record a sign-in already trusts (useragent.RECORD_FRESH_S): an
# admin change reaches every worker within its revision poll (1 s) anyway.
MAX_AGE_S = 1.0
# Sign-ins in progress on one worker are bounded by its unauthenticated-connection caps
# and the clients' round trips; a read is taken within milliseconds. 4096 parked reads
# (a few hundred bytes each, plus the rooms) cover a restart's storm; past it the
# oldest goes and its session reads the store again.
MAX_VIEWS = 4096

T = TypeVar("T")


class _View(Generic[T]):
    __slots__ = ("read", "made", "left", "user")

    def __init__(self, read: T, made: float, user: str) -> None:
        self.read = read
        self.made = made
        self.left: set[Kind] = set(KINDS)
        self.user = user


class SigninViews(Generic[T]):
    """Pending or finished sign-in reads by session id; each kind is handed out once."""

    def __init__(
        self,
        *,
        max_views: int = MAX_VIEWS,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._views: OrderedDict[str, _View[T]] = OrderedDict()  # oldest first
        self._by_user: dict[str, set[str]] = {}  # user -> session ids with a parked read
        self._max_views = max_views
        self._max_age_s = max_age_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._views)

    def put(self, session_id: str, read: T, user: str = "") -> None:
        """Parks the session's read (an awaitable, or its result) of ``user``'s records."""
        now = self._clock()
        self.drop(session_id)
        self._views[session_id] = _View(read, now, user)
        self._by_user.setdefault(user, set()).add(session_id)
        views = self._views
        while views:  # the old ones are at the front: O(1) per put, amortised
            oldest_id, oldest = next(iter(views.items()))
            if len(views) <= self._max_views and now - oldest.made <= self._max_age_s:
                break
            self.drop(oldest_id)

    def take(self, session_id: str, kind: Kind) -> T | None:
        """The read, for the first ask of ``kind`` within MAX_AGE_S; else None (ask the
        store)."""
        view = self._views.get(session_id)
        if view is None:
            return None
        if self._clock() - view.made > self._max_age_s:
            self.drop(session_id)
            return None
        if kind not in view.left:
            return None
        view.left.discard(kind)
        if not view.left:
            self.drop(session_id)
        return view.read

    def drop(self, session_id: str) -> None:
        """The session changed what it follows, or ended."""
        view = self._views.pop(session_id, None)
        if view is None:
            return
        sessions = self._by_user.get(view.user)
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self._by_user[view.user]

    def drop_user(self, user: str) -> None:
        """``user``'s invitations were shown (marked delivered): no session of theirs may
        show them again from a parked read."""
        for session_id in list(self._by_user.get(user, ())):
            self.drop(session_id)

    def clear(self) -> None:
        """An admin changed the store: no parked read is to be trusted."""
        self._views.clear()
        self._by_user.clear()
