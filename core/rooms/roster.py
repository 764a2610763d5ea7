"""Who is online in one room: sessions, and users (one user may have several devices)."""

from __future__ import annotations

from collections.abc import Iterator

from core.rooms.events import Participant


class Roster:
    """Sessions by id, with a count of sessions per user: notices and ``ucnt`` speak of
    users, so a second device neither announces its user again nor counts twice."""

    __slots__ = ("_sessions", "_per_user")

    def __init__(self) -> None:
        self._sessions: dict[str, Participant] = {}
        self._per_user: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session: str) -> bool:
        return session in self._sessions

    def __iter__(self) -> Iterator[Participant]:
        return iter(list(self._sessions.values()))

    @property
    def user_count(self) -> int:
        return len(self._per_user)

    def users(self) -> list[str]:
        return sorted(self._per_user)

    def add(self, who: Participant) -> bool:
        """True when the user was not online in the room before."""
        if who.session in self._sessions:
            return False
        self._sessions[who.session] = who
        before = self._per_user.get(who.user, 0)
        self._per_user[who.user] = before + 1
        return before == 0

    def remove(self, session: str) -> tuple[Participant | None, bool]:
        """The session's participant, and whether its user has now left altogether."""
        who = self._sessions.pop(session, None)
        if who is None:
            return None, False
        left = self._per_user[who.user] - 1
        if left:
            self._per_user[who.user] = left
            return who, False
        del self._per_user[who.user]
        return who, True
