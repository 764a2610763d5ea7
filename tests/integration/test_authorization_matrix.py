"""The authorization matrix of the room model, walked over real SIP (issue 3).

privacy x type x {member, manager, presenter, allowed non-member, denied, other domain}
x {search, join, read history, post, follow, see in associations, receive posts,
receive notices}.

The expected cells are written out below by hand, from the issue's rules, and never
computed with ``core.rooms.rules``: a bug there must show up here as a failing cell.
One server serves the whole matrix; every cell that disagrees is collected, and the test
fails once with a table of all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from client.client import ChatMessage, PchatClient
from core.sip.digest import user_ha1s
from core.store.base import CategoryRecord, NewMessage, RoomRecord, UserRecord
from core.xccos.envelope import Notice
from shards.worker.runner import RunningWorker
from tests.conftest import DOMAIN, PASSWORD

FOREIGN_DOMAIN = "other.org"
WORD = "matrix"  # every room's name holds it; nothing else on the server does

PRIVACIES = ("open", "closed", "secret")
TYPES = ("normal", "auditorium")
ROOMS = [(p, t) for p in PRIVACIES for t in TYPES]

# member/manager/presenter hold that role in every room; outsider is allowed by the
# category but holds no role; denied is in example.com but on the category's denied list;
# foreigner is in another domain, which the category does not allow. denied and foreigner
# are also written on every room's member list, straight into the store (as a list made
# before the category changed would be): the ethical wall must keep them out all the same.
# Likewise every user follows every room in the store before signing in (follows left from
# before the rules changed): only rooms the user may read may show in its follower list,
# and a room it may not read must never send it ntc:newcontent.
USERS = ("member", "manager", "presenter", "outsider", "denied", "foreigner")
ASSOCIATIONS = ("member", "manager", "presenter", "follower")  # getassociations types

# -- the expected matrix, by hand ---------------------------------------------------------

ALLOWED = frozenset({"member", "manager", "presenter", "outsider"})  # by the category
ROLE_HOLDERS = frozenset({"member", "manager", "presenter"})  # count as members
PRESENTERS = frozenset({"presenter"})

# (privacy, type): (who may see it, who may read it, who may post in it)
EXPECTED: dict[tuple[str, str], tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    ("open", "normal"): (ALLOWED, ALLOWED, ALLOWED),
    ("open", "auditorium"): (ALLOWED, ALLOWED, PRESENTERS),
    ("closed", "normal"): (ALLOWED, ROLE_HOLDERS, ROLE_HOLDERS),
    ("closed", "auditorium"): (ALLOWED, ROLE_HOLDERS, PRESENTERS),
    ("secret", "normal"): (ROLE_HOLDERS, ROLE_HOLDERS, ROLE_HOLDERS),
    ("secret", "auditorium"): (ROLE_HOLDERS, ROLE_HOLDERS, PRESENTERS),
}


def sees(room: tuple[str, str], user: str) -> bool:
    return user in EXPECTED[room][0]


def reads(room: tuple[str, str], user: str) -> bool:
    return user in EXPECTED[room][1]


def posts(room: tuple[str, str], user: str) -> bool:
    return user in EXPECTED[room][2]


def access_code(room: tuple[str, str], user: str) -> int:
    """join and bccontext: 200 may read, 403 may see but not read, 404 may not see."""
    return 200 if reads(room, user) else 403 if sees(room, user) else 404


ROLE_LISTED = {
    "member": frozenset({"member", "denied", "foreigner"}),
    "manager": frozenset({"manager"}),
    "presenter": frozenset({"presenter"}),
}


def listed(room: tuple[str, str], user: str, kind: str) -> bool:
    """cmd:getassociations: rooms where the user holds the role and may see the room;
    followed rooms (every room, here) the user may read."""
    if kind == "follower":
        return reads(room, user)
    return user in ROLE_LISTED[kind] and sees(room, user)


# -- names ---------------------------------------------------------------------------------


def user_uri(user: str) -> str:
    return f"sip:{user}@{FOREIGN_DOMAIN if user == 'foreigner' else DOMAIN}"


def room_id(room: tuple[str, str]) -> str:
    return f"mx-{room[0]}-{room[1]}"


def room_uri(room: tuple[str, str]) -> str:
    return f"ma-chan://{DOMAIN}/{room_id(room)}"


def label(room: tuple[str, str]) -> str:
    return f"{room[0]}/{room[1]}"


URI_TO_ROOM = {room_uri(r): r for r in ROOMS}
URI_TO_USER = {user_uri(u): u for u in USERS}


def short(uri: str) -> str:
    """A matrix user's name for its URI (others stay as they are, so they stand out)."""
    return URI_TO_USER.get(uri, uri)


