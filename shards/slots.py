"""Redis Cluster key slots: CRC16 (XMODEM) of the key's hash tag, modulo 16384.

The cluster routes a sharded channel like a key, so the bus computes the slot itself and
sends SPUBLISH straight to the node that serves it (no MOVED round trip on the hot path).
"""

from __future__ import annotations

SLOTS = 16_384


def _table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        out.append(crc & 0xFFFF)
    return tuple(out)


_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC16/XMODEM (polynomial 0x1021, initial 0), the cluster specification's checksum."""
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that decides its slot: the text between the first ``{`` and the
    next ``}`` when that is not empty, else the whole key (the specification's rule)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: bytes) -> int:
    return crc16(hash_tag(key)) % SLOTS
