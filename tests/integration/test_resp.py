"""The lean RESP client of the bus, against real redis-servers: plain, AUTH and TLS."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shards import resp
from shards.resp import RespClient, RespError, RespSubscriber
from shards.worker.runner import run_worker
from tests.conftest import add_room, add_user, make_settings, signed_in, test_certificate

SYSTEM_REDIS = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    assert SYSTEM_REDIS is not None
    proc = subprocess.Popen(
        [SYSTEM_REDIS, "--save", "", "--appendonly", "no", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def password_redis() -> Iterator[int]:
    if SYSTEM_REDIS is None:
        pytest.skip("no redis-server on PATH for a password-protected instance")
    port = _free_port()
    proc = _start(["--port", str(port), "--bind", "127.0.0.1", "--requirepass", "s3cret"], port)
    yield port
    proc.kill()
    proc.wait()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if SYSTEM_REDIS is None or shutil.which("openssl") is None:
        pytest.skip("redis-server and openssl are needed for a TLS instance")
    cert, key = test_certificate(tmp_path)
    port = _free_port()
    args = ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    args += ["--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
    args += ["--requirepass", "s3cret"]
    try:
        proc = _start(args, port)
    except RuntimeError:
        pytest.skip("this redis-server has no TLS")
    yield port, cert
    proc.kill()
    proc.wait()


async def test_pipelined_replies_come_back_in_order(redis_url: str) -> None:
    client = await RespClient.connect(redis_url)
    try:
        key = f"resp-order-{time.monotonic_ns()}"
        replies = await asyncio.gather(*(client.call("INCR", key) for _ in range(500)))
        assert replies == list(range(1, 501))
        with pytest.raises(RespError, match="WRONGTYPE|ERR"):
            await client.call("LPUSH", key, "x")  # an error reply fails its own call only
        assert await client.call("GET", key) == b"500"
    finally:
        client.close()


async def test_messages_reach_the_subscriber_in_order(redis_url: str) -> None:
    got: list[tuple[bytes, bytes]] = []
    sub = await RespSubscriber.connect(redis_url, lambda ch, data: got.append((ch, data)))
    pub = await RespClient.connect(redis_url)
    try:
        await sub.subscribe(b"resp-test-a", b"resp-test-b")
        for i in range(100):
            pub.call("PUBLISH", b"resp-test-a" if i % 2 else b"resp-test-b", str(i))
        pub.flush()
        await pub.call("PING")
        for _ in range(100):
            if len(got) == 100:
                break
            await asyncio.sleep(0.01)
        assert [int(data) for _, data in got] == list(range(100))
        sub.unsubscribe(b"resp-test-a")
        await asyncio.sleep(0.05)
        await pub.call("PUBLISH", b"resp-test-a", "after")
        await pub.call("PUBLISH", b"resp-test-b", "still")
        await asyncio.sleep(0.05)
        assert got[-1] == (b"resp-test-b", b"still")
        assert (b"resp-test-a", b"after") not in got
    finally:
        sub.close()
        pub.close()


async def test_a_lost_connection_fails_every_pending_call(password_redis: int) -> None:
    url = f"redis://:s3cret@127.0.0.1:{password_redis}"
    client = await RespClient.connect(url)
    killer = await RespClient.connect(url)
    try:
        await client.call("CLIENT", "SETNAME", "victim")
        pending = [client.call("BLPOP", "never-pushed", "5") for _ in range(3)]
        client.flush()
        await asyncio.sleep(0.05)
        await killer.call("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        for future in pending:
            with pytest.raises(RespError, match="lost"):
                await asyncio.wait_for(future, 2)
        await asyncio.wait_for(client.closed.wait(), 2)
        with pytest.raises(RespError, match="down"):
            await client.call("PING")
    finally:
        client.close()
        killer.close()


async def test_password_is_sent_and_a_wrong_one_is_refused(password_redis: int) -> None:
    client = await RespClient.connect(f"redis://:s3cret@127.0.0.1:{password_redis}")
    assert await client.call("PING") == b"PONG"
    client.close()
    with pytest.raises(RespError, match="WRONGPASS|invalid"):
        await RespClient.connect(f"redis://:wrong@127.0.0.1:{password_redis}")
    sub = await RespSubscriber.connect(f"redis://:wrong@127.0.0.1:{password_redis}", print)
    with pytest.raises(RespError, match="WRONGPASS|invalid|NOAUTH"):
        await sub.subscribe(b"x", timeout=2)
    sub.close()
    assert not await resp.ping(f"redis://127.0.0.1:{password_redis}")  # no password: NOAUTH


async def test_rediss_verifies_the_server_certificate(tls_redis: tuple[int, Path]) -> None:
    port, cert = tls_redis
    client = await RespClient.connect(f"rediss://:s3cret@127.0.0.1:{port}?ssl_ca_certs={cert}")
    assert await client.call("PING") == b"PONG"
    assert client._proto is not None and client._proto.transport is not None
    assert client._proto.transport.get_extra_info("ssl_object") is not None
    client.close()
    with pytest.raises(RespError, match="TLS"):  # the system CAs do not know the test CA
        await RespClient.connect(f"rediss://127.0.0.1:{port}")
    assert await resp.ping(f"rediss://:s3cret@127.0.0.1:{port}?ssl_cert_reqs=none")


def test_tls_settings_that_cannot_work_are_one_clear_error(tmp_path: Path) -> None:
    assert resp.tls_context("redis://127.0.0.1:6379") is None
    with pytest.raises(RespError, match="TLS settings"):
        resp.tls_context(f"rediss://h:1?ssl_ca_certs={tmp_path}/missing.pem")


async def test_too_many_commands_in_flight_fail_fast(redis_url: str) -> None:
    client = await RespClient.connect(redis_url)
    try:
        futures = [client.call("PING") for _ in range(resp.MAX_PENDING_COMMANDS)]
        over = client.call("PING")
        with pytest.raises(RespError, match="too many"):
            await over
        assert set(await asyncio.gather(*futures)) == {b"PONG"}
    finally:
        client.close()


async def test_a_worker_runs_its_bus_over_tls_with_a_password(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    """Both Redis clients of a worker (the bus and the health/admin one) take one URL."""
    port, cert = tls_redis
    url = f"rediss://:s3cret@127.0.0.1:{port}?ssl_ca_certs={cert}"
    async with run_worker(make_settings(tmp_path, url)) as worker:
        assert (await worker.health())["redis_ok"] is True
        await add_user(worker.store, "alice")
        await add_user(worker.store, "bob")
        room = await add_room(worker.store, "Vault")
        alice, bob = await signed_in(worker, "alice"), await signed_in(worker, "bob")
        await alice.join(room)
        await bob.join(room)
        assert await alice.post(room, "through a TLS bus") == 1
        got = await bob.next_post(timeout=5)
        assert got.text == "through a TLS bus"
        await alice.close()
        await bob.close()


async def test_a_cancelled_connect_is_never_swallowed(redis_url: str) -> None:
    """A connect cancelled as the connection comes up either ends cancelled or was done
    before the cancel: it never goes on as if nobody had cancelled it. Python 3.11's
    wait_for returned the connection and dropped the cancel when both met, which left a
    worker's shutdown waiting forever for its admin-notice listener."""
    loop = asyncio.get_running_loop()
    swallowed = 0
    for attempt in range(300):
        task = loop.create_task(RespSubscriber.connect(redis_url, lambda _c, _d: None))
        # Cancel at every moment of the connect, from its first step to its last callback.
        for _ in range(attempt % 12):
            await asyncio.sleep(0)
        asked = task.cancel()
        try:
            sub = await task
        except asyncio.CancelledError:
            continue
        sub.close()
        swallowed += asked  # cancel() said yes, yet the connect returned
    assert swallowed == 0
