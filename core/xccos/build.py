"""Protocol layer: outgoing XCCOS XML from escaped f-strings (MEASUREMENTS: 1.3 µs vs 10+ µs)."""

from __future__ import annotations

import re

from core.xccos.ids import parse_room_uri

NS = "urn:parlano:xml:ns:xccos"

RESULT_TEXT: dict[int, str] = {
    200: "SUCCESS_OK",
    400: "BAD_REQUEST",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    413: "TOO_LARGE",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "SERVICE_UNAVAILABLE",
}

INFO_UCNT = "urn:parlano:ma:info:ucnt"
INFO_VISIBILITY = "urn:parlano:ma:info:visibilty"  # (sic): the real protocol's spelling
PROP_FILEPOST = "urn:parlano:ma:prop:filepost"
PROP_INVITE = "urn:parlano:ma:prop:invite"
PROP_LOGGED = "urn:parlano:ma:prop:logged"
PROP_TYPE = "urn:pchat:prop:type"

# Characters XML 1.0 cannot carry at all, not even as character references.
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def esc(value: str) -> str:
    """Escape for an attribute value (or text); drops characters XML 1.0 forbids.

    Tab, LF and CR become character references, because a parser normalises
    them to spaces in attribute values and CR to LF in text.
    """
    # isprintable() is False for every control, surrogate and non-character,
    # so the common printable string skips the regex (~300 ns on 120 chars).
    printable = value.isprintable()
    if not printable:
        value = _INVALID.sub("", value)
    value = (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )
    if not printable:
        value = value.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")
    return value


def esc_text(value: str) -> str:
    """Escape for element content: like esc, but quotes, tab and LF stay literal."""
    printable = value.isprintable()
    if not printable:
        value = _INVALID.sub("", value)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if not printable:
        value = value.replace("\r", "&#13;")
    return value


def _num(value: int | str) -> str:
    return str(value) if isinstance(value, int) else esc(value)


def envelope(envid: int | str, inner: str) -> bytes:
    """One XCCOS envelope around already-built children, as UTF-8."""
    return f'<xccos ver="1" envid="{_num(envid)}" xmlns="{NS}">{inner}</xccos>'.encode()


def _data(data: str) -> str:
    return f"<data>{data}</data>" if data else "<data/>"


def cmd(name: str, seqid: int | str, data: str = "") -> str:
    """A client command; `name` in full, e.g. `cmd:join`."""
    return f'<cmd id="{esc(name)}" seqid="{_num(seqid)}">{_data(data)}</cmd>'


def rpl(
    name: str,
    seqid: int | str,
    cmd_seqid: str,
    cmd_envid: str,
    code: int = 200,
    data: str = "",
) -> str:
    """A server reply; `commandid` echoes the command's seqid and envelope envid."""
    return (
        f'<rpl id="{esc(name)}" seqid="{_num(seqid)}">'
        f'<commandid seqid="{esc(cmd_seqid)}" envid="{esc(cmd_envid)}"/>'
        f'<resp code="{int(code)}">{RESULT_TEXT.get(code, "ERROR")}</resp>'
        f"{_data(data)}</rpl>"
    )


def ntc(name: str, data: str = "") -> str:
    """A server notice; its payload sits in `<data>` like a reply's."""
    return f'<ntc id="{esc(name)}">{_data(data)}</ntc>'


def grpchat(
    chan_uri: str, author: str, ts: str, msgid: int | str, text: str, seqid: int | str = 1
) -> str:
    """A post as delivered to the other sessions of a room."""
    return (
        f'<grpchat id="grpchat" seqid="{_num(seqid)}" chanUri="{esc(chan_uri)}"'
        f' author="{esc(author)}" ts="{esc(ts)}" msgid="{_num(msgid)}">'
        f"<chat>{esc_text(text)}</chat></grpchat>"
    )


