"""History survives restarts; retries are stored once; session lifetime ends in BYE."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from client.client import PchatClient
from core.config import Settings
from shards.worker.runner import RunningWorker, run_worker
from tests.conftest import DOMAIN, PASSWORD, add_room, add_user, test_certificate


async def signed_in(port: int, user: str) -> PchatClient:
    """Like tests.conftest.signed_in, for workers started in the test itself."""
    client = await PchatClient.connect("127.0.0.1", port, f"{user}@{DOMAIN}", PASSWORD)
    await client.sign_in()
    return client


async def test_history_survives_a_restart(settings: Settings) -> None:
    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        room = await add_room(worker.store, "Archive")
        alice = await signed_in(worker.sip_port, "alice")
        await alice.join(room)
        ids = [await alice.post(room, f"post {i}") for i in range(30)]
        await alice.close()
    assert ids == list(range(1, 31))
    async with run_worker(settings) as worker:
        alice = await signed_in(worker.sip_port, "alice")
        await alice.join(room)
        history = await alice.history(room, query='<last cnt="50"/>')
        assert [m.text for m in history] == [f"post {i}" for i in range(30)]
        older = await alice.history(room, query='<before msgid="11" cnt="5"/>')
        assert [m.msgid for m in older] == [6, 7, 8, 9, 10]
        newer = await alice.history(room, query='<after msgid="27" cnt="5"/>')
        assert [m.msgid for m in newer] == [28, 29, 30]
        found = await alice.history(room, query='<search text="post" cnt="3"/>')
        assert [m.msgid for m in found] == [28, 29, 30]
        assert await alice.post(room, "after restart") == 31  # seq continues, no reuse
        await alice.close()


async def test_a_retried_post_is_stored_and_delivered_once(server: RunningWorker) -> None:
    room = await add_room(server.store, "Retry")
    alice = await signed_in(server.sip_port, "alice")
    bob = await signed_in(server.sip_port, "bob")
    await alice.join(room)
    await bob.join(room)
    first = await alice.post_envelope(room, "only once", envid=777)
    again = await alice.post_envelope(room, "only once", envid=777)  # the client retries
    assert first.code == again.code == 200
    msgid = first.data.find("grpchat").get("msgid")  # type: ignore[union-attr]
    assert again.data.find("grpchat").get("msgid") == msgid  # type: ignore[union-attr]
    assert [m.text for m in await bob.history(room)] == ["only once"]
    assert (await bob.next_post()).text == "only once"
    await alice.post(room, "next one")
    assert (await bob.next_post()).text == "next one"  # no second copy came in between
    await alice.close()
    await bob.close()


async def test_a_retry_after_restart_is_still_stored_once(settings: Settings) -> None:
    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        room = await add_room(worker.store, "Retry2")
        alice = await signed_in(worker.sip_port, "alice")
        await alice.join(room)
        first = await alice.post_envelope(room, "crash-safe", envid=4242)
        await alice.close()
    async with run_worker(settings) as worker:
        alice = await signed_in(worker.sip_port, "alice")
        await alice.join(room)
        again = await alice.post_envelope(room, "crash-safe", envid=4242)
        assert again.data.find("grpchat").get("msgid") == first.data.find("grpchat").get("msgid")  # type: ignore[union-attr]
        assert len(await alice.history(room)) == 1
        await alice.close()


async def test_bye_leaves_every_room_and_others_see_the_part(server: RunningWorker) -> None:
    room = await add_room(server.store, "Leaving")
    alice = await signed_in(server.sip_port, "alice")
    bob = await signed_in(server.sip_port, "bob")
    await alice.join(room)
    await bob.join(room)
    await alice.next_notice()  # bob joined
    await bob.close()  # BYE
    notice = await alice.next_notice()
    assert notice.name == "ntc:part"
    assert notice.data.find("chanib").find("uib").get("uri") == f"sip:bob@{DOMAIN}"  # type: ignore[union-attr]
    assert server.owner.online_count("leaving") == 1
    await alice.close()


async def test_dropped_connection_leaves_every_room(server: RunningWorker) -> None:
    room = await add_room(server.store, "Dropped")
    alice = await signed_in(server.sip_port, "alice")
    bob = await signed_in(server.sip_port, "bob")
    await alice.join(room)
    await bob.join(room)
    await alice.next_notice()
    assert bob._transport is not None
    bob._transport.abort()  # no BYE: the connection just goes
    assert (await alice.next_notice()).name == "ntc:part"
    assert server.owner.online_count("dropped") == 1
    await alice.close()


async def test_unrefreshed_session_is_ended_with_bye(tmp_path: Path, redis_url: str) -> None:
    from tests.conftest import make_settings

    base = make_settings(tmp_path, redis_url)
    settings = msgspec.structs.replace(
        base, sip=msgspec.structs.replace(base.sip, session_expires_s=1, session_grace_s=0)
    )
    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        alice = await signed_in(worker.sip_port, "alice")
        ok_update = await alice.request("UPDATE", alice._remote_target, in_dialog=True)
        assert ok_update.status == 200 and ok_update.get("Session-Expires") == "1;refresher=uac"
        for _ in range(50):
            if any(r.method == "BYE" for r in alice.server_requests):
                break
            await asyncio.sleep(0.1)
        assert any(r.method == "BYE" for r in alice.server_requests)
        assert not worker.gateway.sessions
        await alice.close()


async def test_disabling_a_user_ends_their_sessions(server: RunningWorker) -> None:
    alice = await signed_in(server.sip_port, "alice")
    record = await server.store.get_user(f"sip:alice@{DOMAIN}")
    assert record is not None
    record.enabled = False
    await server.store.put_user(record)
    await server.store.bump_revision()  # what `pchat admin user disable` does
    for _ in range(30):
        if any(r.method == "BYE" for r in alice.server_requests):
            break
        await asyncio.sleep(0.1)
    assert any(r.method == "BYE" for r in alice.server_requests)
    assert not server.gateway.sessions
    await alice.close()


async def test_sip_over_tls(tmp_path: Path, redis_url: str) -> None:
    import ssl

    from tests.conftest import make_settings

    cert, key = test_certificate(tmp_path)
    base = make_settings(tmp_path, redis_url)
    sip = msgspec.structs.replace(base.sip, tls_port=0, tls_cert=str(cert), tls_key=str(key))
    async with run_worker(msgspec.structs.replace(base, sip=sip)) as worker:
        await add_user(worker.store, "alice")
        room = await add_room(worker.store, "Secure")
        trust = ssl.create_default_context(cafile=str(cert))
        trust.check_hostname = False  # the test certificate names localhost, we dial 127.0.0.1
        alice = await PchatClient.connect(
            "127.0.0.1", worker.sip_tls_port, f"alice@{DOMAIN}", PASSWORD, tls=trust
        )
        await alice.sign_in()
        await alice.join(room)
        assert await alice.post(room, "over TLS") == 1
        assert (
            alice._transport is not None
            and alice._transport.get_extra_info("ssl_object") is not None
        )
        assert alice._remote_target.endswith(";transport=tls")  # the server's Contact
        assert any((r.get("Via") or "").startswith("SIP/2.0/TLS ") for r in alice.server_requests)
        await alice.close()


async def test_msgids_of_a_room_without_history_grow_across_restarts(settings: Settings) -> None:
    from core.rooms.management import ADMIN, CategoryChange, Management, RoomChange

    async with run_worker(settings) as worker:
        await add_user(worker.store, "alice")
        mgmt = Management(worker.store)
        await mgmt.create_category(ADMIN, "Ephemeral", CategoryChange(history=False))
        room = await mgmt.create_room(ADMIN, "Gone", "Ephemeral", RoomChange(privacy="open"))
        uri = f"ma-chan://{DOMAIN}/{room.id}"
        alice = await signed_in(worker.sip_port, "alice")
        await alice.join(uri)
        before = await alice.post(uri, "one")
        await alice.close()
    async with run_worker(settings) as worker:
        alice = await signed_in(worker.sip_port, "alice")
        await alice.join(uri)
        after = await alice.post(uri, "two")
        assert after > before  # nothing stored, yet a client's "last seen" stays valid
        await alice.close()


async def test_healthz_reports_the_store_and_redis(server: RunningWorker) -> None:
    assert await server.health() == {
        "worker": 0,
        "redis_ok": True,
        "store_ok": True,
        "sessions": 0,
        "node": 0,
        "shards": 1024,  # one worker: every shard is its own, no leases
        "admission_inflight": 0,
    }
    await server.store.close()  # the store goes away under the worker
    try:
        assert (await server.health())["store_ok"] is False
    finally:
        await server.store.open()
