"""Multiprocess metric values (shards/metrics.py): the host's counts add up across
processes, a worker's restart and a fork. Real processes and a real multiprocess registry
directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

REPO = Path(__file__).resolve().parents[2]

# A worker's part: counts ``n`` posts, holds ``sessions`` sessions, then says so and stays
# alive until its stdin closes (as a live worker would).
WORKER = """
import sys
from shards import metrics
m = metrics.Metrics()
n, sessions = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    m.request("INFO")
m.observe_commit(0.001, n)
m.sessions.set(sessions)
print("ready", flush=True)
sys.stdin.read()
"""


def _env(metrics_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def _start(metrics_dir: Path, n: int, sessions: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(n), str(sessions)], cwd=REPO, env=_env(metrics_dir),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.wait(30) == 0
    proc.stdout.close()


def _host(metrics_dir: Path) -> dict[str, float]:
    """What one /metrics shows: every process's files, merged."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "pchat_sip_requests_total" and sample.labels == {"method": "INFO"}:
                out["requests"] = sample.value
            elif sample.name == "pchat_rooms_posts_total":
                out["posts"] = sample.value
            elif sample.name == "pchat_store_commit_batch_size_posts_count":
                out["commits"] = sample.value
            elif sample.name == "pchat_gateway_sessions":
                out["sessions"] = sample.value
    return out


def test_counts_add_up_across_workers_and_survive_a_restart(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    first, second = _start(metrics_dir, 300, 7), _start(metrics_dir, 200, 5)
    try:
        assert _host(metrics_dir) == {"requests": 500, "posts": 500, "commits": 2, "sessions": 12}
        # Each process wrote its own files, named by its real pid.
        names = {p.name for p in metrics_dir.iterdir()}
        assert {f"counter_{first.pid}.db", f"counter_{second.pid}.db"} <= names
        # The first worker dies; the supervisor marks it dead and starts another.
        _stop(first)
        multiprocess.mark_process_dead(first.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
        restarted = _start(metrics_dir, 40, 3)
        try:
            # Counters keep the dead worker's counts; a live gauge forgets its sessions.
            assert _host(metrics_dir) == {
                "requests": 540, "posts": 540, "commits": 3, "sessions": 8,
            }  # fmt: skip
            assert f"counter_{restarted.pid}.db" in {p.name for p in metrics_dir.iterdir()}
        finally:
            _stop(restarted)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                _stop(proc)


def test_a_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    script = textwrap.dedent(
        """
        import os
        from shards import metrics
        m = metrics.Metrics()
        m.request("INFO")
        child = os.fork()
        if child == 0:
            for _ in range(10):
                m.request("INFO")
            os._exit(0)
        os.waitpid(child, 0)
        m.request("INFO")
        print(os.getpid(), child)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=_env(metrics_dir), capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    parent, child = done.stdout.split()
    # After the fork the child counts from 0 in a file of its own (10), the parent goes on
    # in its own (2): the host shows 12, nothing counted twice.
    assert {p.name for p in metrics_dir.glob("counter_*.db")} == {
        f"counter_{parent}.db",
        f"counter_{child}.db",
    }
    assert _host(metrics_dir)["requests"] == 12
