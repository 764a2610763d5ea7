"""Loop turns and CPU of one post's local fan-out, two trees back to back.

    python -m bench.fanout_turns [--server-src DIR] [--recipients 200] [--posts 400]

One worker in a child process (SQLite in a temp dir, a private redis-server) with
--recipients real TCP connections from the same process, each with a SIP dialog. A post
is pushed into the worker's delivery queue for all of them, as a committed post is; the
child counts the loop turns until the first and the last recipient's socket holds the
INFO (non-blocking reads between turns), then pushes --posts posts in batches of 8 and
measures CPU per delivery (framing, queueing, writes; the reads are left out). Unlike
the end-to-end profiles, turns and CPU time hardly move with what else runs on the box.
Runs this tree and --server-src alternately (A B B A) with the same child code (which
only uses what both have) and writes bench/results/fanout-turns-<time>/result.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


async def _child(recipients: int, posts: int) -> dict[str, float]:
    from core.config import HttpSettings, LimitSettings, Settings, SipSettings
    from core.sip.dialog import Dialog
    from shards.redis_server import EmbeddedRedis
    from shards.worker.runner import run_worker

    folder = Path(tempfile.mkdtemp(prefix="fanout-turns-"))
    redis = EmbeddedRedis(str(folder / "redis.sock"), str(folder / "redis.log"))
    redis.start()
    settings = Settings(
        domain="example.com", data_dir=str(folder), redis_url=redis.url,
        sip=SipSettings(host="127.0.0.1", port=0), http=HttpSettings(host="127.0.0.1", port=0),
        # the recipients never sign in: the caps on unauthenticated connections are lifted
        limits=LimitSettings(unauth_per_address=10_000, unauth_connections=10_000),
    )  # fmt: skip
    try:
        async with run_worker(settings) as worker:
            gateway = worker.gateway
            socks: list[socket.socket] = []
            targets = []
            for n in range(recipients):
                before = set(gateway.connections)
                sock = socket.create_connection(("127.0.0.1", worker.sip_port))
                sock.setblocking(False)
                while not (new := set(gateway.connections) - before):
                    await asyncio.sleep(0.001)
                conn = new.pop()
                dialog = Dialog(
                    call_id=f"c{n}@bench", local_uri="sip:pchat@example.com", local_tag="lt",
                    remote_from=f"<sip:u{n}@example.com>;tag=rt{n}",
                    remote_uri=f"sip:u{n}@example.com", remote_tag=f"rt{n}",
                    remote_target=f"sip:u{n}@127.0.0.1:5060;transport=tcp",
                    contact="<sip:pchat@127.0.0.1:5041;transport=tcp>", via_host="127.0.0.1:5041",
                )  # fmt: skip
                targets.append(_Target(f"s{n}", conn, dialog))
                socks.append(sock)
            members = tuple(targets)
            push = gateway.local.deliveries.push
            body = b"<grpchat>" + b"x" * 300 + b"</grpchat>"
            first_turns, last_turns = [], []
            for _ in range(20):
                push("bench", body, members)
                turns, first, waiting = 0, 0, set(range(recipients))
                while waiting and turns < 50:
                    await asyncio.sleep(0)
                    turns += 1
                    for i in list(waiting):
                        if _drain(socks[i]):
                            waiting.discard(i)
                            first = first or turns
                last_turns.append(turns)
                first_turns.append(first)
            cpu = 0.0
            for _ in range(posts // 8):
                started = time.process_time()
                for _ in range(8):
                    push("bench", body, members)
                for _ in range(3):
                    await asyncio.sleep(0)
                cpu += time.process_time() - started
                await asyncio.sleep(0.002)
                for sock in socks:
                    _drain(sock)
            for sock in socks:
                sock.close()
            return {
                "turns_to_first_write": sorted(first_turns)[len(first_turns) // 2],
                "turns_to_last_write": sorted(last_turns)[len(last_turns) // 2],
                "cpu_us_per_delivery": cpu / ((posts // 8) * 8 * recipients) * 1e6,
            }
    finally:
        redis.stop()


class _Target:
    __slots__ = ("session_id", "_conn", "_dialog")

    def __init__(self, session_id: str, conn: object, dialog: object) -> None:
        self.session_id = session_id
        self._conn = conn
        self._dialog = dialog

    def deliver(self, room_id: str, body: bytes) -> None:
        self._conn.send(self._dialog.info(body))  # type: ignore[attr-defined]


def _drain(sock: socket.socket) -> bool:
    got = False
    try:
        while sock.recv(1 << 16):
            got = True
    except BlockingIOError:
        pass
    return got


def _run_tree(tree: Path, recipients: int, posts: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [sys.executable, str(HERE), "--child",
         "--recipients", str(recipients), "--posts", str(posts)],
        env=env, cwd=str(tree), capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server-src", type=Path, help="the other tree (before)")
    p.add_argument("--recipients", type=int, default=200)
    p.add_argument("--posts", type=int, default=400)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import uvloop

        print(json.dumps(uvloop.run(_child(args.recipients, args.posts))))
        return
    order = [("after", REPO)]
    if args.server_src is not None:
        before = ("before", args.server_src.resolve())
        order = [before, order[0], order[0], before]  # A B B A
    runs = []
    for label, tree in order:
        load = os.getloadavg()
        result = _run_tree(tree, args.recipients, args.posts)
        runs.append({"tree": label, "src": str(tree), "loadavg": load, **result})
        print(json.dumps(runs[-1]))
    out = REPO / "bench" / "results" / time.strftime("fanout-turns-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(f"results in {out}")


if __name__ == "__main__":
    main()
