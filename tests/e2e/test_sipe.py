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
from tests.e2e.bitlbee import Bitlbee, Irc, SipTrace, build_shim, require_sipe
from tests.e2e.cluster import DOMAIN, PASSWORD, Cluster

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
def bitlbee(tmp_path: Path) -> Bitlbee:
    require_sipe()
    home = tmp_path / "bitlbee"
    home.mkdir()
    return Bitlbee(home, build_shim(tmp_path))


async def lobby_with_history(cluster: Cluster) -> tuple[str, PchatClient]:
    for user in ("alice", "bob"):
        await cluster.admin("user", "add", f"{user}@{DOMAIN}", "--password", PASSWORD)
    await cluster.admin("category", "add", "General")
    room = await cluster.admin("room", "add", "Lobby", "--category", "General", "--privacy", "open")
    bob = await cluster.client("bob")
    await bob.join(room)
    for n in range(1, HISTORY_POSTS + 1):
        await bob.post(room, f"history {n}")
    return room, bob


async def sign_in(irc: Irc, port: int, password: str) -> None:
    irc.root(f"account add sipe alice@{DOMAIN} {password}")
    irc.root(f"account sipe set server 127.0.0.1:{port}")
    irc.root("account sipe set transport tcp")
    irc.root("account sipe on")


def sent(trace: list[SipTrace], start: str) -> list[SipTrace]:
    return [m for m in trace if m.sent and m.first_line.startswith(start)]


def _first(messages: list[SipTrace]) -> str:
    return messages[0].text if messages else ""


def received(trace: list[SipTrace], start: str) -> list[SipTrace]:
    return [m for m in trace if not m.sent and m.first_line.startswith(start)]


async def test_sipe_signs_in_lists_joins_reads_history_and_posts(
    cluster: Cluster, bitlbee: Bitlbee
) -> None:
    room, bob = await lobby_with_history(cluster)
    bitlbee.start()
    irc = await Irc.connect(bitlbee, "tester")
    try:
        # 1. sign-in with the password: REGISTER, 407, REGISTER with Proxy-Authorization, 200
        await sign_in(irc, cluster.sip, PASSWORD)
        await irc.expect(r"sipe - Logging in: Logged in", "SIPE sign-in")
        trace = bitlbee.sip()
        registers = sent(trace, "REGISTER ")
        assert len(registers) >= 2, irc.traces()
        assert "Proxy-Authorization: Digest" in registers[1].text, registers[1].text
        assert received(trace, "SIP/2.0 407 "), irc.traces()
        assert re.search(r"\nCSeq: \d+ REGISTER\n", _first(received(trace, "SIP/2.0 200 ")))

        # 2. the room list, once SIPE's group chat session is up (the second dialog's getinv)
        await irc.expect_sipe(r"chatserver_response: 'rpl:getinv' result \(200\)", "getinv")
        irc.root("chat list sipe")
        index = await irc.expect(r"PRIVMSG &bitlbee :\s+(\d+)\s+Lobby\b", "Lobby in `chat list`")
        await irc.expect(r"PRIVMSG &bitlbee :1 sipe chatrooms", "the end of the room list")

        # 3. join
        irc.root(f"chat add sipe !{index.group(1)} #lobby")
        await irc.expect(r"Chatroom successfully added", "`chat add`")
        irc.send("JOIN #lobby")
        await irc.expect(r"^:sipalice!\S+ JOIN :#lobby", "SIPE joining the room")

        # 4. the last 25 posts shown, in order, nothing older
        mark = irc.mark()
        await irc.expect(rf"PRIVMSG #lobby :.*history {HISTORY_POSTS}$", "the newest history post")
        shown = [
            int(m.group(1))
            for line in irc.seen_since(mark)
            if (m := re.search(r"PRIVMSG #lobby :.*history (\d+)$", line))
        ]
        oldest = HISTORY_POSTS - 25 + 1
        assert shown == list(range(oldest, HISTORY_POSTS + 1)), (shown, irc.traces())
        assert sent(bitlbee.sip(), "INFO ") and any(
            '<last cnt="25"/>' in m.text for m in sent(bitlbee.sip(), "INFO ")
        )

        # 5. a live post from a member on another client
        await bob.post(room, "live from bob")
        await irc.expect(r"^:sipbob!\S+ PRIVMSG #lobby :live from bob$", "bob's live post")

        # 6. SIPE's post received by that member
        irc.send("PRIVMSG #lobby :hello from sipe")
        post = await bob.next_post(timeout=20)
        assert (post.text, post.author.lower()) == ("hello from sipe", f"sip:alice@{DOMAIN}")

        # 7. a wrong password: reported to the user, and SIPE stops (no hang, no retry loop)
        irc.root("account sipe off")
        await irc.expect(r"sipe - Signing off", "SIPE signing off")
        irc.root("account sipe set password wrong-password")
        irc.root("account sipe on")
        error = await irc.expect(r"sipe - Login error: (.+)$", "the wrong-password error")
        refusal = re.search(
            r'\nWarning: \d+ \S+ "([^"]+)"', _first(received(bitlbee.sip(), "SIP/2.0 403 "))
        )
        assert refusal and refusal.group(1) in error.group(1), (error.group(0), irc.traces())
        await irc.expect(r"sipe - Logging in: Signing off", "SIPE giving up after the refusal")
        irc.root("account list")
        await irc.expect(r"PRIVMSG &bitlbee :End of account list", "bitlbee still answering")
    finally:
        await irc.close()
        bitlbee.stop()
        await bob.close()
