"""What every `pchat admin` command shares: its error, its output and its signature."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

from core.config import Settings
from core.files.registry import make_storage
from core.rooms.management import Management, principal
from core.store.base import ChatStore, UserRecord

Out = Callable[[str], None]


class AdminError(Exception):
    """Shown to the operator as is; the command exits with status 2."""


# An action changes or shows the store; True: it changed something (workers are told).
Action = Callable[[ChatStore, Settings, argparse.Namespace, Out], Awaitable[bool]]


def management(store: ChatStore, s: Settings) -> Management:
    return Management(
        store,
        invitations_per_change=s.limits.invitations_per_change,
        files=make_storage(s.files.backend, s.files_dir),
    )


async def user_of(store: ChatStore, uri: str) -> UserRecord:
    record = await store.get_user(principal(uri))
    if record is None:
        raise AdminError(f"no user {uri}; add it with: pchat admin user add {uri} --password …")
    return record
