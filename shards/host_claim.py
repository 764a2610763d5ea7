"""One host per ``leases.host_id``: a claim in Redis, taken by the supervisor at start and
renewed by its workers with their heartbeat (shards/leases.py).

Worker ids are ``host_id * 1000 + index`` and a lease held by a worker's id is its to
take back after a restart (shards/ownership.py), so two hosts given the same host_id
would take each other's shards every round. The claim ``{pchat:nodes}:host:<id>`` holds
``"<token> <address>"`` with a TTL (the leases' ``ttl_s``): a second host with that id
refuses to start, naming the first's address; a running host that finds the claim held
by another (a network split healed after the other started) stops. The key's hash tag
puts it on the live set's slot, so on a Redis Cluster one script renews both.

Why a claim with expiry and not, say, a row in the store: it must lapse by itself when
its host dies (kill -9, power) so that the host can come back, and it is renewed every
``renew_s`` with the heartbeat the workers send anyway, at no extra round trip.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket

from redis.exceptions import RedisError

from core.config import Settings
from shards.claim import InUse
from shards.redis_clients import AnyRedis, redis_client

log = logging.getLogger(__name__)

# The supervisor's first claim outlives the workers' start (imports, the store, the first
# heartbeat may take seconds on a loaded box); their first heartbeat sets the real TTL.
STARTUP_CLAIM_S = 30.0
HOST_CLAIM_ENV = "_PCHAT_HOST_CLAIM"  # the supervisor's claim, passed to its workers
CLAIM_CALL_S = 2.0  # a Redis that does not answer in this: start without a claim (logged)

# Free, ours, or left by this host's predecessor on the same address (a restart after a
# crash: the port check passed, so no live server holds the address) -> ours; else the
# holder. ARGV: claim, " <address>", ttl ms.
_CLAIM = (
    "local v = redis.call('get', KEYS[1])"
    " if v == false or v == ARGV[1] or string.sub(v, -#ARGV[2]) == ARGV[2] then"
    " redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[3]) return '' end return v"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class DuplicateHost(RuntimeError):
    """Another host holds this host_id's claim; the message names it and what to do."""


def claim_key(host_id: int) -> str:
    return f"{{pchat:nodes}}:host:{host_id}"


def address_of(claim: str) -> str:
    """The address part of a claim value ("<token> <address>")."""
    return claim.partition(" ")[2] or claim


def refusal(host_id: int, holder: str) -> str:
    return (
        f"leases.host_id {host_id} is already used by the pool host at {address_of(holder)}: "
        "give each host its own leases.host_id (PCHAT_LEASES__HOST_ID)"
    )


def host_address(settings: Settings) -> str:
    """How an operator finds this host: its name and its SIP listener."""
    return f"{socket.gethostname()} (SIP {settings.sip.host}:{settings.sip.port})"


def new_claim(settings: Settings) -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)} {host_address(settings)}"


async def _call(settings: Settings, script: str, *args: object) -> str:
    client: AnyRedis = redis_client(settings, socket_timeout=CLAIM_CALL_S)
    try:
        async with asyncio.timeout(CLAIM_CALL_S * 2):
            key = claim_key(settings.leases.host_id)
            value = await client.eval(script, 1, key, *args)  # type: ignore[arg-type]
    finally:
        await client.aclose()
    return value.decode() if isinstance(value, bytes) else str(value)


async def take(settings: Settings, claim: str) -> None:
    """Claims the host_id for ``claim`` (InUse naming the other host if it is taken). A
    Redis that does not answer is logged and skipped: the workers' heartbeats claim it."""
    address = f" {address_of(claim)}"
    try:
        holder = await _call(settings, _CLAIM, claim, address, int(STARTUP_CLAIM_S * 1000))
    except (TimeoutError, OSError, RedisError) as exc:
        log.warning(
            "could not claim leases.host_id %d in Redis (%s); the workers claim it once "
            "Redis answers", settings.leases.host_id, exc,
        )  # fmt: skip
        return
    if holder:
        raise InUse(refusal(settings.leases.host_id, holder))


async def release(settings: Settings, claim: str) -> None:
    """Gives the claim back at a graceful stop (the host_id may move to another machine)."""
    try:
        await _call(settings, _RELEASE, claim)
    except (TimeoutError, OSError, RedisError) as exc:
        log.info("host_id claim not released (%s); it expires by itself", exc)
