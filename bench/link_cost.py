"""The bus link's own CPU per message: one Redis (PUBLISH) against a Redis Cluster
(SPUBLISH to the master of each channel's slot), in one run.

    python -m bench.link_cost [--messages 20000] [--bytes 300] [--channels 50]

Both over TCP on loopback: a plain redis-server, and a private 3+3-node cluster. For each
link this process measures its CPU µs per publish (--messages spread over --channels room
channels, many in flight, as the bus publishes posts) and per received message (another
process publishes through the same kind of link). Process CPU time, not wall time: it is
the figure a loaded box disturbs least. Writes bench/results/link-cost-<time>/result.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from bench.load import report
from shards.links import BusLink, ClusterSeeds, SingleLink
from shards.resp import Message
from tests.redis_cluster import RedisClusterNodes, RedisServer

IN_FLIGHT = 256  # publishes in flight at once, as a busy worker has (bounded: the bench must be)

PUBLISHER = """
import asyncio, sys
from shards.links import ClusterSeeds, SingleLink
async def main(url, cluster, n, size, channels):
    link = await (ClusterSeeds([url]).connect if cluster else
                  (lambda cb: SingleLink.connect(url, cb)))(lambda c, d: None)
    names = [b"pchat:room:bench-%d" % i for i in range(channels)]
    for first in range(0, n, 256):
        await asyncio.gather(*(link.publish(names[i % channels], b"x" * size)
                               for i in range(first, min(first + 256, n))))
    link.close()
asyncio.run(main(sys.argv[1], sys.argv[2] == "1", *map(int, sys.argv[3:])))
"""


async def _connect(url: str, cluster: bool, on_message: Message) -> BusLink:
    if cluster:
        return await ClusterSeeds([url]).connect(on_message)
    return await SingleLink.connect(url, on_message)


async def _measure(url: str, cluster: bool, n: int, size: int, channels: int) -> list[float]:
    names = [b"pchat:room:bench-%d" % i for i in range(channels)]
    payload = b"x" * size
    pub = await _connect(url, cluster, lambda _c, _d: None)
    start = time.process_time()
    for first in range(0, n, IN_FLIGHT):
        await asyncio.gather(
            *(
                pub.publish(names[i % channels], payload)
                for i in range(first, min(first + IN_FLIGHT, n))
            )
        )
    published = time.process_time() - start
    pub.close()
    got = [0]

    def on_message(_channel: bytes, _data: bytes) -> None:
        got[0] += 1

    sub = await _connect(url, cluster, on_message)
    await sub.subscribe(*names)
    start = time.process_time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISHER, url, "1" if cluster else "0", str(n), str(size),
        str(channels),
    )  # fmt: skip
    if await proc.wait() != 0:
        raise RuntimeError("the publisher process failed")
    deadline = time.monotonic() + 60
    while got[0] < n and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    received = time.process_time() - start
    sub.close()
    if got[0] < n:
        raise RuntimeError(f"only {got[0]} of {n} messages arrived")
    return [round(published * 1e6 / n, 2), round(received * 1e6 / n, 2)]


async def _run(args: argparse.Namespace, single_url: str, cluster_url: str) -> dict[str, object]:
    sizes = (args.messages, args.bytes, args.channels)
    await _measure(single_url, False, 2000, args.bytes, args.channels)  # warm-up
    await _measure(cluster_url, True, 2000, args.bytes, args.channels)
    # A B B A: the box's other load drifts; the pairs cancel its trend.
    s1 = await _measure(single_url, False, *sizes)
    c1 = await _measure(cluster_url, True, *sizes)
    c2 = await _measure(cluster_url, True, *sizes)
    s2 = await _measure(single_url, False, *sizes)
    single = [round((a + b) / 2, 2) for a, b in zip(s1, s2, strict=True)]
    cluster = [round((a + b) / 2, 2) for a, b in zip(c1, c2, strict=True)]
    return {
        "messages": args.messages,
        "bytes": args.bytes,
        "channels": args.channels,
        "single_publish_us": single[0],
        "single_receive_us": single[1],
        "cluster_publish_us": cluster[0],
        "cluster_receive_us": cluster[1],
        "publish_ratio": round(cluster[0] / single[0], 3),
        "receive_ratio": round(cluster[1] / single[1], 3),
        "runs": {"single": [s1, s2], "cluster": [c1, c2]},
        "git": report.git_state(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20_000, help="publishes per measurement")
    p.add_argument("--bytes", type=int, default=300, help="payload size")
    p.add_argument("--channels", type=int, default=50, help="room channels (spread over slots)")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="pchat-link-bench-"))
    single = RedisServer(folder / "single")
    nodes = RedisClusterNodes(folder / "cluster")
    try:
        single.start()
        nodes.start()
        result = uvloop.run(_run(args, single.url, nodes.url))
    finally:
        nodes.stop()
        single.stop()
    report.write_small(Path("bench/results") / time.strftime("link-cost-%Y%m%d-%H%M%S"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
