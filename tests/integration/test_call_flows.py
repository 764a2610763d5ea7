"""The original client's two call flows, step by step, against a real worker (XCCOS.md §6)."""

from __future__ import annotations

import asyncio

from client.client import PchatClient
from core.xccos import build
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, PASSWORD, add_room


async def connect(server: RunningWorker, user: str) -> PchatClient:
    return await PchatClient.connect("127.0.0.1", server.sip_port, f"{user}@{DOMAIN}", PASSWORD)


async def test_sign_in_sequence_step_by_step(server: RunningWorker) -> None:
    followed = await add_room(
        server.store, "Followed", privacy="closed", members=[f"sip:alice@{DOMAIN}"]
    )
    managed = await add_room(server.store, "Managed", privacy="closed")
    room = await server.store.get_room("managed")
    assert room is not None
    room.managers = [f"sip:alice@{DOMAIN}"]
    await server.store.put_room(room)
    await server.store.follow(f"sip:alice@{DOMAIN}", "followed")
    bob = await connect(server, "bob")
    await bob.sign_in()
    alice = await connect(server, "alice")

    # 1. provisioning: policy on, pool URI given
    assert await alice.provision() is True
    # 2. INVITE -> 200 with a To tag, Session-Expires and a Contact -> ACK
    ok = await alice.invite()
    assert ok.status == 200
    assert ";tag=" in (ok.get("To") or "")
    assert (ok.get("Session-Expires") or "").endswith("refresher=uac")
    assert ok.get("Contact")
    # 3. getserverinfo -> rpl:getservinfo with the limits
    info = await alice.command("cmd:getserverinfo", f'<sib domain="{DOMAIN}" infoType="123"/>')
    assert info.name == "rpl:getservinfo"
    sib = info.data.find("sib") if info.data else None
    assert sib is not None and sib.get("messageSizeLimit") == "8000"
    assert sib.get("rootUri").startswith(f"ma-cat://{DOMAIN}/")
    # 4. getassociations member, then manager
    members = await alice.command("cmd:getassociations", '<assoc type="member"/>')
    assert [c.get("uri") for c in members.data.findall("chanib")] == [followed]  # type: ignore[union-attr]
    managers = await alice.command("cmd:getassociations", '<assoc type="manager"/>')
    assert [c.get("uri") for c in managers.data.findall("chanib")] == [managed]  # type: ignore[union-attr]
    # 5. bjoin with the followed rooms (the server-side list)
    follows = await alice.command("cmd:getassociations", '<assoc type="follower"/>')
    assert [c.get("uri") for c in follows.data.findall("chanib")] == [followed]  # type: ignore[union-attr]
    bjoin = await alice.command("cmd:bjoin", build.chanib(followed))
    joined = bjoin.data.findall("chanib")  # type: ignore[union-attr]
    assert [c.get("uri") for c in joined] == [followed]
    assert bjoin.data.find("uib").get("uri") == f"sip:alice@{DOMAIN}"  # type: ignore[union-attr]
    # 6. bccontext for the joined room: empty history, well formed
    history = await alice.history(followed)
    assert history == []
    # 7. getinv: nothing pending
    inv = await alice.command("cmd:getinv", f'<inv inviteId="1" domain="{DOMAIN}"/>')
    assert inv.code == 200 and inv.data is not None and inv.data.findall("inv") == []
    await alice.close()
    await bob.close()


