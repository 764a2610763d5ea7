"""Unit tests for shards/routing.py: a stable room -> shard -> worker map (ARCHITECTURE §3)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from shards.routing import ShardMap, shard_of

# crc32 values worked out with zlib.crc32 and kept as literals, so a switch to another hash
# (or to Python's per-process hash()) fails here. "123456789" is the CRC-32 check value.
KNOWN_CRC32 = {
    "123456789": 0xCBF43926,
    "a": 0xE8B7BE43,
    "ma-chan://example.com/lobby": 0xD0F1075C,
    "ma-chan://example.com/room-42": 0x46E9529A,
    "ma-chan://example.org/lobby": 0x750B8FFC,
}

REPO = Path(__file__).resolve().parents[2]
SEQUENTIAL_IDS = [f"room-{i}" for i in range(10_000)]
# Ids with no shared structure, like the ones admins and clients make up.
SCATTERED_IDS = [hashlib.sha256(str(i).encode()).hexdigest()[:16] for i in range(10_000)]


@pytest.mark.parametrize(("uri", "crc"), list(KNOWN_CRC32.items()))
def test_shard_of_is_crc32_modulo_shards(uri: str, crc: int) -> None:
    assert shard_of(uri, 2**32) == crc
    assert shard_of(uri, 1024) == crc % 1024
    assert shard_of(uri, 7) == crc % 7


def test_shard_of_known_shards() -> None:
    assert shard_of("ma-chan://example.com/lobby", 1024) == 860
    assert shard_of("ma-chan://example.com/room-42", 1024) == 666
    assert shard_of("ma-chan://example.org/lobby", 1024) == 1020


def test_shard_of_encodes_utf8() -> None:
    # "é" is two bytes in UTF-8 (latin-1 would give 0xD280794A); worked out with zlib.
    assert shard_of("ma-chan://example.com/café", 2**32) == 0x84B8101E


def test_shard_of_is_the_same_in_other_processes() -> None:
    """Never hash(): a child with another hash seed must land every room on the same shard."""
    uris = [f"ma-chan://example.com/{room_id}" for room_id in SCATTERED_IDS[:50]]
    code = (
        "import sys; from shards.routing import shard_of; "
        "print(' '.join(str(shard_of(u, 1024)) for u in sys.argv[1:]))"
    )
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", code, *uris],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=30,
        ).stdout.split()
        assert [int(s) for s in out] == [shard_of(u, 1024) for u in uris]


@pytest.mark.parametrize("ids", [SEQUENTIAL_IDS, SCATTERED_IDS], ids=["sequential", "scattered"])
def test_rooms_spread_evenly_over_16_shards(ids: list[str]) -> None:
    counts = Counter(shard_of(f"ma-chan://example.com/{i}", 16) for i in ids)
    # 625 expected per shard, sigma about 24: +-15% is over 3.5 sigma.
    assert set(counts) == set(range(16))
    assert min(counts.values()) >= 530
    assert max(counts.values()) <= 720


@pytest.mark.parametrize("ids", [SEQUENTIAL_IDS, SCATTERED_IDS], ids=["sequential", "scattered"])
def test_rooms_spread_over_1024_shards(ids: list[str]) -> None:
    counts = Counter(shard_of(f"ma-chan://example.com/{i}", 1024) for i in ids)
    # About 9.8 rooms a shard; no shard may take more than three times its share.
    assert len(counts) >= 1000
    assert max(counts.values()) <= 30


@pytest.mark.parametrize("workers", [3, 4, 7, 8])
@pytest.mark.parametrize("ids", [SEQUENTIAL_IDS, SCATTERED_IDS], ids=["sequential", "scattered"])
def test_rooms_spread_evenly_over_workers(ids: list[str], workers: int) -> None:
    shard_map = ShardMap(shards=1024, workers=workers, domain="example.com")
    counts = Counter(shard_map.owner_of(room_id) for room_id in ids)
    share = len(ids) / workers
    assert set(counts) == set(range(workers))
    assert min(counts.values()) >= 0.9 * share
    assert max(counts.values()) <= 1.1 * share


@pytest.mark.parametrize(("shards", "workers"), [(1024, 1), (1024, 3), (1024, 4), (64, 64)])
def test_owner_is_shard_modulo_workers(shards: int, workers: int) -> None:
    shard_map = ShardMap(shards=shards, workers=workers, domain="example.com")
    for room_id in SCATTERED_IDS[:2000]:
        shard = shard_of(f"ma-chan://example.com/{room_id}", shards)
        assert shard_map.owner_of(room_id) == shard % workers


def test_owner_of_known_rooms() -> None:
    """The owner hashes the full room URI (with the domain), not the bare id."""
    four = ShardMap(shards=1024, workers=4, domain="example.com")
    three = ShardMap(shards=1024, workers=3, domain="example.com")
    assert four.owner_of("room-42") == 666 % 4 == 2
    assert three.owner_of("room-42") == 666 % 3 == 0
    assert three.owner_of("lobby") == 860 % 3 == 2
    other = ShardMap(shards=1024, workers=3, domain="example.org")
    assert other.owner_of("lobby") == 1020 % 3 == 0


def test_owner_of_depends_on_the_domain() -> None:
    a = ShardMap(shards=1024, workers=8, domain="example.com")
    b = ShardMap(shards=1024, workers=8, domain="example.org")
    moved = sum(a.owner_of(r) != b.owner_of(r) for r in SCATTERED_IDS[:1000])
    assert moved > 500  # about 7 in 8 rooms change owner with the URI


def test_owner_of_is_stable_across_map_instances() -> None:
    first = ShardMap(shards=1024, workers=5, domain="example.com")
    second = ShardMap(shards=1024, workers=5, domain="example.com")
    assert [first.owner_of(r) for r in SCATTERED_IDS[:500]] == [
        second.owner_of(r) for r in SCATTERED_IDS[:500]
    ]
