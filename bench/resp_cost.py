"""What the lean RESP client saves over redis-py, on the bus's two hot paths, in one run.

    python -m bench.resp_cost [--messages 20000] [--bytes 300]

Against one private redis-server (unix socket), the same process measures, for each
client: publishing --messages PUBLISHes of --bytes each (issued as the bus does: one
call per post, many in flight, no explicit pipeline), and receiving them on a
subscriber while another process publishes them. Reported: this process's CPU µs per
message (the client's own cost; Redis's and the other publisher's are left out) and the
ratios. Writes bench/results/resp-cost-<time>/result.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
import uvloop

from bench.load import report
from shards.redis_server import EmbeddedRedis
from shards.resp import RespClient, RespSubscriber

CHANNEL = b"bench-resp"
IN_FLIGHT = 256
"""Publishes in flight at once, as a busy worker has (bounded: the bench must be)."""


PUBLISHER = """
import asyncio, sys
from shards.resp import RespClient
async def main(url, n, size):
    pub = await RespClient.connect(url)
    payload = b"x" * size
    for first in range(0, n, 256):
        await asyncio.gather(*(pub.call("PUBLISH", b"bench-resp", payload)
                               for _ in range(min(256, n - first))))
    pub.close()
asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def _wait(count: list[int], n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while count[0] < n and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    if count[0] < n:
        raise RuntimeError(f"only {count[0]} of {n} messages arrived")


async def _publish_from_elsewhere(url: str, n: int, size: int) -> None:
    """Another process publishes, so this one's CPU is its receiving alone."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, url, str(n), str(size)
    )
    if await proc.wait() != 0:
        raise RuntimeError("the publisher process failed")


async def _lean(url: str, n: int, payload: bytes) -> tuple[float, float]:
    pub = await RespClient.connect(url)
    start = time.process_time()
    for first in range(0, n, IN_FLIGHT):
        await asyncio.gather(
            *(pub.call("PUBLISH", CHANNEL, payload) for _ in range(min(IN_FLIGHT, n - first)))
        )
    published = time.process_time() - start
    pub.close()
    got = [0]

    def on_message(_channel: bytes, _data: bytes) -> None:
        got[0] += 1

    sub = await RespSubscriber.connect(url, on_message)
    await sub.subscribe(CHANNEL)
    start = time.process_time()
    await _publish_from_elsewhere(url, n, len(payload))
    await _wait(got, n)
    received = time.process_time() - start
    sub.close()
    return published, received


async def _redis_py(url: str, n: int, payload: bytes) -> tuple[float, float]:
    pub = aioredis.Redis.from_url(url, max_connections=IN_FLIGHT)
    start = time.process_time()
    for first in range(0, n, IN_FLIGHT):
        await asyncio.gather(
            *(pub.publish(CHANNEL, payload) for _ in range(min(IN_FLIGHT, n - first)))
        )
    published = time.process_time() - start
    await pub.aclose()
    listener = aioredis.Redis.from_url(url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(CHANNEL)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    got = [0]

    async def read() -> None:
        while got[0] < n:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                got[0] += 1

    start = time.process_time()
    reader = asyncio.ensure_future(read())
    await _publish_from_elsewhere(url, n, len(payload))
    await asyncio.wait_for(reader, 60)
    received = time.process_time() - start
    await pubsub.aclose()
    await listener.aclose()
    return published, received


async def _run(n: int, size: int) -> dict[str, object]:
    folder = tempfile.mkdtemp(prefix="pchat-resp-bench-")
    server = EmbeddedRedis(f"{folder}/redis.sock", f"{folder}/redis.log")
    server.start()
    try:
        payload = b"x" * size
        await _lean(server.url, min(n, 2000), payload)  # warm-up of both paths
        lean = await _lean(server.url, n, payload)
        await _redis_py(server.url, min(n, 2000), payload)
        heavy = await _redis_py(server.url, n, payload)
    finally:
        server.stop()
    per = 1e6 / n
    out: dict[str, object] = {
        "messages": n,
        "bytes": size,
        "lean_publish_us": round(lean[0] * per, 2),
        "lean_receive_us": round(lean[1] * per, 2),
        "redis_py_publish_us": round(heavy[0] * per, 2),
        "redis_py_receive_us": round(heavy[1] * per, 2),
    }
    out["publish_ratio"] = round(heavy[0] / lean[0], 2) if lean[0] else None
    out["receive_ratio"] = round(heavy[1] / lean[1], 2) if lean[1] else None
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20_000, help="PUBLISHes per client")
    p.add_argument("--bytes", type=int, default=300, help="payload size")
    args = p.parse_args()
    result = uvloop.run(_run(args.messages, args.bytes))
    report.write_small(Path("bench/results") / time.strftime("resp-cost-%Y%m%d-%H%M%S"), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
