"""`pchat serve`: embedded redis, the store's schema, N worker processes kept alive."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from core.config import Settings, redact_url
from shards import host_claim
from shards.claim import (
    EXIT_CANNOT_START,
    EXIT_DUPLICATE_HOST,
    CannotStart,
    check_ports,
    lock_data_dir,
    make_private,
    warn_if_open,
)
from shards.redis_server import EmbeddedRedis
from shards.store_claim import open_store

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)  # a worker that keeps dying is retried slower
STABLE_AFTER_S = 10.0  # a worker alive this long has its backoff reset
STOP_GRACE_S = 10.0  # workers get this long to commit queued posts after SIGTERM


PID_FILES = ("workers.pid", "compliance.pid", "files.pid")
COMPLIANCE = -1  # the compliance service's id among the supervised children
FILE_SERVICE = -2  # the file service's (shards/file_service.py)
SERVICES = {COMPLIANCE: "compliance service", FILE_SERVICE: "file service"}
MODULES = {COMPLIANCE: "shards.compliance", FILE_SERVICE: "shards.file_service"}


class Worker:
    """A supervised child: a worker (id >= 0), the compliance or the file service."""

    def __init__(self, worker_id: int) -> None:
        self.worker_id = worker_id
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.failures = 0
        self.due = 0.0  # when a dead worker may be started again


class Supervisor:
    def __init__(self, settings: Settings, config_file: str | None = None) -> None:
        self.settings = settings
        self._config_file = config_file  # only for the start line: which file was read
        self._stopping = False
        self._redis: EmbeddedRedis | None = None
        self._workers = [Worker(i) for i in range(settings.workers)]
        if settings.compliance.enabled:
            self._workers.append(Worker(COMPLIANCE))
        if settings.file_service:
            # Beside the workers, restarted like them; every worker sends it transfers.
            self._workers.append(Worker(FILE_SERVICE))
        self._env: dict[str, str] = {}
        self._lock_fd = -1
        self._host_claim = ""  # this host's claim of its host_id in a shared Redis

    def run(self) -> int:
        data_dir = Path(self.settings.data_dir).resolve()
        self._claim(data_dir)
        metrics_dir = data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        settings = self.settings
        # The store first: one it cannot open (exit 2) leaves no redis-server behind.
        asyncio.run(_prepare_store(settings))
        if not settings.redis_url:
            self._redis = EmbeddedRedis(settings.redis_socket, str(data_dir / "redis.log"))
            self._redis.start()
            log.info("embedded redis-server on %s", settings.redis_socket)
        settings = msgspec.structs.replace(settings, data_dir=str(data_dir))
        if settings.file_service and settings.files.service_port == 0:
            # Any free port, picked once here: the workers name it in their links and
            # 307s, and a restarted service takes the same one again.
            files = msgspec.structs.replace(settings.files, service_port=_free_port(settings))
            settings = msgspec.structs.replace(settings, files=files)
            log.info("file service port: %d", settings.files.service_port)
        if settings.leased and settings.redis_url:
            # A shared Redis: another host may have been given this host_id by mistake.
            # The embedded Redis is this host's alone.
            claim = host_claim.new_claim(settings)
            asyncio.run(host_claim.take(settings, claim))
            self._host_claim = claim
        self._env = dict(os.environ)
        if self._host_claim:
            self._env[host_claim.HOST_CLAIM_ENV] = self._host_claim
        self._env["_PCHAT_WORKER_SETTINGS"] = msgspec.json.encode(settings).decode()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info(
            "pchat serving %s: SIP on %d, HTTP on %d, %d worker(s), store %s, redis %s, config %s",
            settings.domain, settings.sip.port, settings.http.port, settings.workers,
            redact_url(settings.store_url), redact_url(settings.effective_redis_url),
            self._config_file or "none (defaults, PCHAT_* and flags)",
        )  # fmt: skip
        try:
            self._watch()
        finally:
            self._stop_workers()
            if self._host_claim:
                asyncio.run(host_claim.release(settings, self._host_claim))
            if self._redis is not None:
                self._redis.stop()
            # Pid files name live processes only: after a stop they would point at pids the
            # system may reuse.
            for name in PID_FILES:
                (data_dir / name).unlink(missing_ok=True)
        return 0

    def _claim(self, data_dir: Path) -> None:
        """Data dir, ports and file modes: checked before anything starts or says "serving"."""
        # Held until exit: a second server on this data dir stops here, before it touches the
        # metrics dir or the redis socket of this one.
        self._lock_fd = lock_data_dir(data_dir)
        check_ports(self.settings)
        if warning := warn_if_open(data_dir):
            log.warning("%s", warning)
        make_private(data_dir)
        for folder in (self.settings.compliance_output_dir, self.settings.compliance_files_dir):
            output_dir = Path(folder)
            if output_dir.is_dir() and not output_dir.is_relative_to(data_dir):
                output_dir.chmod(0o700)
                make_private(output_dir)

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        self._stopping = True

    def _spawn(self, worker: Worker) -> None:
        if worker.worker_id in MODULES:
            cmd = [sys.executable, "-m", MODULES[worker.worker_id]]
        else:
            cmd = [
                sys.executable,
                "-m",
                "shards.worker.runner",
                "--worker-id",
                str(worker.worker_id),
            ]
        worker.proc = subprocess.Popen(cmd, env=self._env, stdin=subprocess.DEVNULL)
        worker.started = time.monotonic()
        self._write_pids()

    def _write_pids(self) -> None:
        """data_dir/workers.pid: 'worker pid' lines, for operators and tests (the
        services' in compliance.pid and files.pid)."""
        folder = Path(self.settings.data_dir)
        children = [w for w in self._workers if w.proc is not None]
        for name, group in zip(
            PID_FILES,
            (
                [w for w in children if w.worker_id not in SERVICES],
                [w for w in children if w.worker_id == COMPLIANCE],
                [w for w in children if w.worker_id == FILE_SERVICE],
            ),
            strict=True,
        ):
            lines = [f"{w.worker_id} {w.proc.pid}\n" for w in group if w.proc is not None]
            tmp = folder / f"{name}.tmp"
            tmp.write_text("".join(lines))
            tmp.replace(folder / name)

    def _watch(self) -> None:
        from prometheus_client import multiprocess

        from shards.metrics import WORKER_RESTARTS

        for worker in self._workers:
            self._spawn(worker)
        while not self._stopping:
            now = time.monotonic()
            for worker in self._workers:
                proc = worker.proc
                if proc is not None and proc.poll() is None:
                    if now - worker.started > STABLE_AFTER_S:
                        worker.failures = 0
                    continue
                if proc is not None:
                    is_worker = worker.worker_id not in SERVICES
                    name = SERVICES.get(worker.worker_id, f"worker {worker.worker_id}")
                    if proc.returncode == EXIT_CANNOT_START:
                        raise CannotStart(f"{name} cannot start (reason logged above); stopping")
                    if proc.returncode == EXIT_DUPLICATE_HOST:
                        raise CannotStart(
                            f"another host uses leases.host_id {self.settings.leases.host_id}"
                            " (logged above); stopping this host"
                        )
                    log.error(
                        "%s (pid %d) exited with %s; restarting", name, proc.pid, proc.returncode
                    )
                    multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
                    worker.proc = None
                    step = min(worker.failures, len(RESTART_BACKOFF_S) - 1)
                    worker.due = now + RESTART_BACKOFF_S[step]
                    worker.failures += 1
                    if is_worker:
                        WORKER_RESTARTS.inc()
                if now >= worker.due:
                    self._spawn(worker)
            time.sleep(0.1)

    def _stop_workers(self) -> None:
        live = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()


def _free_port(settings: Settings) -> int:
    host = settings.http.host
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _prepare_store(settings: Settings) -> None:
    """Creates or migrates the schema once, before any worker opens the store, and checks
    that the store belongs to this domain (StoreRefused, exit 2, if not)."""
    store = await open_store(settings, create=True)
    await store.close()
