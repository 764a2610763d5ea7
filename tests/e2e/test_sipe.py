"""Real SIPE (pidgin-sipe under bitlbee's libpurple backend) against a real `pchat serve`.

bitlbee runs headless on a free loopback port; the test is its IRC user. A member on pchat's
own client (client/) is on the other side of the room. Every wait is bounded and fails with
the IRC and SIPE trace tails.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client.client import PchatClient
from tests.e2e.bitlbee import Bitlbee, Irc, SipTrace, build_shim, private_ca, require_sipe
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster, free_port

HISTORY_POSTS = 30  # more than the 25 SIPE asks for after a join (bccontext <last cnt="25"/>)
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    data = tmp_path / "pchat"
    data.mkdir()
    c = Cluster(data, 1)
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    require_sipe()
    return build_shim(tmp_path)


def new_bitlbee(folder: Path, shim: Path, env: dict[str, str] | None = None) -> Bitlbee:
    folder.mkdir()
    return Bitlbee(folder, shim, env=env)


@pytest.fixture
def bitlbee(tmp_path: Path, shim: Path) -> Bitlbee:
    return new_bitlbee(tmp_path / "bitlbee", shim)


async def lobby_with_history(cluster: Cluster) -> tuple[str, PchatClient]:
    for user in ("alice", "bob"):
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    room = await cluster.admin("room", "add", "Lobby", "--category", "General", "--privacy", "open")
    await cluster.admin(
        "room", "add", "Stage", "--category", "General", "--privacy", "open",
        "--type", "auditorium", "--presenters", f"sip:bob@{DOMAIN}",
    )  # fmt: skip
    bob = await cluster.client("bob")
    await bob.join(room)
    for n in range(1, HISTORY_POSTS + 1):
        await bob.post(room, f"history {n}")
    return room, bob


async def sign_in(
    irc: Irc, server: str, password: str, transport: str = "tcp", proxy: str = ""
) -> None:
    """The account as a user sets it up; ``proxy``: SIPE's "Group Chat Proxy" setting."""
    irc.root(f"account add sipe alice@{DOMAIN} {password}")
    irc.root(f"account sipe set server {server}")
    irc.root(f"account sipe set transport {transport}")
    if proxy:
        irc.root(f"account sipe set groupchat_user {proxy}")
    irc.root("account sipe on")


def sent(trace: list[SipTrace], start: str) -> list[SipTrace]:
    return [m for m in trace if m.sent and m.first_line.startswith(start)]


def answers(trace: list[SipTrace], status: int, method: str) -> list[SipTrace]:
    """Responses SIPE received with ``status`` to its ``method`` requests."""
    return [
        m
        for m in trace
        if not m.sent
        and m.first_line.startswith(f"SIP/2.0 {status} ")
        and re.search(rf"\nCSeq: \d+ {method}\n", m.text)
    ]


async def signs_in_with_the_password(irc: Irc, bitlbee: Bitlbee) -> None:
    """REGISTER, 407, the same REGISTER with Proxy-Authorization, 200; then group chat."""
    await irc.expect(r"sipe - Logging in: Logged in", "SIPE sign-in")
    trace = bitlbee.sip()
    registers = sent(trace, "REGISTER ")
    assert len(registers) >= 2, irc.traces()
    assert "Proxy-Authorization: Digest" in registers[1].text, registers[1].text
    assert answers(trace, 407, "REGISTER") and answers(trace, 200, "REGISTER"), irc.traces()
    # Group chat is up once the second dialog (to the URI requri named) answers getinv.
    await irc.expect_sipe(r"chatserver_response: 'rpl:getinv' result \(200\)", "getinv")


async def lists_rooms(irc: Irc, names: list[str]) -> dict[str, str]:
    """`chat list sipe`: each room's index in the list."""
    irc.root("chat list sipe")
    found = {}
    for name in names:
        row = await irc.expect(rf"PRIVMSG &bitlbee :\s+(\d+)\s+{name}\b", f"{name} in the list")
        found[name] = row.group(1)
    await irc.expect(rf"PRIVMSG &bitlbee :{len(names)} sipe chatrooms", "the end of the list")
    return found


async def joins(irc: Irc, index: str, channel: str) -> None:
    irc.root(f"chat add sipe !{index} {channel}")
    await irc.expect(r"Chatroom successfully added", f"`chat add` of {channel}")
    irc.send(f"JOIN {channel}")
    await irc.expect(rf"^:sipalice!\S+ JOIN :{channel}$", f"SIPE joining {channel}")


async def shows_the_last_25(irc: Irc, bitlbee: Bitlbee) -> None:
    mark = irc.mark()
    await irc.expect(rf"PRIVMSG #lobby :.*history {HISTORY_POSTS}$", "the newest history post")
    shown = [
        int(m.group(1))
        for line in irc.seen_since(mark)
        if (m := re.search(r"PRIVMSG #lobby :.*history (\d+)$", line))
    ]
    assert shown == list(range(HISTORY_POSTS - 24, HISTORY_POSTS + 1)), (shown, irc.traces())
    assert any('<last cnt="25"/>' in m.text for m in sent(bitlbee.sip(), "INFO ")), irc.traces()


async def posts_both_ways(irc: Irc, bob: PchatClient, room: str) -> None:
    await bob.post(room, "live from bob")
    await irc.expect(r"^:sipbob!\S+ PRIVMSG #lobby :live from bob$", "bob's live post")
    irc.send("PRIVMSG #lobby :hello from sipe")
    post = await bob.next_post(timeout=20)
    assert (post.text, post.author.lower()) == ("hello from sipe", f"sip:alice@{DOMAIN}")


