"""A pool's addresses for a client: any host serves any client, so when the one it is on
dies (or drains) the client signs in on the next (docs/deployment.md: DNS SRV, a TCP load
balancer or this list)."""

from __future__ import annotations

import asyncio
import random
import ssl

from client.session import PchatClient

CONNECT_TIMEOUT_S = 3.0  # a host that died with its machine never answers: try the next


def parse_addresses(text: str, default_port: int) -> list[tuple[str, int]]:
    """``"a.example:5041,b.example,[::1]:5041"`` -> [(host, port), ...]; ValueError if bad."""
    out: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, port = item, default_port
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            if rest:
                port = int(rest.removeprefix(":"))
        elif item.count(":") == 1:
            host, _, number = item.partition(":")
            port = int(number)
        if not host or not 0 < port < 65536:
            raise ValueError(f"not a host[:port]: {item!r}")
        out.append((host, port))
    if not out:
        raise ValueError("no pool address given")
    return out


class PoolAddresses:
    """Connects to one host of the pool. Each call after the first starts at the host after
    the one used last: a reconnect means that host failed (or drains), and the others
    are as good. The first host is random, so the clients of a pool spread."""

    def __init__(self, addresses: list[tuple[str, int]], *, shuffle: bool = True) -> None:
        if not addresses:
            raise ValueError("a pool needs at least one address")
        self.addresses = list(addresses)
        self._next = random.randrange(len(addresses)) if shuffle else 0
        self.current: tuple[str, int] | None = None

    async def connect(
        self,
        user: str,
        password: str,
        *,
        domain: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> PchatClient:
        """A connected (not yet signed-in) client on the first host that answers."""
        errors: list[str] = []
        for step in range(len(self.addresses)):
            index = (self._next + step) % len(self.addresses)
            host, port = self.addresses[index]
            try:
                client = await asyncio.wait_for(
                    PchatClient.connect(host, port, user, password, domain=domain, tls=tls),
                    timeout_s,
                )
            except (OSError, TimeoutError) as exc:
                errors.append(f"{host}:{port}: {exc or type(exc).__name__}")
                continue
            self._next = (index + 1) % len(self.addresses)
            self.current = (host, port)
            return client
        raise ConnectionError("no host of the pool answers: " + "; ".join(errors))

    async def signed_in(
        self, user: str, password: str, *, domain: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> PchatClient:  # fmt: skip
        """`connect`, then the whole sign-in; a client whose sign-in fails is closed."""
        client = await self.connect(user, password, domain=domain, tls=tls)
        try:
            await client.sign_in()
        except BaseException:
            await client.close()
            raise
        return client
