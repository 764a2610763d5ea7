"""Bad input gets its defined answer, the worker keeps serving, nothing stored is lost."""

from __future__ import annotations

import asyncio

import pytest

from client.client import PchatClient, SipError, XccosError
from core.xccos import build
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, PASSWORD, add_room, signed_in


def raw_request(
    method: str, call_id: str, *, body: bytes = b"", extra: str = "", length: str | None = None
) -> bytes:
    length = str(len(body)) if length is None else length
    return (
        f"{method} sip:pchat@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=t1\r\nTo: <sip:pchat@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: {length}\r\n\r\n"
    ).encode() + body


async def still_serving(server: RunningWorker, room: str) -> None:
    """A fresh client signs in, posts and reads history: the worker is unharmed."""
    other = await signed_in(server, "carol")
    await other.join(room)
    await other.post(room, "still here")
    texts = [m.text for m in await other.history(room)]
    assert texts[0] == "before the attack" and texts[-1] == "still here"
    await other.close()


@pytest.fixture
async def lobby(server: RunningWorker) -> str:
    room = await add_room(server.store, "Lobby")
    first = await signed_in(server, "bob")
    await first.join(room)
    await first.post(room, "before the attack")
    await first.close()
    return room


async def test_malformed_start_line_gets_400_and_the_connection_goes_on(
    server: RunningWorker, lobby: str
) -> None:
    alice = await signed_in(server)
    bad = raw_request("INFO", "bad1").replace(
        b"INFO sip:pchat@example.com SIP/2.0", b"NOT SIP AT ALL"
    )
    response = await alice.raw_response(bad, "bad1")
    assert response.status == 400 and "pchat" in (response.get("Warning") or "")
    assert (await alice.request("OPTIONS", alice.pool_uri)).status == 200
    await alice.close()
    await still_serving(server, lobby)


@pytest.mark.parametrize(
    "data",
    [
        raw_request("OPTIONS", "cl1", length="abc"),  # Content-Length not a number
        raw_request("OPTIONS", "cl2").replace(b"Content-Length: 0\r\n", b""),  # missing
        b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Filler: " + b"a" * 20000,  # header block over 16 KiB
    ],
    ids=["bad-length", "no-length", "huge-headers"],
)
async def test_lost_framing_closes_only_that_connection(
    server: RunningWorker, lobby: str, data: bytes
) -> None:
    alice = await signed_in(server)
    alice.send_raw(data)
    await asyncio.wait_for(alice.closed.wait(), 5)
    await still_serving(server, lobby)


async def test_oversized_body_gets_413_and_the_connection_goes_on(
    server: RunningWorker, lobby: str
) -> None:
    alice = await signed_in(server)
    body = b"x" * (server.settings.sip.max_body_bytes + 1)
    response = await alice.raw_response(
        raw_request("INFO", "big1", body=body, extra="Call-ID-X: 1\r\n"), "big1"
    )
    assert response.status == 413
    await alice.join(lobby)  # the stream is still in step
    await alice.close()
    await still_serving(server, lobby)


