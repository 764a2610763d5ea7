"""`pchat serve` and `pchat admin` as an operator runs them: real processes, embedded redis."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from client.client import PchatClient
from tests.e2e.cluster import free_port, http_get

DOMAIN = "example.com"


async def pchat(*args: str, data_dir: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", *args, "--data-dir", str(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


class Served:
    def __init__(
        self, proc: asyncio.subprocess.Process, data_dir: Path, sip: int, http: int
    ) -> None:
        self.proc, self.data_dir, self.sip, self.http = proc, data_dir, sip, http


@asynccontextmanager
async def serving(data_dir: Path, *extra: str) -> AsyncIterator[Served]:
    sip, http = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PCHAT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "serve", "--data-dir", str(data_dir),
        "--sip-port", str(sip), "--http-port", str(http), "--workers", "1", "--domain", DOMAIN,
        *extra, env=env,
    )  # fmt: skip
    for _ in range(100):
        try:
            status, _ = await http_get(f"http://127.0.0.1:{http}/healthz")
            if status == 200:
                break
        except OSError:
            pass
        await asyncio.sleep(0.1)
    else:
        proc.kill()
        await proc.wait()
        pytest.fail("pchat serve did not become healthy within 10 s")
    try:
        yield Served(proc, data_dir, sip, http)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serving(tmp_path) as served:
        yield served


def listen_addresses(port: int) -> set[str]:
    """The local IPv4 addresses (hex, as /proc/net/tcp writes them) listening on port."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: TCP_LISTEN
            found.add(address)
    return found


async def test_sip_host_and_http_host_choose_the_listen_addresses(tmp_path: Path) -> None:
    loopback = "0100007F"  # 127.0.0.1, little-endian hex
    async with serving(tmp_path, "--sip-host", "127.0.0.1", "--http-host", "127.0.0.1") as s:
        assert listen_addresses(s.sip) == {loopback}
        assert listen_addresses(s.http) == {loopback}


async def test_serve_admin_chat_and_clean_shutdown(served: Served) -> None:
    d = served.data_dir
    assert (
        await pchat("admin", "user", "add", f"alice@{DOMAIN}", "--password", "pw1", data_dir=d)
    )[0] == 0
    assert (await pchat("admin", "user", "add", f"bob@{DOMAIN}", "--password", "pw2", data_dir=d))[
        0
    ] == 0
    assert (await pchat("admin", "category", "add", "General", data_dir=d))[0] == 0
    code, out, err = await pchat(
        "admin", "room", "add", "Lobby", "--category", "General", "--privacy", "open", data_dir=d
    )
    assert code == 0, err
    room = out.strip()
    assert room.startswith(f"ma-chan://{DOMAIN}/")
    code, listing, _ = await pchat("admin", "room", "list", data_dir=d)
    assert room in listing and "Lobby" in listing

    alice = await PchatClient.connect("127.0.0.1", served.sip, f"alice@{DOMAIN}", "pw1")
    bob = await PchatClient.connect("127.0.0.1", served.sip, f"bob@{DOMAIN}", "pw2")
    await alice.sign_in()
    await bob.sign_in()
    assert [r["uri"] for r in await alice.search("Lobby")] == [room]
    await alice.join(room)
    await bob.join(room)
    await alice.post(room, "hello from alice")
    assert (await bob.next_post()).text == "hello from alice"

    # a policy change by `pchat admin` reaches the running server
    assert (await pchat("admin", "user", "disable", f"bob@{DOMAIN}", data_dir=d))[0] == 0
    bob2 = await PchatClient.connect("127.0.0.1", served.sip, f"bob@{DOMAIN}", "pw2")
    assert await bob2.provision() is False
    await bob2.close()

    status, text = await http_get(f"http://127.0.0.1:{served.http}/metrics")
    assert status == 200
    assert "pchat_rooms_posts_total 1.0" in text
    assert 'pchat_xccos_command_latency_seconds_count{command="cmd:join"}' in text
    await alice.close()
    await bob.close()

    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.proc.wait(), 15) == 0
    assert not (d / "redis.sock").exists() or not _redis_answers(d / "redis.sock")


def _redis_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


async def test_admin_errors_say_what_to_do(tmp_path: Path) -> None:
    assert (await pchat("admin", "init", data_dir=tmp_path))[0] == 0
    code, _, err = await pchat("admin", "room", "add", "X", "--category", "Nope", data_dir=tmp_path)
    assert code == 2 and "pchat admin category add" in err
    code, _, err = await pchat(
        "admin", "user", "passwd", f"ghost@{DOMAIN}", "--password", "x", data_dir=tmp_path
    )
    assert code == 2 and "pchat admin user add" in err


async def test_help_explains_every_command(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shards.cli", "serve", "--help", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    text = out.decode()
    for flag in (
        "--config",
        "--data-dir",
        "--domain",
        "--sip-port",
        "--http-port",
        "--workers",
        "--redis-url",
        "--store",
    ):
        assert flag in text


async def test_killing_the_supervisor_leaves_no_orphans(served: Served) -> None:
    pids = [
        int(line.split()[1]) for line in (served.data_dir / "workers.pid").read_text().splitlines()
    ]
    assert pids
    served.proc.kill()  # SIGKILL: the supervisor cannot clean up
    await served.proc.wait()
    for _ in range(50):
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and "Z" not in _state(p)]
        if not alive:
            break
        await asyncio.sleep(0.1)
    assert not alive, f"workers outlived their supervisor: {alive}"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (OSError, IndexError):
        return "Z"