def post(chan_uri: str, author: str, text: str, *, seqid: int | str = 1, ts: str = "") -> str:
    """A client's post: no msgid, and `ts` only when given (the server stamps its own)."""
    ts_attr = f' ts="{esc(ts)}"' if ts else ""
    return (
        f'<grpchat id="grpchat" seqid="{_num(seqid)}" chanUri="{esc(chan_uri)}"'
        f' author="{esc(author)}"{ts_attr}><chat>{esc_text(text)}</chat></grpchat>'
    )


def msg(chan_uri: str, author: str, ts: str, msgid: int | str, text: str) -> str:
    """A history item inside a `rpl:bccontext` chanib."""
    return (
        f'<msg id="grpchat" chanUri="{esc(chan_uri)}" author="{esc(author)}"'
        f' ts="{esc(ts)}" msgid="{_num(msgid)}"><chat>{esc_text(text)}</chat></msg>'
    )


def uib(uri: str, *, id: int | str | None = None, name: str = "", inner: str = "") -> str:
    """A user block, `<uib id uri name/>`; `id` is what `aib` value lists refer to."""
    # `id` shadows the builtin on purpose: it is the wire attribute's name.
    id_attr = "" if id is None else f' id="{_num(id)}"'
    name_attr = f' name="{esc(name)}"' if name else ""
    head = f'<uib{id_attr} uri="{esc(uri)}"{name_attr}'
    return f"{head}>{inner}</uib>" if inner else f"{head}/>"


def aib(key: str, value: str, *, domain: str = "") -> str:
    """A role list (`key` 3984 participants, 12276 managers) or a join notice's room."""
    domain_attr = f' domain="{esc(domain)}"' if domain else ""
    return f'<aib key="{esc(key)}"{domain_attr} value="{esc(value)}"/>'


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def chanib(
    uri: str,
    *,
    name: str | None = None,
    description: str | None = None,
    topic: str | None = None,
    category: str | None = None,
    ucnt: int | None = None,
    visibility: str | None = None,
    filepost: bool | None = None,
    invite: bool | None = None,
    logged: bool | None = None,
    room_type: str | None = None,
    inner: str = "",
    extra_attrs: dict[str, str] | None = None,
) -> str:
    """A room block: attributes and info/prop children only for the fields given."""
    head = [f'<chanib uri="{esc(uri)}"']
    for attr, val in (
        ("name", name),
        ("description", description),
        ("topic", topic),
        ("category", category),
    ):
        if val is not None:
            head.append(f' {attr}="{esc(val)}"')
    # extra_attrs names come from our own code (lastmsgid, unread), never from input.
    if extra_attrs:
        head.extend(f' {attr}="{esc(val)}"' for attr, val in extra_attrs.items())
    body: list[str] = []
    if ucnt is not None:
        body.append(f'<info id="{INFO_UCNT}">{int(ucnt)}</info>')
    if visibility is not None:
        body.append(f'<info id="{INFO_VISIBILITY}">{esc_text(visibility)}</info>')
    for prop_id, flag in ((PROP_FILEPOST, filepost), (PROP_INVITE, invite), (PROP_LOGGED, logged)):
        if flag is not None:
            body.append(f'<prop id="{prop_id}">{_bool(flag)}</prop>')
    if room_type is not None:
        body.append(f'<prop id="{PROP_TYPE}">{esc_text(room_type)}</prop>')
    if inner:
        body.append(inner)
    if not body:
        return "".join(head) + "/>"
    return f"{''.join(head)}>{''.join(body)}</chanib>"


def chanid(uri: str) -> str:
    """`<chanid key="0" domain value/>` naming a room by its parts; BadRequest on a bad URI."""
    domain, room_id = parse_room_uri(uri)
    return f'<chanid key="0" domain="{esc(domain)}" value="{esc(room_id)}"/>'


def chanerr(uri: str, code: int, reason: str) -> str:
    """(pchat) One room a batch command refused, with its result code and a reason."""
    return f'<chanerr uri="{esc(uri)}" code="{int(code)}">{esc_text(reason)}</chanerr>'
