"""The audit record of one `pchat admin` change: the OS user, the host and terminal, the
command and its arguments (never --password)."""

from __future__ import annotations

import argparse
import getpass
import os
import socket

from core.config import Settings
from shards.audit import AuditLog

# Where the store is and how to reach it say nothing about the change itself.
_NOT_DETAILS = frozenset(
    {"object", "op", "password", "config", "data_dir", "store", "redis_url", "log_level"}
    | {"log_format", "domain", "command"}
)
_TARGETS = ("uri", "name", "room", "file", "path")


def os_user() -> str:
    """Who ran the command; with sudo, the user behind it too."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {sudo})" if sudo and sudo != user else user


def cli_source() -> str:
    try:
        terminal = os.ttyname(0)
    except OSError:
        terminal = "no terminal"
    return f"{socket.gethostname()} {terminal} pid {os.getpid()}"


def cli_audit(settings: Settings, args: argparse.Namespace) -> None:
    values = vars(args)
    target_key = next((k for k in _TARGETS if values.get(k) is not None), "")
    details = {
        k: v
        for k, v in values.items()
        if k not in _NOT_DETAILS and k != target_key and v not in (None, [], False)
    }
    AuditLog(settings.audit_file).record(
        actor=os_user(),
        via="admin-cli",
        source=cli_source(),
        action=f"{args.object} {args.op}".strip(),
        target=str(values.get(target_key, "")),
        details=details,
    )