@pytest.mark.parametrize(
    "body",
    [
        b"<xccos ver='1' envid='1'><cmd id='cmd:join' seqid='1'><data>",  # truncated
        b"not xml at all",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        b'<xccos ver="1" envid="1"><cmd id="cmd:chansrch" seqid="1"><data>&b;</data></cmd></xccos>',
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<xccos ver="1" envid="1">&e;</xccos>',
        b'<other ver="1" envid="1"/>',
        b"<xccos ver='1' envid='1'>" + b"<a>" * 100 + b"</a>" * 100 + b"</xccos>",
    ],
    ids=["truncated", "not-xml", "entity-expansion", "external-entity", "wrong-root", "too-deep"],
)
async def test_hostile_or_broken_xml_gets_400(
    server: RunningWorker, lobby: str, body: bytes
) -> None:
    alice = await signed_in(server)
    info = (
        f"INFO {alice._remote_target} SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx1\r\n"
        f"From: <{alice.uri}>;tag=t\r\nTo: {alice._to}\r\nCall-ID: {alice.call_id}\r\n"
        "CSeq: 900 INFO\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    response = await alice.raw_response(info, alice.call_id, 900)
    assert response.status == 400
    await alice.join(lobby)
    await alice.close()
    await still_serving(server, lobby)


async def test_unknown_command_gets_501_reply(server: RunningWorker) -> None:
    alice = await signed_in(server)
    reply = await alice.command("cmd:frobnicate", "<x/>", check=False)
    assert (reply.name, reply.code, reply.text) == ("rpl:frobnicate", 501, "NOT_IMPLEMENTED")
    await alice.close()


async def test_info_outside_any_dialog_gets_481(server: RunningWorker) -> None:
    alice = await signed_in(server)
    response = await alice.raw_response(raw_request("INFO", "nodialog", body=b"<x/>"), "nodialog")
    assert response.status == 481
    await alice.close()


async def test_unknown_method_gets_405_with_allow(server: RunningWorker) -> None:
    alice = await signed_in(server)
    response = await alice.raw_response(raw_request("MESSAGE", "m1"), "m1")
    assert response.status == 405 and "INFO" in (response.get("Allow") or "")
    await alice.close()


async def test_from_other_than_the_signed_in_user_gets_403(server: RunningWorker) -> None:
    alice = await signed_in(server)
    forged = raw_request("OPTIONS", "forge1").replace(b"sip:alice@", b"sip:bob@")
    response = await alice.raw_response(forged, "forge1")
    assert response.status == 403
    await alice.close()


async def test_post_by_someone_else_or_to_a_forbidden_room_is_refused(
    server: RunningWorker, lobby: str
) -> None:
    closed = await add_room(server.store, "Board", privacy="closed", members=[f"sip:bob@{DOMAIN}"])
    alice = await signed_in(server)
    with pytest.raises(XccosError) as refused:
        await alice.join(closed)
    assert refused.value.code == 403
    reply = await alice.post_envelope(closed, "let me in")
    assert reply.code == 403  # never joined
    await alice.join(lobby)
    forged = build.post(lobby, f"sip:bob@{DOMAIN}", "I am bob")
    with pytest.raises(SipError) as forged_refused:
        await alice.send_envelope(forged)  # a refused post fails its INFO (SIPE reads that)
    assert forged_refused.value.status == 403
    assert [m.text for m in await alice.history(lobby)] == ["before the attack"]
    missing = await alice.post_envelope(f"ma-chan://{DOMAIN}/nope", "hello")
    assert missing.code in (403, 404)
    await alice.close()


async def test_wrong_password_is_challenged_then_refused(server: RunningWorker) -> None:
    mallory = await PchatClient.connect("127.0.0.1", server.sip_port, f"alice@{DOMAIN}", "wrong")
    with pytest.raises(SipError) as first:
        await mallory.provision()
    assert first.value.status == 401
    statuses = []
    for _ in range(3):
        try:
            await mallory.provision()
        except SipError as exc:
            statuses.append(exc.status)
        except ConnectionError:
            statuses.append(0)
    assert 403 in statuses
    await asyncio.wait_for(mallory.closed.wait(), 5)


async def test_disabled_user_is_provisioned_off_and_refused_a_session(
    server: RunningWorker,
) -> None:
    dave = await PchatClient.connect("127.0.0.1", server.sip_port, f"dave@{DOMAIN}", PASSWORD)
    assert await dave.provision() is False
    with pytest.raises(SipError) as refused:
        await dave.invite()
    assert refused.value.status == 403
    await dave.close()


async def test_keepalive_ping_gets_a_pong(server: RunningWorker) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sip_port)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), 5)


async def test_info_with_someone_elses_from_gets_403(server: RunningWorker) -> None:
    alice = await signed_in(server)
    body = build.envelope(5, build.cmd("cmd:getserverinfo", 1, f'<sib domain="{DOMAIN}"/>'))
    info = (
        f"INFO {alice._remote_target} SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKf1\r\n"
        f"From: <sip:mallory@{DOMAIN}>;tag=t\r\nTo: {alice._to}\r\nCall-ID: {alice.call_id}\r\n"
        f"CSeq: 901 INFO\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    response = await alice.raw_response(info, alice.call_id, 901)
    assert response.status == 403
    await alice.close()


async def test_digest_for_another_request_uri_is_refused(server: RunningWorker) -> None:
    from core.sip import digest

    client = await PchatClient.connect("127.0.0.1", server.sip_port, f"alice@{DOMAIN}", PASSWORD)
    first = await client.raw_response(raw_request("OPTIONS", "d1"), "d1")
    assert first.status == 401
    challenge = first.get_all("WWW-Authenticate")[0]
    answer = digest.authorization(
        challenge, "OPTIONS", "sip:elsewhere@example.org", f"alice@{DOMAIN}", PASSWORD
    )
    retry = raw_request("OPTIONS", "d2", extra=f"Authorization: {answer}\r\n")
    assert (await client.raw_response(retry, "d2")).status == 401
    await client.close()
