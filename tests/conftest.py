"""Shared fixtures: a private redis-server, settings in tmp_path, a running worker, users."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from client.client import PchatClient
from core.config import HttpSettings, LimitSettings, Settings, SipSettings
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord, ChatStore, RoomRecord, UserRecord
from shards.redis_server import EmbeddedRedis
from shards.worker.runner import RunningWorker, run_worker
from tests.redis_cluster import NoRedis7, RedisClusterNodes

DOMAIN = "example.com"
PASSWORD = "secret-pw"


def pytest_configure(config: pytest.Config) -> None:
    """The caller's PCHAT_* environment (a domain, a config file, a password) never reaches a
    test: in-process loads and every `pchat` subprocess inherit this cleaned environment.
    Only the suite's own switches (PCHAT_TEST_*) are kept."""
    for key in [k for k in os.environ if k.startswith("PCHAT_")]:
        if not key.startswith("PCHAT_TEST_"):
            del os.environ[key]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop, as the workers run; PCHAT_TEST_LOOP=asyncio or =both for the stdlib loop too."""
    import uvloop

    choice = os.environ.get("PCHAT_TEST_LOOP", "uvloop")
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "uvloop": uvloop.new_event_loop,
        "asyncio": asyncio.new_event_loop,
    }
    return loops if choice == "both" else {choice: loops[choice]}


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One throw-away redis-server on a unix socket for the whole run."""
    folder = tempfile.mkdtemp(prefix="pchat-redis-")
    server = EmbeddedRedis(f"{folder}/redis.sock", f"{folder}/redis.log")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """One Redis Cluster (3 masters, 3 replicas) for the tests that leave it as it was."""
    yield from _running_cluster(tmp_path_factory.mktemp("redis-cluster"))


@pytest.fixture
def fresh_redis_cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A Redis Cluster of this test's own, for tests that kill its nodes."""
    yield from _running_cluster(tmp_path / "redis-cluster")


def _running_cluster(folder: Path) -> Iterator[RedisClusterNodes]:
    """A started cluster in ``folder``, stopped afterwards; the test is skipped where no
    Redis 7 is installed."""
    nodes = RedisClusterNodes(folder)
    try:
        nodes.start()
    except NoRedis7 as exc:
        pytest.skip(str(exc))
    try:
        yield nodes
    finally:
        nodes.stop()


def test_certificate(folder: Path) -> tuple[Path, Path]:
    """A throw-away self-signed certificate (localhost and 127.0.0.1) and its key; the test
    is skipped where openssl is missing."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl (to make a test certificate) is not on PATH")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


test_certificate.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def make_settings(tmp_path: Path, redis_url: str, **limits: int) -> Settings:
    return Settings(
        domain=DOMAIN,
        data_dir=str(tmp_path),
        redis_url=redis_url,
        sip=SipSettings(host="127.0.0.1", port=0),
        http=HttpSettings(host="127.0.0.1", port=0),
        limits=msgspec.structs.replace(LimitSettings(), **limits),
    )


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path, redis_url)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, object]]]:
    """Any exception that reaches the event loop's handler fails the test."""
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield errors
    assert not errors, f"unhandled exceptions in the event loop: {errors}"


async def signed_in(server: RunningWorker, user: str = "alice") -> PchatClient:
    """A client of ``user``@example.com through the whole sign-in sequence."""
    client = await PchatClient.connect("127.0.0.1", server.sip_port, f"{user}@{DOMAIN}", PASSWORD)
    await client.sign_in()
    return client


async def add_user(store: ChatStore, name: str, *, enabled: bool = True) -> str:
    uri = f"sip:{name}@{DOMAIN}"
    await store.put_user(
        UserRecord(
            uri=uri,
            display_name=name.title(),
            ha1=user_ha1s(uri, DOMAIN, PASSWORD),
            enabled=enabled,
        )
    )
    return uri


async def add_room(
    store: ChatStore,
    name: str,
    *,
    privacy: str = "open",
    members: list[str] | None = None,
    category: str = "general",
) -> str:
    if await store.get_category(category) is None:
        await store.put_category(CategoryRecord(id=category, name=category.title()))
    room_id = name.lower().replace(" ", "-")
    await store.put_room(
        RoomRecord(
            id=room_id, name=name, category_id=category, privacy=privacy, members=members or []
        )  # type: ignore[arg-type]
    )
    return f"ma-chan://{DOMAIN}/{room_id}"


@pytest.fixture
async def server(
    settings: Settings, loop_errors: list[dict[str, object]]
) -> AsyncIterator[RunningWorker]:
    async with run_worker(settings) as worker:
        for name in ("alice", "bob", "carol"):
            await add_user(worker.store, name)
        await add_user(worker.store, "dave", enabled=False)
        yield worker