async def sees_a_refused_post_undelivered(irc: Irc, bitlbee: Bitlbee) -> None:
    """An auditorium where alice is no presenter: the INFO fails, SIPE takes it as undelivered
    (bitlbee drops libpurple's error writes, so the trace is where it shows; Pidgin shows it)."""
    irc.send("PRIVMSG #stage :may I speak")
    await irc.expect_sipe(r"chatserver_command_response: failure 403", "SIPE's undelivered")
    refused = answers(bitlbee.sip(), 403, "INFO")
    assert refused and "you may not post in this room" in refused[0].text, irc.traces()


async def reports_a_wrong_password(irc: Irc, bitlbee: Bitlbee) -> None:
    """The 403's Warning reaches the user, and SIPE stops (no hang, no retry loop)."""
    irc.root("account sipe off")
    await irc.expect(r"sipe - Signing off", "SIPE signing off")
    irc.root("account sipe set password wrong-password")
    irc.root("account sipe on")
    error = await irc.expect(r"sipe - Login error: (.+)$", "the wrong-password error")
    refusals = answers(bitlbee.sip(), 403, "REGISTER")
    warning = re.search(r'\nWarning: \d+ \S+ "([^"]+)"', refusals[0].text) if refusals else None
    assert warning and warning.group(1) in error.group(1), (error.group(0), irc.traces())
    await irc.expect(r"sipe - Logging in: Signing off", "SIPE giving up after the refusal")
    irc.root("account list")
    await irc.expect(r"PRIVMSG &bitlbee :End of account list", "bitlbee still answering")


async def test_sipe_signs_in_lists_joins_reads_history_and_posts(
    cluster: Cluster, bitlbee: Bitlbee
) -> None:
    room, bob = await lobby_with_history(cluster)
    bitlbee.start()
    irc = await Irc.connect(bitlbee, "tester")
    try:
        await sign_in(irc, f"127.0.0.1:{cluster.sip}", PASSWORD)
        await signs_in_with_the_password(irc, bitlbee)  # 1
        index = await lists_rooms(irc, ["Lobby", "Stage"])  # 2
        await joins(irc, index["Lobby"], "#lobby")  # 3
        await shows_the_last_25(irc, bitlbee)  # 4
        await posts_both_ways(irc, bob, room)  # 5 and 6
        await joins(irc, index["Stage"], "#stage")
        await sees_a_refused_post_undelivered(irc, bitlbee)
        await reports_a_wrong_password(irc, bitlbee)  # 7
    finally:
        await irc.close()
        bitlbee.stop()
        await bob.close()


async def test_sipe_over_tls_trusts_the_servers_ca(tmp_path: Path, shim: Path) -> None:
    """SIPE checks the server's certificate: with the test's CA as libpurple's only CA
    (SIPE_TEST_CA_DIR, the shim) it signs in over TLS; without it, it does not."""
    ca_dir, chain, key = private_ca(tmp_path)
    data = tmp_path / "pchat"
    data.mkdir()
    tls_port = free_port()
    tls = {"PCHAT_SIP__TLS_PORT": str(tls_port), "PCHAT_SIP__TLS_CERT": str(chain)}
    cluster = Cluster(data, 1, env={**tls, "PCHAT_SIP__TLS_KEY": str(key)})
    await cluster.start()
    trusting = new_bitlbee(tmp_path / "trusting", shim, {"SIPE_TEST_CA_DIR": str(ca_dir)})
    doubting = new_bitlbee(tmp_path / "doubting", shim)
    irc: list[Irc] = []
    room, bob = await lobby_with_history(cluster)
    try:
        trusting.start()
        irc.append(await Irc.connect(trusting, "tester"))
        proxy = f"ocschat@{DOMAIN}"  # a hand-set pool URI: both dialogs and every INFO use it
        await sign_in(irc[0], f"localhost:{tls_port}", PASSWORD, transport="tls", proxy=proxy)
        await signs_in_with_the_password(irc[0], trusting)
        assert [m.first_line for m in sent(trusting.sip(), "INVITE ")] == [
            f"INVITE sip:{proxy} SIP/2.0"
        ] * 2, irc[0].traces()
        assert "Successfully verified certificate for localhost" in trusting.text()
        assert "\nVia: SIP/2.0/tls " in sent(trusting.sip(), "REGISTER ")[0].text
        index = await lists_rooms(irc[0], ["Lobby", "Stage"])
        await joins(irc[0], index["Lobby"], "#lobby")
        await posts_both_ways(irc[0], bob, room)
        infos = [m for m in trusting.sip() if not m.sent and m.first_line.startswith("INFO ")]
        assert infos and all(f"\nFrom: <sip:{proxy}>;tag=" in m.text for m in infos)

        doubting.start()  # the system's CAs only: the test CA is not among them
        irc.append(await Irc.connect(doubting, "doubter"))
        await sign_in(irc[1], f"localhost:{tls_port}", PASSWORD, transport="tls")
        await irc[1].expect(r"The certificate for localhost could not be validated", "a doubt")
        irc[1].root("no")  # the user refuses the unknown certificate: SIPE gives up at once
        await irc[1].expect(r"sipe - Login error: ", "the refused certificate's error")
        assert not [line for line in irc[1].lines if "Logged in" in line]
    finally:
        for client in irc:
            await client.close()
        trusting.stop()
        doubting.stop()
        await bob.close()
        await cluster.stop()
