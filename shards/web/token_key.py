"""The file-token secret: 32 random bytes in a mode-0600 file, made once per install."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from core.auth.filetoken import SECRET_BYTES


def load_token_secret(path: str) -> bytes:
    """Reads the secret, creating it first when missing. Several workers may start at once:
    the secret is written whole to a private temporary file, then linked into place, so
    every process reads the same complete secret (link fails if another won the race)."""
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            with contextlib.suppress(FileExistsError):
                os.link(temp, target)
        finally:
            temp.unlink()
    mode = target.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    secret = target.read_bytes()
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"{path} holds {len(secret)} bytes; the file token needs {SECRET_BYTES}")
    return secret
