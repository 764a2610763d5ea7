"""Start-up claims of `pchat serve`: the data dir's lock and the listen ports, before "serving"."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from core.config import Settings

LOCK_NAME = "pchat.lock"
# sysexits.h EX_CONFIG: a worker that cannot start (bind, certificate) says so with this code,
# and the supervisor stops instead of restarting it forever.
EXIT_CANNOT_START = 78
# sysexits.h EX_PROTOCOL: a worker found another host using its host_id (shards/host_claim.py);
# the supervisor stops the host instead of restarting it.
EXIT_DUPLICATE_HOST = 76


class InUse(RuntimeError):
    """Another server (or program) holds what this one needs; the message names it."""


class CannotStart(RuntimeError):
    """A child failed before serving; restarting it would fail the same way."""


def lock_data_dir(data_dir: Path) -> int:
    """Creates the data dir if needed and takes <data_dir>/pchat.lock for the life of the
    process; returns the descriptor to keep.

    flock is released by the kernel when the holder dies, even on SIGKILL, so a stale lock
    file never blocks a restart.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(data_dir, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable")
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except FileExistsError:
        raise CannotStart(f"data dir {data_dir} is not a directory") from None
    except OSError as exc:
        raise CannotStart(f"cannot use data dir {data_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise InUse(
            f"data dir {data_dir} is in use by another pchat serve (pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def listen_ports(settings: Settings) -> list[tuple[str, str, int]]:
    """(what, host, port) of every listener with a fixed port (0 picks one, -1 is off)."""
    wanted = [
        ("SIP", settings.sip.host, settings.sip.port),
        ("SIP TLS", settings.sip.host, settings.sip.tls_port),
        ("HTTP", settings.http.host, settings.http.port),
    ]
    if settings.file_service:
        wanted.append(("file service", settings.http.host, settings.files.service_port))
    return [item for item in wanted if item[2] > 0]


def check_ports(settings: Settings) -> None:
    """Binds each port once WITHOUT SO_REUSEPORT, then lets it go for the workers.

    The workers share their ports with SO_REUSEPORT, which would also let them share with
    another server's workers; a plain bind is refused by any listener on the port, its
    SO_REUSEPORT or not, so this tells whether the port is ours to take.
    """
    for what, host, port in listen_ports(settings):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR only skips TIME_WAIT leftovers of our own last run, never a listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise InUse(_bind_failure(what, host, port, exc)) from None


def _bind_failure(what: str, host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{what} port {port} on {host} is in use by another program or pchat serve"
    return f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}"


def warn_if_open(data_dir: Path) -> str | None:
    """A warning when others may read or enter the data dir (it holds the HA1 hashes)."""
    mode = data_dir.stat().st_mode & 0o777
    if mode & 0o077:
        return f"data dir {data_dir} is open to others (mode {mode:o}); chmod 700 it"
    return None


def make_private(folder: Path) -> None:
    """Takes group and other bits off ``folder`` and everything pchat owns in it.

    The umask (077, set by the cli) covers what this run creates; this corrects what an
    older run created 0644/0755 (chat.db, compliance.db, archives, pid files). The data dir
    itself is only warned about: an operator may have opened it on purpose.
    """
    uid = os.getuid()
    for path in folder.rglob("*"):
        info = path.lstat()
        if info.st_uid != uid or path.is_symlink() or not info.st_mode & 0o077:
            continue
        path.chmod(info.st_mode & 0o700)
