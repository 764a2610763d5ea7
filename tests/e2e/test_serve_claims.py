"""Only one `pchat serve` per data dir and per port: a second one exits with one line."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.e2e.cluster import free_port, http_get
from tests.e2e.test_serve import DOMAIN, Served, _redis_answers, serving

SECOND_EXIT_S = 15.0  # "within seconds": start-up of the interpreter is most of it


async def serve_once(data_dir: Path, sip: int, http: int, *extra: str) -> tuple[int, str]:
    """Runs a `pchat serve` expected to refuse to start; returns (exit code, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(data_dir),
        "--sip-port", str(sip), "--http-port", str(http), "--workers", "1", "--domain", DOMAIN,
        *extra, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), SECOND_EXIT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the second pchat serve kept running") from None
    return proc.returncode or 0, err.decode()


def assert_one_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


async def assert_still_serving(first: Served) -> None:
    status, _ = await http_get(f"http://127.0.0.1:{first.http}/healthz")
    assert status == 200
    assert first.proc.returncode is None
    assert (first.data_dir / "redis.sock").exists()


async def test_second_server_on_the_same_ports_exits(tmp_path: Path) -> None:
    async with serving(tmp_path / "one") as first:
        code, err = await serve_once(tmp_path / "two", first.sip, free_port())
        assert code != 0
        assert_one_line(err, f"SIP port {first.sip}", "in use")
        code, err = await serve_once(tmp_path / "three", free_port(), first.http)
        assert code != 0
        assert_one_line(err, f"HTTP port {first.http}", "in use")
        await assert_still_serving(first)


async def test_second_server_on_the_same_data_dir_exits(tmp_path: Path) -> None:
    async with serving(tmp_path) as first:
        code, err = await serve_once(tmp_path, free_port(), free_port())
        assert code != 0
        assert_one_line(err, f"data dir {tmp_path}", "in use", f"pid {first.proc.pid}")
        await assert_still_serving(first)
        # The first one's bus survived the second one's exit: its redis socket still answers.
        assert _redis_answers(tmp_path / "redis.sock")


async def test_port_of_another_program_or_out_of_range_exits(tmp_path: Path) -> None:
    with socket.socket() as other:  # another program: a plain listener, no SO_REUSEPORT
        other.bind(("0.0.0.0", 0))
        other.listen()
        taken = other.getsockname()[1]
        code, err = await serve_once(tmp_path / "a", taken, free_port())
        assert code != 0
        assert_one_line(err, f"SIP port {taken}", "in use")
    code, err = await serve_once(tmp_path / "b", 70000, free_port())
    assert code == 2
    assert_one_line(err, "65535", "sip.port")
    assert "serving" not in err


async def test_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    config = tmp_path / "pchat.toml"
    config.write_text(f'[sip]\ntls_port = 0\ntls_cert = "{bad}"\ntls_key = "{bad}"\n')
    code, err = await serve_once(tmp_path / "d", free_port(), free_port(), "--config", str(config))
    assert code == 1
    assert "Traceback" not in err
    assert "worker 0 cannot start" in err
    assert err.strip().splitlines()[-1] == (
        "pchat: worker 0 cannot start (reason logged above); stopping"
    )


async def test_ordinary_mistakes_give_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    code, err = await serve_once(a_file, free_port(), free_port())
    assert code == 1
    assert_one_line(err, f"data dir {a_file}", "not a directory")
    code, err = await serve_once(tmp_path / "d", free_port(), free_port(), "--log-level", "LOUD")
    assert code == 2
    assert_one_line(err, "log_level", "'LOUD'")
    missing = "postgresql://postgres@127.0.0.1:5432/pchat_no_such_db"
    code, err = await serve_once(tmp_path / "d", free_port(), free_port(), "--store", missing)
    assert code == 2
    assert_one_line(err, "pchat_no_such_db", "does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode 500 directory")
async def test_read_only_data_dir_gives_one_line(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o500)
    code, err = await serve_once(read_only, free_port(), free_port())
    assert code == 1
    assert_one_line(err, f"cannot use data dir {read_only}")
