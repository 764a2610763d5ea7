"""Children die with their parent: a supervisor killed with SIGKILL leaves no orphans."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


# Loaded once in the parent: die_with_parent also runs as a preexec_fn, right after fork,
# where looking a library up (which may run a subprocess) is not safe.
_LIBC = _load_libc()


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Asks Linux to send ``sig`` when the parent exits (PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