def listing(events: Counter[str]) -> list[str]:
    """Notices as a sorted list, e.g. ['join outsider', 'part member']."""
    return sorted(events.elements())


async def set_up(server: RunningWorker) -> None:
    store = server.store
    for user in USERS:
        uri = user_uri(user)
        await store.put_user(
            UserRecord(
                uri=uri,
                display_name=user.title(),
                ha1=user_ha1s(uri, DOMAIN, PASSWORD),
                enabled=True,
            )
        )
    await store.put_category(
        CategoryRecord(
            id="walled",
            name="Walled",
            allowed=[f"domain:{DOMAIN}"],
            denied=[user_uri("denied")],
        )
    )
    now_ms = int(time.time() * 1000)
    for room in ROOMS:
        privacy, kind = room
        await store.put_room(
            RoomRecord(
                id=room_id(room),
                name=f"Matrix {privacy} {kind}",
                category_id="walled",
                privacy=privacy,  # type: ignore[arg-type]
                type=kind,  # type: ignore[arg-type]
                members=[user_uri(u) for u in sorted(ROLE_LISTED["member"])],
                managers=[user_uri(u) for u in sorted(ROLE_LISTED["manager"])],
                presenters=[user_uri(u) for u in sorted(ROLE_LISTED["presenter"])],
            )
        )
        # One stored post, so reading history shows content, not just a code.
        await store.append_messages(
            [
                NewMessage(
                    room_id=room_id(room),
                    seq=1,
                    author=user_uri("manager"),
                    ts_ms=now_ms,
                    text=f"seed of {label(room)}",
                )
            ]
        )
    for user in USERS:
        for room in ROOMS:
            await store.follow(user_uri(user), room_id(room))
    await store.bump_revision()
    await server.refresh()


async def sign_in(server: RunningWorker, user: str) -> PchatClient:
    """Provisioning and the session, without the sign-in's bjoin of followed rooms: the
    matrix joins each room itself, in a known order."""
    address = user_uri(user).removeprefix("sip:")
    client = await PchatClient.connect(
        "127.0.0.1", server.sip_port, address, PASSWORD, domain=DOMAIN
    )
    assert await client.provision(), f"{user} is not enabled"
    await client.invite()
    return client


def notice_event(notice: Notice) -> tuple[str, str]:
    """(room uri, e.g. 'join sip:x@y') of ntc:join, ntc:part, ntc:newcontent; ('?', what)
    for a notice naming no room."""
    data = notice.data
    if notice.name == "ntc:join" and data is not None:
        uib = data.find("uib")
        aib = uib.find("aib") if uib is not None else None
        if uib is not None and aib is not None:
            room = f"ma-chan://{aib.get('domain')}/{aib.get('value')}"
            return room, f"join {short(uib.get('uri'))}"
    if notice.name == "ntc:part" and data is not None:
        chan = data.find("chanib")
        uib = chan.find("uib") if chan is not None else None
        if chan is not None and uib is not None:
            return chan.get("uri"), f"part {short(uib.get('uri'))}"
    if notice.name == "ntc:newcontent" and data is not None:
        chan = data.find("chanib")
        if chan is not None:
            return chan.get("uri"), f"newcontent unread={chan.get('unread')}"
    return "?", f"{notice.name} {data!r}"


