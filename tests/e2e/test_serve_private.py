"""What pchat creates is for its user only (issue 10 finding 5): 0600 files, 0700 dirs."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from pathlib import Path

from tests.e2e.cluster import free_port, wait_http_healthy
from tests.e2e.test_serve import DOMAIN


async def serve_and_stop(data_dir: Path, *extra: str) -> tuple[str, set[str]]:
    """Serves until healthy, stops with SIGTERM; returns the log (stderr) and the names of
    the files there were while serving."""
    http = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(data_dir),
        "--sip-port", str(free_port()), "--http-port", str(http), "--workers", "1",
        "--domain", DOMAIN, *extra, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_http_healthy(http)
        modes = _modes(data_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    for name, mode in modes.items():
        assert mode & 0o077 == 0, f"{name} is {mode:o}"
    return err.decode(), set(modes)


def _modes(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder`` (the redis socket aside) with its mode bits."""
    found = {}
    for path in folder.rglob("*"):
        info = path.lstat()
        if not stat.S_ISSOCK(info.st_mode):  # the socket: redis applies unixsocketperm 700
            found[str(path.relative_to(folder))] = info.st_mode & 0o777
    return found


async def test_new_data_dir_is_private(tmp_path: Path) -> None:
    before = os.umask(0o022)  # what a login shell usually has, inherited by pchat
    try:
        data_dir = tmp_path / "data"
        err, names = await serve_and_stop(data_dir, "--compliance")
    finally:
        os.umask(before)
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert {"chat.db", "compliance.db", "workers.pid", "compliance.pid"} <= names
    assert "open to others" not in err


async def test_open_data_dir_is_warned_about_and_old_files_corrected(tmp_path: Path) -> None:
    data_dir, archive = tmp_path / "data", tmp_path / "data" / "compliance"
    archive.mkdir(parents=True, mode=0o755)
    data_dir.chmod(0o755)
    archive.chmod(0o755)
    (archive / "old-archive.xml").write_text("<secret/>")
    (archive / "old-archive.xml").chmod(0o644)
    err, _ = await serve_and_stop(data_dir, "--compliance")
    assert f"data dir {data_dir.resolve()} is open to others (mode 755); chmod 700 it" in err
    assert archive.stat().st_mode & 0o777 == 0o700
    assert (archive / "old-archive.xml").stat().st_mode & 0o777 == 0o600


async def test_version_and_no_pid_files_after_a_stop(tmp_path: Path) -> None:
    from importlib.metadata import version

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert out.decode() == f"pchat {version('pchat')}\n"
    _, names = await serve_and_stop(tmp_path / "data", "--compliance")
    assert "workers.pid" in names
    assert not list((tmp_path / "data").glob("*.pid"))
