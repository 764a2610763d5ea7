"""The audit log: every administrative change, who made it, from where and when.

One JSON object per line, appended to ``log.audit_file`` (default <data_dir>/audit.log) by
`pchat admin` and by every worker's web parts (the API, the file store's uploads, the
pages, sign-in and the WebSocket upgrade: shards/web/audit_trail.py). Each record is one
``write`` on a descriptor opened with O_APPEND, so records of several processes never
interleave, and the file is opened per record, so logrotate may rename it at any time.
Records are bounded (``MAX_*``) and hold no password or token: the CLI's ``--password`` is
never copied, and the web's secret fields are dropped (``SECRET_KEYS``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# Bounds of one record: a member list of thousands must not make a megabyte line.
MAX_TEXT_CHARS = 200
MAX_ITEMS = 20
MAX_RECORD_BYTES = 8 * 1024
SECRET_KEYS = frozenset({"password", "ha1", "authorization", "csrf"})  # never recorded


def bounded(value: object, depth: int = 0) -> object:
    """``value`` cut to the record's bounds: long text, long lists and deep nesting."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT_CHARS else value[:MAX_TEXT_CHARS] + "…"
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth >= 2:
        return "…"
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items() if str(k).lower() not in SECRET_KEYS]
        out = {k: bounded(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["…"] = f"{len(items) - MAX_ITEMS} more"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        cut = [bounded(v, depth + 1) for v in seq[:MAX_ITEMS]]
        return cut + [f"… {len(seq) - MAX_ITEMS} more"] if len(seq) > MAX_ITEMS else cut
    return bounded(str(value), depth)


class AuditLog:
    """Appends records to one file; a failure to write is logged, never raised: the change
    it describes is already made, and refusing to answer would hide that."""

    def __init__(self, path: str) -> None:
        self.path = path

    def record(
        self,
        *,
        actor: str,
        via: str,
        source: str,
        action: str,
        target: str,
        details: object,
        result: str = "ok",
        status: int | None = None,
    ) -> None:
        """``actor`` who (SIP address or OS user), ``via`` admin-cli, http-api, file-store,
        web-page or websocket, ``source`` where from (peer address, or host and terminal),
        ``action`` what, ``target`` on what, ``result`` ok, refused or failed (with the
        HTTP ``status`` of a web request)."""
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "actor": bounded(actor),
            "via": via,
            "source": bounded(source),
            "action": bounded(action),
            "target": bounded(target),
            "details": bounded(details),
            "result": result,
        }
        if status is not None:
            entry["status"] = status
        line = json.dumps(entry, ensure_ascii=True, default=str).encode() + b"\n"
        if len(line) > MAX_RECORD_BYTES:
            entry["details"] = "… (too large to record)"
            line = json.dumps(entry, ensure_ascii=True, default=str).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("cannot write the audit log %s: %s; the change was: %s", self.path, exc, line)
