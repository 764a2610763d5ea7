"""Protocol layer: the browser's JSON requests as XCCOS items, and XCCOS replies and
notices as the browser's JSON messages.

A browser session is an XCCOS session: its requests run through the same command
handler, its events come from the same delivery path, as the same envelope bytes a SIP
client receives. This module is the only difference, at the edge, in both directions.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from core.browser import messages as m
from core.errors import BadRequest, PchatError
from core.xccos.build import (
    INFO_UCNT,
    INFO_VISIBILITY,
    PROP_FILEPOST,
    PROP_INVITE,
    PROP_LOGGED,
    PROP_TYPE,
)
from core.xccos.envelope import (
    Command,
    Envelope,
    Item,
    Notice,
    Post,
    Reply,
    decode_envelope,
    decode_post,
    decode_post_fast,
)
from core.xccos.ids import parse_room_uri
from core.xccos.xml import Element

_VISIBILITY = {"public": "open", "private": "closed", "secret": "secret"}


def _el(tag: str, attrs: dict[str, str] | None = None, *children: Element) -> Element:
    return Element(tag, attrs or {}, list(children))


def _data(*children: Element) -> Element:
    return _el("data", None, *children)


def _chanib(uri: str) -> Element:
    return _el("chanib", {"uri": uri})


def _history_query(req: m.History | m.SearchHistory) -> Element:
    cnt = str(req.count)
    if isinstance(req, m.SearchHistory):
        return _el("search", {"text": req.text, "cnt": cnt})
    if req.after is not None:
        return _el("after", {"msgid": str(req.after), "cnt": cnt})
    if req.before:
        return _el("before", {"msgid": str(req.before), "cnt": cnt})
    return _el("last", {"cnt": cnt})


def to_item(req: m.ClientMessage) -> Item:
    """The XCCOS item a request stands for; its seqid is the request id, so the reply's
    commandid names the request again (a post's rpl:grpchat echoes its seqid too)."""
    seqid = str(req.id)
    if isinstance(req, m.PostMessage):
        return Post(req.room, "", "", "", seqid, req.text)
    data: Element | None
    if isinstance(req, m.ListRooms):
        name, data = "cmd:getassociations", _data(_el("assoc", {"type": req.kind}))
    elif isinstance(req, m.SearchRooms):
        qib = _el("qib", {"qtype": "BYNAME", "criteria": req.text, "extended": "false"})
        name, data = "cmd:chansrch", _data(qib)
    elif isinstance(req, m.History | m.SearchHistory):
        bcq = _el("bcq", None, _history_query(req))
        name, data = "cmd:bccontext", _data(_chanib(req.room), bcq)
    elif isinstance(req, m.Join | m.Part | m.Follow | m.Unfollow):
        name, data = f"cmd:{_ROOM_COMMANDS[type(req)]}", _data(_chanib(req.room))
    elif isinstance(req, m.Invitations):
        name, data = "cmd:getinv", _data(_el("inv", {"inviteId": "1"}))
    elif isinstance(req, m.ServerInfoRequest):
        name, data = "cmd:getserverinfo", _data(_el("sib", {"infoType": "123"}))
    else:
        raise BadRequest(f"{type(req).__name__} is not an XCCOS request")
    return Command(name, seqid, data)


_ROOM_COMMANDS: dict[type, str] = {
    m.Join: "join",
    m.Part: "part",
    m.Follow: "follow",
    m.Unfollow: "unfollow",
}


def to_envelope(req: m.ClientMessage) -> Envelope:
    """One request, one envelope: a post's envid is its key (the retry key); a command's
    is its request id."""
    envid = req.key if isinstance(req, m.PostMessage) else f"w{req.id}"
    return Envelope(envid, [to_item(req)])


# ---- XCCOS to JSON ----------------------------------------------------------------------


def room_of(el: Element) -> m.Room:
    """A `chanib` as the browser's Room."""
    uri = el.get("uri")
    try:
        room_id = parse_room_uri(uri)[1]
    except BadRequest:
        room_id = ""
    info = {c.get("id"): c.text.strip() for c in el.children if c.tag in ("info", "prop")}
    ucnt = info.get(INFO_UCNT, "")
    return m.Room(
        uri=uri,
        id=room_id,
        name=el.get("name"),
        description=el.get("description"),
        topic=el.get("topic"),
        visibility=_VISIBILITY.get(info.get(INFO_VISIBILITY, ""), ""),
        online=int(ucnt) if ucnt.isdigit() else None,
        files=info.get(PROP_FILEPOST) == "true",
        invite=info.get(PROP_INVITE) == "true",
        logged=info.get(PROP_LOGGED, "true") == "true",
        type=info.get(PROP_TYPE, "normal"),
    )


def _message(post: Post) -> m.Message:
    return m.Message(
        room=post.chan_uri,
        msgid=int(post.msgid) if post.msgid.isdigit() else 0,
        author=post.author,
        ts=post.ts,
        text=post.text,
    )


def _invitation(el: Element) -> m.Invitation:
    return m.Invitation(
        id=el.get("inviteId"),
        room=el.get("chanUri"),
        name=el.get("name"),
        inviter=el.get("inviter"),
        ts=el.get("ts"),
    )


def _children(data: Element | None, tag: str) -> list[Element]:
    return [] if data is None else data.findall(tag)


def _joined(rid: int, data: Element | None) -> m.Joined:
    users = {u.get("id"): u.get("uri") for u in _children(data, "uib")}
    [chan] = _children(data, "chanib") or [_chanib("")]
    roles = {a.get("key"): a.get("value") for a in chan.findall("aib")}

    def listed(key: str) -> list[str]:
        return [users[i] for i in roles.get(key, "").split(",") if i in users]

    return m.Joined(
        id=rid, room=room_of(chan), participants=listed("3984"), managers=listed("12276")
    )


def _history(rid: int, data: Element | None) -> m.HistoryPage:
    [chan] = _children(data, "chanib") or [_chanib("")]
    posts = [_message(decode_post(el)) for el in chan.findall("msg")]
    return m.HistoryPage(
        id=rid, room=chan.get("uri"), messages=posts, more=chan.get("more") == "true"
    )


def _room_done(rid: int, data: Element | None) -> m.Done:
    chans = _children(data, "chanib")
    return m.Done(id=rid, room=chans[0].get("uri") if chans else "")


def _posted(rid: int, data: Element | None) -> m.Posted:
    [post] = _children(data, "grpchat") or [_el("grpchat")]
    msgid = post.get("msgid")
    return m.Posted(
        id=rid,
        room=post.get("chanUri"),
        msgid=int(msgid) if msgid.isdigit() else 0,
        ts=post.get("ts"),
    )


def _server_info(rid: int, data: Element | None) -> m.Info:
    [sib] = _children(data, "sib") or [_el("sib")]
    limit, search = sib.get("messageSizeLimit", "0"), sib.get("searchLimit", "0")
    return m.Info(
        id=rid,
        message_size_limit=int(limit) if limit.isdigit() else 0,
        search_limit=int(search) if search.isdigit() else 0,
        server_time=sib.get("serverTime"),
    )


_REPLIES: dict[str, Callable[[int, Element | None], m.ServerMessage]] = {
    "rpl:getassociations": lambda i, d: m.Rooms(
        id=i, rooms=[room_of(c) for c in _children(d, "chanib")]
    ),
    "rpl:chansrch": lambda i, d: m.Rooms(id=i, rooms=[room_of(c) for c in _children(d, "chanib")]),
    "rpl:join": _joined,
    "rpl:part": _room_done,
    "rpl:follow": _room_done,
    "rpl:unfollow": _room_done,
    "rpl:bccontext": _history,
    "rpl:grpchat": _posted,
    "rpl:getinv": lambda i, d: m.InvitationList(
        id=i, invitations=[_invitation(e) for e in _children(d, "inv")]
    ),
    "rpl:getservinfo": _server_info,
}


def _reply(reply: Reply) -> m.ServerMessage:
    rid = int(reply.command_seqid) if reply.command_seqid.isdigit() else 0
    if reply.code != 200:
        detail = reply.data.text.strip() if reply.data is not None else ""
        return m.Error(id=rid, code=reply.code, reason=detail or reply.text)
    build = _REPLIES.get(reply.name)
    if build is None:
        return m.Error(id=rid, code=501, reason=f"{reply.name} has no browser form")
    return build(rid, reply.data)


def _notice(notice: Notice) -> m.ServerMessage | None:
    data = notice.data
    if notice.name == "ntc:join":
        [uib] = _children(data, "uib") or [_el("uib")]
        aib = uib.find("aib") or _el("aib")
        room = f"ma-chan://{aib.get('domain')}/{aib.get('value')}"
        return m.Presence(room=room, user=uib.get("uri"), online=True)
    if notice.name == "ntc:part":
        [chan] = _children(data, "chanib") or [_chanib("")]
        user = (chan.find("uib") or _el("uib")).get("uri")
        return m.Presence(room=chan.get("uri"), user=user, online=False)
    if notice.name == "ntc:newcontent":
        [chan] = _children(data, "chanib") or [_chanib("")]
        last, unread = chan.get("lastmsgid", "0"), chan.get("unread", "0")
        return m.NewContent(
            room=chan.get("uri"),
            last_msgid=int(last) if last.isdigit() else 0,
            unread=int(unread) if unread.isdigit() else 0,
        )
    if notice.name == "ntc:inv":
        invs = _children(data, "inv")
        return m.InvitationNotice(invitation=_invitation(invs[0])) if invs else None
    return None  # a notice the browser has no use for


def from_envelope(body: bytes, *, max_bytes: int) -> list[m.ServerMessage]:
    """What one server envelope (as a SIP client would get it) says to a browser. A live
    post takes the fast path; everything else the hardened parser."""
    fast = decode_post_fast(body)
    if fast is not None:
        return [m.Live(message=_message(fast[1]))]
    envelope = decode_envelope(body, max_bytes=max_bytes, max_items=10_000)
    out: list[m.ServerMessage] = []
    for item in envelope.items:
        if isinstance(item, Reply):
            out.append(_reply(item))
        elif isinstance(item, Notice):
            notice = _notice(item)
            if notice is not None:
                out.append(notice)
        elif isinstance(item, Post):
            out.append(m.Live(message=_message(item)))
    return out


class Encoder:
    """One per worker: JSON for each envelope the sessions are sent. The envelope of a
    room event is one bytes object shared by every recipient, so the last one's JSON is
    kept and a fan-out translates once, not once per browser (HS-10)."""

    __slots__ = ("_json", "_max_bytes", "_last")

    def __init__(self, max_bytes: int) -> None:
        self._json = msgspec.json.Encoder()
        self._max_bytes = max_bytes
        self._last: tuple[bytes, list[bytes]] | None = None

    def encode(self, body: bytes) -> list[bytes]:
        """The JSON of each browser message in ``body``; [] for what a browser ignores."""
        last = self._last
        if last is not None and last[0] is body:
            return last[1]
        try:
            msgs = from_envelope(body, max_bytes=self._max_bytes)
            out = [self._json.encode(msg) for msg in msgs]
        except (PchatError, ValueError) as exc:  # our own output: a bug, said once per body
            out = [self._json.encode(m.Error(id=0, code=500, reason=f"untranslatable: {exc}"))]
        self._last = (body, out)
        return out
