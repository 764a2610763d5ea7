"""Whether a session missing from a room's roster is refused (403) or asked to retry (503).

A roster can lack a member for a while without the member having left: a new owner starts
with empty rosters (a takeover), and an owner drops a gateway's sessions when that gateway
comes back onto the bus with no memory (``RoomOwner.drop_gateway``) until the gateway
re-announces them. A post in that window is owed a 503, which the client retries, not a
403, which it does not. This module is the one place that tells the two apart."""

from __future__ import annotations

from collections.abc import Callable

from core.errors import Forbidden, Overloaded, PchatError

# After a room is loaded, gateways re-announce their sessions to its new owner. That takes
# milliseconds; 5 s covers a busy box.
ROOM_GRACE_S = 5.0
# Gateways dropped within their grace that are remembered at once. A pool has a few dozen
# worker nodes (node ids are host_id x 1000 + worker); this bounds the table even if node
# ids churn, the oldest drop going first.
MAX_DROPPED_GATEWAYS = 1024


def session_gateway(session: str) -> int | None:
    """The node of a gateway session id ("<node>.<n>"); None for other posters."""
    node, dot, _ = session.partition(".")
    return int(node) if dot and node.isdigit() else None


class RejoinGrace:
    """Remembers recent gateway drops; answers a non-member's post with 403 or 503."""

    def __init__(self, clock: Callable[[], float], gateway_grace_s: float) -> None:
        self._clock = clock
        # 0: no grace after a gateway drop (one host, no leases: a gateway that comes
        # back is a restarted worker whose sessions are gone with it).
        self._gateway_grace_s = gateway_grace_s
        self._dropped: dict[int, float] = {}  # gateway node -> when its sessions were dropped

    def gateway_dropped(self, gateway: int) -> None:
        if self._gateway_grace_s <= 0:
            return
        now = self._clock()
        self._dropped.pop(gateway, None)
        self._dropped[gateway] = now  # insertion order = drop order
        expired = now - self._gateway_grace_s
        while self._dropped and (
            len(self._dropped) > MAX_DROPPED_GATEWAYS
            or next(iter(self._dropped.values())) < expired
        ):
            del self._dropped[next(iter(self._dropped))]

    def non_member(self, session: str, loaded_s: float, leased: bool) -> PchatError:
        """The error for a post from a session not in the roster of a room loaded at
        ``loaded_s``; ``leased``: the room is served under a shard lease (a pool)."""
        now = self._clock()
        if leased and now - loaded_s < ROOM_GRACE_S:
            return Overloaded("the room's new owner is still hearing who is in; retry")
        gateway = session_gateway(session)
        dropped = self._dropped.get(gateway) if gateway is not None else None
        if dropped is not None and now - dropped < self._gateway_grace_s:
            return Overloaded("this server is still hearing who is in after a reconnect; retry")
        return Forbidden("join the room before posting")
