"""Unit tests for core.xccos.xml: the hardened expat parser and its Element tree."""

from __future__ import annotations

import pytest

from core.errors import BadRequest, BadXml, TooLarge
from core.xccos.xml import Element, parse_xml


def test_tree_shape_tags_attrs_children_and_text() -> None:
    root = parse_xml(b'<a x="1"> one <b y="2">inner</b> two <c/></a>')
    assert root.tag == "a"
    assert root.attrs == {"x": "1"}
    assert [c.tag for c in root.children] == ["b", "c"]
    assert root.text == " one  two "  # direct text only, concatenated, not stripped
    b = root.find("b")
    assert b is not None and b.text == "inner" and b.get("y") == "2"


def test_find_findall_get_findtext() -> None:
    root = parse_xml(b"<r><i n='1'/><j>t</j><i n='2'/></r>")
    assert [i.get("n") for i in root.findall("i")] == ["1", "2"]
    assert root.find("missing") is None
    assert root.findall("missing") == []
    assert root.get("nope") == "" and root.get("nope", "d") == "d"
    assert root.findtext("j") == "t" and root.findtext("zz", "x") == "x"
    assert [c.tag for c in root] == ["i", "j", "i"]


def test_namespaces_and_prefixes_are_stripped() -> None:
    root = parse_xml(b'<p:a xmlns:p="urn:p" xmlns="urn:d" p:x="1" y="2"><b/><p:c p:z="3"/></p:a>')
    assert root.tag == "a"
    assert root.attrs == {"x": "1", "y": "2"}  # xmlns attributes dropped
    assert [c.tag for c in root.children] == ["b", "c"]
    assert root.children[1].attrs == {"z": "3"}


def test_xccos_default_namespace_is_invisible() -> None:
    root = parse_xml(b'<xccos ver="1" envid="5" xmlns="urn:parlano:xml:ns:xccos"><cmd/></xccos>')
    assert root.tag == "xccos" and root.attrs == {"ver": "1", "envid": "5"}
    assert root.children[0].tag == "cmd"


def test_predefined_entities_and_char_refs_are_expanded() -> None:
    root = parse_xml(b"<a v='&lt;&gt;&amp;&quot;&apos;'>&lt;&#65;&#x1F600;&amp;</a>")
    assert root.get("v") == "<>&\"'"
    assert root.text == "<A\U0001f600&"


def test_cdata_comments_and_xml_declaration_are_fine() -> None:
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><a><!-- c --><![CDATA[<x>&]]></a>')
    assert root.text == "<x>&"


def test_str_input_and_utf8_text() -> None:
    root = parse_xml("<a t='é'>\u00e9\U0001f600</a>")
    assert root.text == "\u00e9\U0001f600" and root.get("t") == "é"


def test_line_endings_are_normalised_like_any_xml_parser() -> None:
    assert parse_xml(b"<a>x\r\ny\rz</a>").text == "x\ny\nz"


def test_element_constructor_defaults_are_not_shared() -> None:
    a, b = Element("a"), Element("b")
    a.children.append(b)
    a.attrs["k"] = "v"
    assert Element("c").children == [] and Element("c").attrs == {}


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""

XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xccos envid="1"><cmd id="cmd:join" seqid="1"><data>&xxe;</data></cmd></xccos>"""

XXE_PARAMETER = b"""<!DOCTYPE foo [<!ENTITY % ext SYSTEM "http://127.0.0.1:1/evil.dtd"> %ext;]>
<foo/>"""

XXE_EXTERNAL_DTD = b'<!DOCTYPE foo SYSTEM "http://127.0.0.1:1/evil.dtd"><foo>&ent;</foo>'

QUADRATIC_BLOWUP = b'<!DOCTYPE q [<!ENTITY a "' + b"x" * 5000 + b'">]><q>' + b"&a;" * 2000 + b"</q>"

UNPARSED_ENTITY = b'<!DOCTYPE u [<!NOTATION n SYSTEM "n"><!ENTITY e SYSTEM "x" NDATA n>]><u/>'


@pytest.mark.parametrize(
    "payload",
    [BILLION_LAUGHS, XXE_FILE, XXE_PARAMETER, XXE_EXTERNAL_DTD, QUADRATIC_BLOWUP, UNPARSED_ENTITY],
    ids=["billion-laughs", "xxe-file", "xxe-parameter", "xxe-external-dtd", "quadratic", "ndata"],
)
def test_hostile_dtd_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(BadXml, match="DOCTYPE"):
        parse_xml(payload, max_bytes=len(payload))


def test_xxe_never_reads_the_file() -> None:
    # Even when the file exists, no part of it may surface: the parse fails outright.
    with pytest.raises(BadXml) as info:
        parse_xml(XXE_FILE)
    assert "root:" not in str(info.value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"<a>&nope;</a>", "undefined entity"),
        (b"<a x='&nope;'/>", "undefined entity"),
        (b"<a><?php echo 1; ?></a>", "processing instruction"),
        (b"<a/>junk", "junk after document element"),
        (b"<a/><b/>", "junk after document element"),
        (b"", "no element found"),
        (b"   ", "no element found"),
        (b"<a>", "no element found"),
        (b"<a></b>", "mismatched tag"),
        (b"<a x='1' x='2'/>", "duplicate attribute"),
        (b"<a x=1/>", "not well-formed"),
        (b"<a>\x00</a>", "not well-formed"),
        (b"<a>&#0;</a>", "invalid character"),
        (b"<a>&#xFFFE;</a>", "invalid character"),
        (b"<a>\xff\xfe</a>", "not well-formed"),
        (b"<p:a/>", "unbound prefix"),
        (b"<a>x]]>y</a>", "not well-formed"),
    ],
)
def test_malformed_input_is_badxml_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(BadXml, match=reason):
        parse_xml(payload)


def test_lone_surrogate_in_str_input_is_badxml() -> None:
    with pytest.raises(BadXml):
        parse_xml("<a>\ud800</a>")


def test_badxml_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_xml(b"<")


def test_size_limit_is_inclusive() -> None:
    doc = b"<a>" + b"x" * 93 + b"</a>"
    assert len(doc) == 100
    assert parse_xml(doc, max_bytes=100).text == "x" * 93
    with pytest.raises(BadXml, match="larger than 99 bytes"):
        parse_xml(doc, max_bytes=99)


def test_size_limit_counts_utf8_bytes_of_str_input() -> None:
    doc = "<a>" + "é" * 10 + "</a>"  # 17 characters, 27 bytes
    assert parse_xml(doc, max_bytes=27).text == "é" * 10
    with pytest.raises(BadXml, match="larger"):
        parse_xml(doc, max_bytes=26)


def test_default_size_limit_is_64_kib() -> None:
    doc = b"<a>" + b"x" * (65536 - 7) + b"</a>"
    assert len(parse_xml(doc).text) == 65536 - 7
    with pytest.raises(BadXml, match="larger"):
        parse_xml(doc + b" ")


def _nested(depth: int) -> bytes:
    return b"<e>" * depth + b"</e>" * depth


def test_depth_limit_is_inclusive() -> None:
    root = parse_xml(_nested(5), max_depth=5)
    depth = 1
    while root.children:
        root, depth = root.children[0], depth + 1
    assert depth == 5
    with pytest.raises(BadXml, match="deeper than 4"):
        parse_xml(_nested(5), max_depth=4)


def test_default_depth_limit_is_32() -> None:
    parse_xml(_nested(32))
    with pytest.raises(BadXml, match="deeper"):
        parse_xml(_nested(33))


def test_element_count_limit_is_inclusive() -> None:
    doc = b"<r>" + b"<i/>" * 9 + b"</r>"  # 10 elements
    assert len(parse_xml(doc, max_elements=10).children) == 9
    with pytest.raises(BadXml, match="more than 9 elements"):
        parse_xml(doc, max_elements=9)


def test_default_element_limit_is_10000() -> None:
    doc = b"<r>" + b"<i/>" * 9999 + b"</r>"
    assert len(parse_xml(doc).children) == 9999
    with pytest.raises(BadXml, match="elements"):
        parse_xml(b"<r>" + b"<i/>" * 10000 + b"</r>")


def test_encoding_declaration_cannot_switch_away_from_utf8() -> None:
    # Latin-1 bytes under a Latin-1 declaration: still parsed as UTF-8, so refused.
    with pytest.raises(BadXml):
        parse_xml(b'<?xml version="1.0" encoding="ISO-8859-1"?><a>\xe9</a>')


def test_too_many_root_children_stop_the_parse_at_the_first_one_over() -> None:
    items = "<cmd/>" * 17
    with pytest.raises(TooLarge, match="more than 16 items"):
        # Malformed after the 17th item: refused as too large, so never read that far.
        parse_xml(f"<xccos>{items}<broken</xccos>", max_root_children=16)
    full = parse_xml(f"<xccos>{'<cmd><a/><b/></cmd>' * 16}</xccos>", max_root_children=16)
    assert len(full.children) == 16
    with pytest.raises(BadXml):  # under the cap, the rest is parsed and checked as ever
        parse_xml("<xccos><cmd/><broken</xccos>", max_root_children=16)
