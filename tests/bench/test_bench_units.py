"""Pure pieces of the benchmark tools: latency histograms and the client's lean receive path."""

from __future__ import annotations

import random

from bench.load import stats
from client.client import LeanClient
from core.sip.codec import SipCodec
from core.sip.dialog import Dialog
from core.sip.message import SipMessage
from core.xccos import build


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "sockname" else None


def _dialog() -> Dialog:
    return Dialog(
        call_id="call-1",
        local_uri="sip:pchat@example.com",
        local_tag="srv",
        remote_from="<sip:bu000001@example.com>;tag=cli",
        remote_uri="sip:bu000001@example.com",
        remote_tag="cli",
        remote_target="sip:bu000001@127.0.0.1:40000;transport=tcp",
        contact="<sip:pchat@127.0.0.1:5041;transport=tcp>",
        via_host="127.0.0.1:5041",
    )


def test_histogram_resolution_and_percentiles() -> None:
    rng = random.Random(1)
    for _ in range(10_000):
        us = rng.randrange(0, 10**9)
        assert abs(stats.bucket_us(stats.bucket(us)) - us) <= max(0.5, us / 64)
    hist: stats.Histogram = {}
    for us in range(1, 1001):
        stats.add(hist, us * 1000)  # 1 ms .. 1 s
    p = stats.percentiles(hist)
    assert p["p50"] is not None and p["p99"] is not None
    assert abs(p["p50"] - 500) < 10 and abs(p["p99"] - 990) < 20
    assert stats.percentiles({}) == {"p50": None, "p90": None, "p99": None, "p99.9": None}


def _client() -> tuple[LeanClient, _Transport, list[bytes]]:
    seen: list[bytes] = []
    client = LeanClient("bu000001@example.com", "pw", on_posts=seen.extend)
    transport = _Transport()
    client.connection_made(transport)  # type: ignore[arg-type]
    return client, transport, seen


def test_lean_path_answers_and_counts_posts_split_across_reads() -> None:
    client, transport, seen = _client()
    dialog = _dialog()
    post = build.grpchat("ma-chan://example.com/r", "sip:a@example.com", "ts", 7, "1234 hi")
    wire = dialog.info(build.envelope(1, post)) + b"\r\n" + dialog.info(build.envelope(2, post))
    client.data_received(wire[:50])
    client.data_received(wire[50:])
    assert seen == [b"1234 hi", b"1234 hi"] and client.posts_received == 2
    answers = SipCodec().feed(b"".join(transport.written))
    requests = SipCodec().feed(wire)
    assert len(answers) == 2
    for answer, request in zip(answers, requests, strict=True):
        assert isinstance(answer, SipMessage) and isinstance(request, SipMessage)
        assert answer.status == 200 and answer.call_id == "call-1"
        for name in ("Via", "From", "To", "CSeq"):
            assert answer.get(name) == request.get(name)


def test_lean_path_counts_notices_and_leaves_replies_to_the_library() -> None:
    client, transport, seen = _client()
    dialog = _dialog()
    client.data_received(dialog.info(build.envelope(1, build.ntc("ntc:join"))))
    assert client.notices_received == 1 and len(transport.written) == 1
    reply = build.rpl("rpl:join", 1, "1", "99")
    client.data_received(dialog.info(build.envelope(2, reply)))
    assert [m.cseq for m in client.server_requests] == [(2, "INFO")]  # the ordinary path
    assert not seen
