"""Protocol layer: decode incoming XCCOS envelopes into typed items (server and client)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import BadRequest, TooLarge
from core.xccos.build import NS
from core.xccos.xml import Element, parse_xml

MAX_ENVELOPE_BYTES = 65536  # the SIP body limit (XCCOS.md §1)
# Items (commands, posts) in one envelope: clients send one, pchat's own client up to a
# handful; each item is a command run with a loop turn of its own, so this bounds what
# one INFO can ask of a worker (a 41 KB envelope of 300 history reads froze one for 11 s).
MAX_ENVELOPE_ITEMS = 16


@dataclass(slots=True)
class Command:
    """A client request; `name` is the full id (`cmd:join`), `data` its `<data>` or None."""

    name: str
    seqid: str
    data: Element | None


@dataclass(slots=True)
class Reply:
    """A server reply; `command_seqid`/`command_envid` echo the command it answers."""

    name: str
    seqid: str
    command_seqid: str
    command_envid: str
    code: int
    text: str
    data: Element | None


@dataclass(slots=True)
class Notice:
    """A server notice (`ntc:join`); its payload is in `data`."""

    name: str
    data: Element | None


@dataclass(slots=True)
class Post:
    """A `<grpchat>` (or history `<msg>`); `msgid`/`ts` are "" when absent (a client's post)."""

    chan_uri: str
    author: str
    ts: str
    msgid: str
    seqid: str
    text: str


Item = Command | Reply | Notice | Post


@dataclass(slots=True)
class Envelope:
    """One `<xccos>` envelope: the sender's envid and its children in document order."""

    envid: str
    items: list[Item]


def _required(el: Element, name: str) -> str:
    value = el.attrs.get(name)
    if not value:
        raise BadRequest(f"<{el.tag}> without {name}")
    return value


def _name(el: Element, prefix: str) -> str:
    name = _required(el, "id")
    if not name.startswith(prefix):
        raise BadRequest(f"<{el.tag}> id {name[:40]!r} does not start with {prefix!r}")
    return name


def _check_post(chan_uri: str, seqid: str, need_seqid: bool) -> None:
    # Shared by both decoders so the fast path can never accept what this refuses.
    if not chan_uri:
        raise BadRequest("grpchat without chanUri")
    if need_seqid and not seqid:  # rpl:grpchat must echo it in commandid
        raise BadRequest("grpchat without seqid")


def _post(attrs: dict[str, str], text: str, *, need_seqid: bool = True) -> Post:
    chan_uri, seqid = attrs.get("chanUri", ""), attrs.get("seqid", "")
    _check_post(chan_uri, seqid, need_seqid)
    return Post(
        chan_uri, attrs.get("author", ""), attrs.get("ts", ""), attrs.get("msgid", ""), seqid, text
    )


def decode_post(el: Element) -> Post:
    """A Post from a `<grpchat>` or a history `<msg>` (seqid "" there); `<chat>` is plain text."""
    chat = el.find("chat")
    if chat is None:
        raise BadRequest(f"<{el.tag}> without chat")
    if chat.children:
        raise BadRequest("chat text must be plain text")
    return _post(el.attrs, chat.text, need_seqid=el.tag == "grpchat")


def _reply(el: Element) -> Reply:
    commandid = el.find("commandid")
    resp = el.find("resp")
    if commandid is None or resp is None:
        raise BadRequest("rpl without commandid or resp")
    code = _required(resp, "code")
    if not (code.isascii() and code.isdigit()) or len(code) > 3:  # "²".isdigit() too
        raise BadRequest(f"bad resp code {code[:10]!r}")
    return Reply(
        _name(el, "rpl:"),
        _required(el, "seqid"),
        _required(commandid, "seqid"),
        _required(commandid, "envid"),
        int(code),
        resp.text.strip(),
        el.find("data"),
    )


def _item(el: Element) -> Item:
    tag = el.tag
    if tag == "grpchat":
        return decode_post(el)
    if tag == "cmd":
        return Command(_name(el, "cmd:"), _required(el, "seqid"), el.find("data"))
    if tag == "rpl":
        return _reply(el)
    if tag == "ntc":
        return Notice(_name(el, "ntc:"), el.find("data"))
    raise BadRequest(f"unknown envelope item <{tag[:40]}>")


def decode_envelope(
    body: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES, max_items: int = MAX_ENVELOPE_ITEMS
) -> Envelope:
    """Decode one envelope; BadXml/BadRequest on bad input, TooLarge over `max_bytes` or
    over `max_items` children (refused as the parser reaches the first one too many)."""
    if len(body) > max_bytes:
        raise TooLarge(f"envelope larger than {max_bytes} bytes")
    if max_items >= 1:
        fast = decode_exchange_fast(body)
        if fast is not None:
            return fast
    return _decode_tree(body, max_bytes, max_items)


def _decode_tree(body: bytes, max_bytes: int, max_items: int) -> Envelope:
    root = parse_xml(body, max_bytes=max_bytes, max_root_children=max_items)
    if root.tag != "xccos":
        raise BadRequest(f"root element is <{root.tag[:40]}>, not <xccos>")
    envid = _required(root, "envid")
    if root.text and not root.text.isspace():
        raise BadRequest("text directly inside <xccos>")
    return Envelope(envid, [_item(child) for child in root.children])


# ---- fast path for the one envelope that dominates traffic: a client's post ----
#
# Two regexes over the decoded text: the exact shape sipe and build.post()
# emit (~2 µs for 400 bytes, vs ~10 µs through expat), then the same shape
# with attributes in any order, quoting and whitespace (~8 µs). Each character
# class leaves out what expat would refuse, so a match is well-formed XML.

# Characters expat refuses anywhere, raw (surrogates cannot survive the strict
# UTF-8 decode, so they need no entry).
_BAD = "\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff"
_TEXT = f"([^<{_BAD}]*+)"
# Raw tab/CR/LF in attribute values are normalised to spaces by a parser:
# rare enough to leave to the slow path.
_VAL = f'[^"<&\t\n\r{_BAD}]*+'
_CANONICAL = re.compile(
    f'<xccos ver="1" envid="({_VAL})" xmlns="{NS}"><grpchat id="grpchat" seqid="({_VAL})"'
    f' chanUri="({_VAL})" author="({_VAL})"(?: ts="({_VAL})")?(?: msgid="({_VAL})")?>'
    f"<chat>{_TEXT}</chat></grpchat></xccos>"
)
_WS = "[ \t\r\n]*+"
# Only un-prefixed attribute names: anything namespaced goes the slow way.
_ATTRS = (
    "((?:[ \t\r\n]++[A-Za-z_][A-Za-z0-9_.-]*+[ \t\r\n]*+=[ \t\r\n]*+"
    f"(?:\"[^\"<\t\n\r{_BAD}]*+\"|'[^'<\t\n\r{_BAD}]*+'))*+)"
)
_GENERAL = re.compile(
    f"{_WS}<xccos{_ATTRS}{_WS}>{_WS}<grpchat{_ATTRS}{_WS}>{_WS}<chat{_WS}>{_TEXT}</chat{_WS}>"
    f"{_WS}</grpchat{_WS}>{_WS}</xccos{_WS}>{_WS}"
)
_ATTR = re.compile("([A-Za-z_][A-Za-z0-9_.-]*)[ \t\r\n]*=[ \t\r\n]*(?:\"([^\"]*)\"|'([^']*)')")
# At most 7 decimal / 6 hex digits (0x10FFFF is 1114111): a longer reference is left to
# expat, which refuses it, instead of an int() of thousands of digits (ValueError).
_REF = re.compile("&(?:(lt|gt|amp|quot|apos)|#0*([0-9]{1,7})|#x0*([0-9A-Fa-f]{1,6}));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
_XCCOS_ATTRS = frozenset(("ver", "envid", "xmlns"))
_POST_ATTRS = frozenset(("id", "seqid", "chanUri", "author", "ts", "msgid"))


class _NotFast(Exception):
    """Internal: the input left the fast path's shape; decode_envelope decides."""


def _char_ref(m: re.Match[str]) -> str:
    named = m.group(1)
    if named is not None:
        return _NAMED[named]
    dec = m.group(2)
    code = int(dec) if dec is not None else int(m.group(3), 16)
    if not (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    ):
        raise _NotFast
    return chr(code)


def _unescape(raw: str) -> str:
    if "&" not in raw:
        return raw
    # Every '&' must start a reference expat knows; a stray one is malformed.
    if raw.count("&") != len(_REF.findall(raw)):
        raise _NotFast
    return _REF.sub(_char_ref, raw)


def _chat_text(raw: str) -> str:
    if "]]>" in raw:  # not allowed in character data
        raise _NotFast
    if "\r" in raw:  # XML end-of-line handling (§2.11) comes before references
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    return _unescape(raw)


def _attrs(raw: str, allowed: frozenset[str]) -> dict[str, str]:
    found = _ATTR.findall(raw)
    attrs = {name: dq or sq for name, dq, sq in found}
    if len(attrs) != len(found) or not attrs.keys() <= allowed:  # duplicate or unknown
        raise _NotFast
    if "&" in raw:
        attrs = {name: _unescape(value) for name, value in attrs.items()}
    return attrs


def _fast(doc: str) -> tuple[str, Post] | None:
    m = _CANONICAL.fullmatch(doc)
    if m is not None:
        envid, seqid, chan_uri, author, ts, msgid, raw_text = m.groups()
        _check_post(chan_uri, seqid, True)
        return envid, Post(chan_uri, author, ts or "", msgid or "", seqid, _chat_text(raw_text))
    m = _GENERAL.fullmatch(doc)
    if m is None:
        return None
    env_attrs = _attrs(m.group(1), _XCCOS_ATTRS)
    if env_attrs.get("xmlns", NS) != NS:
        return None
    return env_attrs.get("envid", ""), _post(
        _attrs(m.group(2), _POST_ATTRS), _chat_text(m.group(3))
    )


def decode_post_fast(
    body: bytes, *, max_bytes: int = MAX_ENVELOPE_BYTES
) -> tuple[str, Post] | None:
    """(envid, Post) for a plain client post envelope, or None: then use decode_envelope.

    Never accepts what decode_envelope refuses, and agrees with it on what it accepts.
    """
    if len(body) > max_bytes:
        return None
    try:
        result = _fast(body.decode("utf-8"))
    except (UnicodeDecodeError, _NotFast, BadRequest):
        return None
    if result is None or not result[0]:  # decode_envelope needs an envid
        return None
    return result


# ---- fast path for a sign-in's exchanges: one command, one reply ----
#
# A sign-in is five commands and five replies, each an envelope of one item whose
# <data> holds nothing or a row of empty elements (<assoc type="member"/>, <sib .../>).
# Exactly the shape build.cmd/build.rpl write (one space, double quotes, no whitespace
# between elements) is taken here (~10x cheaper than expat, which goes through a
# Python callback per element); anything else, including every error, goes to expat.

# Attribute values here may hold references (`&amp;`): _unescape checks each one.
_AVAL = f'[^"<\t\n\r{_BAD}]*+'
_NAME = "[A-Za-z_][A-Za-z0-9_.-]*+"
_LEAF = f'<{_NAME}(?: {_NAME}="{_AVAL}")*+/>'
_LEAVES = f"(?:<data/>|<data>((?:{_LEAF})*+)</data>)?"
_HEAD = f'<xccos ver="1" envid="({_AVAL})" xmlns="{re.escape(NS)}">'
_CMD = re.compile(f'{_HEAD}<cmd id="({_AVAL})" seqid="({_AVAL})">{_LEAVES}</cmd></xccos>')
_RPL = re.compile(
    f'{_HEAD}<rpl id="({_AVAL})" seqid="({_AVAL})"><commandid seqid="({_AVAL})" envid="({_AVAL})"/>'
    f'<resp code="([0-9]{{1,3}})">{_TEXT}</resp>{_LEAVES}</rpl></xccos>'
)
_LEAF_ONE = re.compile(f'<({_NAME})((?: {_NAME}="{_AVAL}")*+)/>')
_LEAF_ATTR = re.compile(f'({_NAME})="({_AVAL})"')


def _data_element(raw: str | None, present: bool) -> Element | None:
    if not present:
        return None
    children = []
    for tag, raw_attrs in _LEAF_ONE.findall(raw or ""):
        found = _LEAF_ATTR.findall(raw_attrs)
        attrs = {name: _unescape(value) for name, value in found}
        # expat refuses a repeated attribute and takes xmlns as a declaration.
        if len(attrs) != len(found) or "xmlns" in attrs:
            raise _NotFast
        children.append(Element(tag, attrs, [], ""))
    return Element("data", {}, children, "")


def _exchange(doc: str) -> Envelope | None:
    m = _CMD.fullmatch(doc)
    if m is not None:
        envid, name, seqid, leaves = m.groups()
        name, seqid = _unescape(name), _unescape(seqid)
        if not seqid or not name.startswith("cmd:"):
            return None
        data = _data_element(leaves, "<data" in doc)
        return Envelope(_unescape(envid), [Command(name, seqid, data)])
    m = _RPL.fullmatch(doc)
    if m is None:
        return None
    envid, name, seqid, cmd_seqid, cmd_envid, code, text, leaves = m.groups()
    name, seqid = _unescape(name), _unescape(seqid)
    cmd_seqid, cmd_envid = _unescape(cmd_seqid), _unescape(cmd_envid)
    if not (seqid and cmd_seqid and cmd_envid and name.startswith("rpl:")):
        return None
    tail = doc[m.end(7) :]  # after the resp text: only the reply's own <data> is looked for
    data = _data_element(leaves, "<data" in tail)
    reply = Reply(name, seqid, cmd_seqid, cmd_envid, int(code), _chat_text(text).strip(), data)
    return Envelope(_unescape(envid), [reply])


def decode_exchange_fast(body: bytes) -> Envelope | None:
    """The envelope of one plain command or reply, or None: then expat decides.

    Never accepts what the full decoder refuses, and agrees with it on what it accepts
    (decode_envelope tries it first; the caller has checked the size).
    """
    try:
        envelope = _exchange(body.decode("utf-8"))
    except (UnicodeDecodeError, _NotFast):
        return None
    if envelope is None or not envelope.envid:
        return None
    return envelope
