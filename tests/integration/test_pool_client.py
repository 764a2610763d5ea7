"""The client's pool addresses: a dead host is skipped, a reconnect moves to the next."""

from __future__ import annotations

import socket

import pytest

from client.client import PoolAddresses, SipError, parse_addresses
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, PASSWORD, add_user


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nobody listens once it is closed


def test_addresses_parse() -> None:
    assert parse_addresses("a.example:5070, b.example ,[::1]:5061,[fe80::1]", 5041) == [
        ("a.example", 5070),
        ("b.example", 5041),
        ("::1", 5061),
        ("fe80::1", 5041),
    ]
    for bad in ("", " , ", "a:0", "a:99999", "a:x"):
        with pytest.raises(ValueError):
            parse_addresses(bad, 5041)
    with pytest.raises(ValueError):
        PoolAddresses([])


async def test_a_dead_host_is_skipped_and_a_reconnect_moves_on(server: RunningWorker) -> None:
    dead = ("127.0.0.1", closed_port())
    live = ("127.0.0.1", server.sip_port)
    pool = PoolAddresses([dead, live, dead], shuffle=False)
    first = await pool.connect(f"alice@{DOMAIN}", PASSWORD)
    await first.sign_in()  # the pool's host serves it
    assert pool.current == live
    await first.close()
    # The host it was on "died": the next call starts after it, finds only dead ones, and
    # comes round to the live one again.
    again = await pool.connect(f"alice@{DOMAIN}", PASSWORD)
    await again.sign_in()
    assert pool.current == live
    await again.close()
    with pytest.raises(ConnectionError, match="no host of the pool answers"):
        await PoolAddresses([dead, dead]).connect(f"alice@{DOMAIN}", PASSWORD)


async def test_signed_in_gives_a_signed_in_client_or_the_sign_in_error(
    server: RunningWorker,
) -> None:
    pool = PoolAddresses([("127.0.0.1", closed_port()), ("127.0.0.1", server.sip_port)])
    client = await pool.signed_in(f"alice@{DOMAIN}", PASSWORD)
    try:
        assert client.server_info  # the sign-in's getserverinfo was answered
    finally:
        await client.close()
    await add_user(server.store, "dora", enabled=False)
    with pytest.raises(SipError, match="403"):  # connected, then refused in the sign-in
        await pool.signed_in(f"dora@{DOMAIN}", PASSWORD)
