"""Issue 10 (hardening) over real sockets, the real store and a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from client.client import PchatClient, SipError
from core.config import AuthSettings, Settings
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, PASSWORD, add_user, make_settings

# Small numbers so the throttle bites within a test: 3 free attempts, 0.2 s doubling to 0.8 s.
THROTTLE = AuthSettings(free_attempts=3, base_delay_s=0.2, max_delay_s=0.8)


@pytest.fixture
async def throttled(
    tmp_path: Path, redis_url: str, loop_errors: list[dict[str, object]]
) -> AsyncIterator[RunningWorker]:
    settings: Settings = msgspec.structs.replace(make_settings(tmp_path, redis_url), auth=THROTTLE)
    async with run_worker(settings) as worker:
        for name in ("alice", "bob"):
            await add_user(worker.store, name)
        yield worker


async def _guess(server: RunningWorker, user: str, password: str, source: str) -> int:
    """One sign-in attempt on a fresh connection: the final status (0: closed unanswered)."""
    client = await PchatClient.connect(
        "127.0.0.1", server.sip_port, f"{user}@{DOMAIN}", password, local_addr=(source, 0)
    )
    try:
        await client.provision()
        return 200
    except SipError as exc:
        return exc.status
    except ConnectionError:
        return 0
    finally:
        await client.close()


async def test_password_guesses_are_throttled_per_user_without_locking_out(
    throttled: RunningWorker,
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    # ten guesses at once on ten connections: more per connection allowed would not help
    statuses = await asyncio.gather(
        *(_guess(throttled, "alice", f"wrong{i}", "127.0.0.1") for i in range(10))
    )
    took = loop.time() - start
    assert 200 not in statuses
    assert statuses.count(503) >= 4  # beyond the cap: refused without a password check
    assert took >= 0.2 + 0.4  # the checked ones beyond the free three waited their turns
    await asyncio.sleep(THROTTLE.max_delay_s * 2)  # the queued turns pass
    # not a lock-out: the right password from another address, and another user at the
    # attacker's address, still sign in
    assert await _guess(throttled, "alice", PASSWORD, "127.0.0.2") == 200
    assert await _guess(throttled, "bob", PASSWORD, "127.0.0.1") == 200
