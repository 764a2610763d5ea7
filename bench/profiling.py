"""Summarise a py-spy profile: the hottest functions by own time and by inclusive time.

Record with ``py-spy record --format raw -o worker.txt --pid <worker pid> -d 10`` (the
collapsed-stack format: ``frame;frame;… count`` per line), then
``python -m bench.profiling worker.txt [--top 25] [--idle]``. Percentages are of all
samples taken; ``--idle`` keeps the samples where the process waited in the event loop's
poll (left out by default, so the figures are shares of the time the process was busy).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

# Frames that mean "the event loop is waiting for I/O": uvloop's run_forever with nothing
# above it, or the selector's poll.
_IDLE = re.compile(r"(select|poll|epoll_wait|run_forever|_run_once) \(")
_SITE = re.compile(r"/(site|dist)-packages/")


def _frame(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'file path:func', shortened to the repository."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    for marker in ("/core/", "/shards/", "/bench/", "/asyncio/"):
        if marker in path:
            path = marker.strip("/") + "/" + path.split(marker, 1)[1]
            break
    else:
        if _SITE.search(path):
            path = _SITE.split(path)[-1]
        path = path.rsplit("/", 2)[-1] if "/" in path and not _SITE.search(path) else path
    return f"{path}:{func}"


def summarise(
    lines: list[str], *, keep_idle: bool = False
) -> tuple[int, Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if not keep_idle and _IDLE.search(frames[-1]):
            continue
        n = int(count)
        total += n
        names = [_frame(f) for f in frames]
        own[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    return total, own, inclusive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    p.add_argument("profile", type=Path, help="py-spy record --format raw output")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--idle", action="store_true", help="count time waiting in the loop too")
    args = p.parse_args(argv)
    total, own, inclusive = summarise(args.profile.read_text().splitlines(), keep_idle=args.idle)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples{'' if args.idle else ' (busy only)'}")
    print("\nown time (the function itself, no callees):")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {name}")
    print("\ninclusive time (the function and what it calls):")
    for name, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