async def wait_for_inboxes(
    clients: dict[str, PchatClient], posts: dict[str, int], notices: dict[str, int]
) -> None:
    """Until every inbox holds what it should (or 5 s), then a moment for any stragglers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while loop.time() < deadline:
        if all(
            len(clients[u].posts.items) >= posts[u] and len(clients[u].notices.items) >= notices[u]
            for u in USERS
        ):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)


async def test_authorization_matrix(server: RunningWorker) -> None:
    await set_up(server)
    clients = {user: await sign_in(server, user) for user in USERS}
    mismatches: list[tuple[str, str, str, object, object]] = []
    cells = 0

    def check(room: tuple[str, str], user: str, action: str, want: object, got: object) -> None:
        nonlocal cells
        cells += 1
        if want != got:
            mismatches.append((label(room), user, action, want, got))

    try:
        # search: who finds each room
        found: dict[str, set[str]] = {}
        for user in USERS:
            hits = await clients[user].search(WORD)
            found[user] = {h["uri"] for h in hits}
            strangers = found[user] - set(URI_TO_ROOM)
            if strangers:
                mismatches.append(("-", user, "search", "only matrix rooms", sorted(strangers)))

        # associations: the rooms where the user holds each role and may see; followed
        assoc: dict[tuple[str, str], set[str]] = {}
        for user in USERS:
            for kind in ASSOCIATIONS:
                reply = await clients[user].command(
                    "cmd:getassociations", f'<assoc type="{kind}"/>', check=False
                )
                chans = reply.data.findall("chanib") if reply.data is not None else []
                uris = {c.get("uri") for c in chans}
                assoc[user, kind] = uris if reply.code == 200 else {f"code {reply.code}"}

        # follow: the same permission as join (already followed in the store: no change)
        followed: dict[tuple[tuple[str, str], str], int] = {}
        for user in USERS:
            for room in ROOMS:
                reply = await clients[user].command(
                    "cmd:follow", f'<chanib uri="{room_uri(room)}"/>', check=False
                )
                followed[room, user] = reply.code

        # read history (before joining: bccontext needs read permission, not a join)
        history: dict[tuple[tuple[str, str], str], tuple[int, list[str]]] = {}
        for user in USERS:
            for room in ROOMS:
                reply = await clients[user].command(
                    "cmd:bccontext",
                    f'<chanib uri="{room_uri(room)}"/><bcq><last cnt="25"/></bcq>',
                    check=False,
                )
                chan = reply.data.find("chanib") if reply.data is not None else None
                texts = (
                    [m.findtext("chat") for m in chan.findall("msg")] if chan is not None else []
                )
                history[room, user] = (reply.code, texts)

        # join: in USERS order for every room, so the notices each session must get are known
        joined: dict[tuple[tuple[str, str], str], int] = {}
        for user in USERS:
            for room in ROOMS:
                reply = await clients[user].command(
                    "cmd:join", f'<chanib uri="{room_uri(room)}"/>', check=False
                )
                joined[room, user] = reply.code

        # post: everyone tries every room; the presenter may post in all six, so every
        # joined session has at least one post to receive
        posted: dict[tuple[tuple[str, str], str], int] = {}
        for room in ROOMS:
            for user in USERS:
                reply = await clients[user].post_envelope(
                    room_uri(room), f"post of {user} in {label(room)}"
                )
                posted[room, user] = reply.code

        # part: in USERS order, every room a session joined
        for user in USERS:
            for room in ROOMS:
                if joined[room, user] == 200:
                    await clients[user].part(room_uri(room))

        # what each session must receive, from the expected matrix alone: posts and
        # join/part notices of the rooms it joined; no ntc:newcontent at all (it is only for
        # followed rooms the session has not joined, and every reader had joined)
        want_posts: dict[tuple[tuple[str, str], str], set[tuple[str, str]]] = {}
        want_notices: dict[tuple[tuple[str, str], str], Counter[str]] = {}
        for room in ROOMS:
            readers = [u for u in USERS if reads(room, u)]
            for user in USERS:
                if user not in readers:
                    want_posts[room, user] = set()
                    want_notices[room, user] = Counter()
                    continue
                me = readers.index(user)
                want_posts[room, user] = {
                    (a, f"post of {a} in {label(room)}")
                    for a in USERS
                    if a != user and posts(room, a)
                }
                want_notices[room, user] = Counter(
                    [f"join {v}" for v in readers[me + 1 :]] + [f"part {v}" for v in readers[:me]]
                )
        await wait_for_inboxes(
            clients,
            {u: sum(len(want_posts[r, u]) for r in ROOMS) for u in USERS},
            {u: sum(sum(want_notices[r, u].values()) for r in ROOMS) for u in USERS},
        )
        got_posts: dict[tuple[tuple[str, str], str], set[tuple[str, str]]] = {
            (r, u): set() for r in ROOMS for u in USERS
        }
        got_notices: dict[tuple[tuple[str, str], str], Counter[str]] = {
            (r, u): Counter() for r in ROOMS for u in USERS
        }
        for user in USERS:
            client = clients[user]
            while client.posts.items:
                post = client.posts.items.popleft()
                assert isinstance(post, ChatMessage)
                room = URI_TO_ROOM.get(post.room)
                if room is None:
                    mismatches.append(("?", user, "receive posts", "nothing", repr(post)))
                else:
                    got_posts[room, user].add((short(post.author), post.text))
            while client.notices.items:
                notice = client.notices.items.popleft()
                assert isinstance(notice, Notice)
                uri, what = notice_event(notice)
                room = URI_TO_ROOM.get(uri)
                if room is None:
                    mismatches.append(("?", user, "receive notices", "nothing", what))
                else:
                    got_notices[room, user][what] += 1

        stored = {
            room: [m.text for m in await server.store.history_last(room_id(room), 100)]
            for room in ROOMS
        }

        # every cell
        for room in ROOMS:
            for user in USERS:
                code = access_code(room, user)
                check(room, user, "search", sees(room, user), room_uri(room) in found[user])
                check(room, user, "join", code, joined[room, user])
                want_history = [f"seed of {label(room)}"] if code == 200 else []
                check(room, user, "read history", (code, want_history), history[room, user])
                text = f"post of {user} in {label(room)}"
                if reads(room, user):
                    want_post: object = (200 if posts(room, user) else 403, posts(room, user))
                    got_post: object = (posted[room, user], text in stored[room])
                else:  # never joined: refused (either code) and nothing stored
                    want_post = ("403 or 404", False)
                    got_post = (
                        "403 or 404" if posted[room, user] in (403, 404) else posted[room, user],
                        text in stored[room],
                    )
                check(room, user, "post", want_post, got_post)
                check(room, user, "follow", code, followed[room, user])
                check(
                    room,
                    user,
                    "see in associations",
                    sorted(kind for kind in ASSOCIATIONS if listed(room, user, kind)),
                    sorted(kind for kind in ASSOCIATIONS if room_uri(room) in assoc[user, kind]),
                )
                check(
                    room,
                    user,
                    "receive posts",
                    sorted(f"{a}: {t}" for a, t in want_posts[room, user]),
                    sorted(f"{a}: {t}" for a, t in got_posts[room, user]),
                )
                check(
                    room,
                    user,
                    "receive notices",
                    listing(want_notices[room, user]),
                    listing(got_notices[room, user]),
                )
    finally:
        for client in clients.values():
            await client.close()

    table = "\n".join(
        f"  {room:<18} {user:<10} {action:<20} expected {want!r}, got {got!r}"
        for room, user, action, want, got in mismatches
    )
    assert not mismatches, f"{len(mismatches)} of {cells} cells wrong:\n{table}"
    assert cells == len(ROOMS) * len(USERS) * 8 == 288