async def test_search_join_history_post_flow(server: RunningWorker) -> None:
    lobby = await add_room(server.store, "Lobby", privacy="open")
    await add_room(server.store, "Other place", privacy="open")
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    await alice.sign_in()
    await bob.sign_in()
    await bob.join(lobby)

    found = await alice.search("lob")  # chansrch
    assert [r["uri"] for r in found] == [lobby]
    joined = await alice.join(lobby)  # join: uib table + chanib with the roster
    chan = joined.data.find("chanib")  # type: ignore[union-attr]
    assert chan is not None and chan.get("uri") == lobby
    uibs = {u.get("uri") for u in joined.data.findall("uib")}  # type: ignore[union-attr]
    assert uibs == {f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"}
    ucnt = [i.text for i in chan.findall("info") if i.get("id") == "urn:parlano:ma:info:ucnt"]
    assert ucnt == ["2"]
    notice = await bob.next_notice()  # bob sees alice arrive
    assert notice.name == "ntc:join"
    assert notice.data.find("uib").get("uri") == f"sip:alice@{DOMAIN}"  # type: ignore[union-attr]

    assert await alice.history(lobby) == []  # bccontext
    msgid = await alice.post(lobby, "hello, <b>bob</b> & all")  # grpchat -> rpl:grpchat
    assert msgid == 1
    got = await bob.next_post()
    assert (got.room, got.author, got.msgid, got.text) == (
        lobby,
        f"sip:alice@{DOMAIN}",
        1,
        "hello, <b>bob</b> & all",
    )
    assert len(alice.posts.items) == 0  # the author's own session does not get its post back
    [stored] = await bob.history(lobby)
    assert (stored.msgid, stored.text) == (1, "hello, <b>bob</b> & all")
    await alice.close()
    await bob.close()


async def test_posts_arrive_in_msgid_order_on_every_session(server: RunningWorker) -> None:
    lobby = await add_room(server.store, "Busy", privacy="open")
    clients = [await connect(server, u) for u in ("alice", "bob", "carol")]
    for c in clients:
        await c.sign_in()
        await c.join(lobby)
    import asyncio

    async def burst(c: PchatClient, n: int) -> list[int]:
        return [await c.post(lobby, f"{c.address} {i}") for i in range(n)]

    sent = await asyncio.gather(*(burst(c, 20) for c in clients))
    assert sorted(m for ids in sent for m in ids) == list(range(1, 61))
    for c, own in zip(clients, sent, strict=True):
        seen = [(await c.next_post()).msgid for _ in range(40)]
        assert seen == sorted(seen)
        assert set(seen) | set(own) == set(range(1, 61))
    for c in clients:
        await c.close()


async def test_second_device_of_the_author_gets_the_post(server: RunningWorker) -> None:
    lobby = await add_room(server.store, "Devices", privacy="open")
    phone, laptop = await connect(server, "alice"), await connect(server, "alice")
    for device in (phone, laptop):
        await device.sign_in()
        await device.join(lobby)
    await phone.post(lobby, "from my phone")
    assert (await laptop.next_post()).text == "from my phone"
    await phone.close()
    await laptop.close()


async def test_a_second_device_is_announced_once(server: RunningWorker) -> None:
    lobby = await add_room(server.store, "People")
    bob = await connect(server, "bob")
    await bob.sign_in()
    await bob.join(lobby)
    phone, laptop = await connect(server, "alice"), await connect(server, "alice")
    for device in (phone, laptop):
        await device.sign_in()
        await device.join(lobby)
    assert (await bob.next_notice()).name == "ntc:join"
    await phone.close()  # alice is still online on her laptop: nobody is told she left
    await laptop.post(lobby, "still here")
    assert (await bob.next_post()).text == "still here"
    assert not bob.notices.items
    await laptop.close()
    assert (await bob.next_notice()).name == "ntc:part"
    await bob.close()


async def test_several_posts_in_one_envelope_are_each_stored(server: RunningWorker) -> None:
    lobby = await add_room(server.store, "Batch")
    alice = await connect(server, "alice")
    await alice.sign_in()
    await alice.join(lobby)
    inner = "".join(build.post(lobby, alice.uri, f"part {i}") for i in range(3))
    await alice.send_envelope(inner)
    for _ in range(50):
        if len(await alice.history(lobby)) == 3:
            break
    assert [m.text for m in await alice.history(lobby)] == ["part 0", "part 1", "part 2"]
    assert server.gateway.admission.inflight == 0  # its admission place was given back exactly once
    await alice.close()


async def test_identical_posts_in_one_envelope_are_two_posts(server: RunningWorker) -> None:
    lobby = await add_room(server.store, "Twins")
    alice = await connect(server, "alice")
    await alice.sign_in()
    await alice.join(lobby)
    same = build.post(lobby, alice.uri, "again")
    await alice.send_envelope(same + same)
    for _ in range(100):  # acknowledged once durable: poll a while, not 50 round trips
        if len(await alice.history(lobby)) == 2:
            break
        await asyncio.sleep(0.02)
    assert [m.text for m in await alice.history(lobby)] == ["again", "again"]
    await alice.close()


async def test_bjoin_uib_ids_are_unique_across_the_reply(server: RunningWorker) -> None:
    """SIPE merges every uib of one rpl:bjoin into one id->URI map."""
    rooms = [await add_room(server.store, n, privacy="open") for n in ("One", "Two")]
    alice = await connect(server, "alice")
    bob = await connect(server, "bob")
    await alice.sign_in()
    await bob.sign_in()
    for room in rooms:
        await bob.join(room)
    bjoin = await alice.command("cmd:bjoin", "".join(build.chanib(r) for r in rooms))
    assert bjoin.data is not None
    uibs = {u.get("id"): u.get("uri") for u in bjoin.data.findall("uib")}
    assert len(uibs) == len(bjoin.data.findall("uib")) == 2  # each user once, one id each
    assert set(uibs.values()) == {f"sip:alice@{DOMAIN}", f"sip:bob@{DOMAIN}"}
    for chan in bjoin.data.findall("chanib"):
        [members] = [a for a in chan.findall("aib") if a.get("key") == "3984"]
        assert {uibs[i] for i in members.get("value").split(",")} == set(uibs.values())
    await alice.close()
    await bob.close()
