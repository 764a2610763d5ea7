"""What answering a post's INFO after the post costs (a refused post fails its INFO).

    python -m bench.answer_cost [--posts 3000] [--in-flight 32] [--label NAME]

One worker in this process (SQLite in a temp dir, a private redis-server), one client
signed in and joined to one room, posting --posts posts with --in-flight at once, each in
its own INFO. Per post it records the time from sending the INFO to its SIP answer and to
its rpl:grpchat, and the whole run's posts/s and this process's CPU per post (client and
worker together). Run it on two trees to compare (the client part uses only what both
have): before the change the answer came at once and the rpl after the commit; now both
come after the commit, the answer first. Writes bench/results/answer-cost-<label>-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path

import uvloop

from bench.load import report
from client.client import PchatClient
from core.config import HttpSettings, Settings, SipSettings
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord, RoomRecord, UserRecord
from core.xccos import build
from shards.redis_server import EmbeddedRedis
from shards.worker.runner import run_worker

DOMAIN = "example.com"
ROOM = f"ma-chan://{DOMAIN}/bench"


async def _post(client: PchatClient, envid: int, text: str) -> tuple[float, float, int]:
    """(seconds to the INFO's answer, seconds to the rpl, the answer's status)."""
    fut = asyncio.get_running_loop().create_future()
    client._replies[str(envid)] = fut
    body = build.envelope(envid, build.post(ROOM, client.uri, text))
    start = time.perf_counter()
    response = await client.request(
        "INFO", client._remote_target, in_dialog=True,
        extra=[("Content-Type", "text/plain")], body=body,
    )  # fmt: skip
    answered = time.perf_counter() - start
    await asyncio.wait_for(fut, 30)
    client._replies.pop(str(envid), None)
    return answered, time.perf_counter() - start, response.status


async def _posts(client: PchatClient, n: int, in_flight: int) -> list[tuple[float, float, int]]:
    envids = itertools.count(1_000_000)
    out: list[tuple[float, float, int]] = []
    for first in range(0, n, in_flight):
        batch = [
            _post(client, next(envids), f"post {i}")
            for i in range(first, min(n, first + in_flight))
        ]
        out += await asyncio.gather(*batch)
    return out


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)


async def _run(n: int, in_flight: int) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="pchat-answer-bench-"))
    redis = EmbeddedRedis(str(folder / "redis.sock"), str(folder / "redis.log"))
    redis.start()
    settings = Settings(
        domain=DOMAIN, data_dir=str(folder), redis_url=redis.url,
        sip=SipSettings(host="127.0.0.1", port=0), http=HttpSettings(host="127.0.0.1", port=0),
    )  # fmt: skip
    try:
        async with run_worker(settings) as worker:
            uri = f"sip:bench@{DOMAIN}"
            await worker.store.put_user(
                UserRecord(uri=uri, ha1=user_ha1s(uri, DOMAIN, "pw"), enabled=True)
            )
            await worker.store.put_category(CategoryRecord(id="general", name="General"))
            await worker.store.put_room(
                RoomRecord(id="bench", name="Bench", category_id="general", privacy="open")
            )
            client = await PchatClient.connect("127.0.0.1", worker.sip_port, uri, "pw")
            await client.sign_in()
            await client.join(ROOM)
            await _posts(client, min(n, 300), in_flight)  # warm-up
            cpu, wall = time.process_time(), time.perf_counter()
            timings = await _posts(client, n, in_flight)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            await client.close()
    finally:
        redis.stop()
    answers, rpls = [t[0] for t in timings], [t[1] for t in timings]
    return {
        "posts": n,
        "in_flight": in_flight,
        "statuses": sorted({t[2] for t in timings}),
        "posts_per_s": round(n / wall, 1),
        "cpu_us_per_post": round(cpu / n * 1e6, 1),
        "answer_ms": {"p50": _pct(answers, 0.5), "p99": _pct(answers, 0.99)},
        "rpl_ms": {"p50": _pct(rpls, 0.5), "p99": _pct(rpls, 0.99)},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posts", type=int, default=3000, help="posts measured")
    p.add_argument("--in-flight", type=int, default=32, help="posts in flight at once")
    p.add_argument("--label", default="run", help="names the result directory")
    p.add_argument("--out", default="bench/results", help="where the result directory goes")
    args = p.parse_args()
    result = uvloop.run(_run(args.posts, args.in_flight))
    result["label"] = args.label
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report.write_small(Path(args.out) / f"answer-cost-{args.label}-{stamp}", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
