"""The pages' HTML helper: every value is escaped unless it is already markup."""

from __future__ import annotations

from shards.web.html import Markup, esc, join, options, render
from shards.web.pages_signin import local_path


def test_values_are_escaped_and_markup_is_kept() -> None:
    evil = '<b onclick="x()">&\'</b>'
    out = render('<p title="$t">$v $m</p>', t=evil, v=evil, m=Markup("<i>ok</i>"))
    assert out == (
        '<p title="&lt;b onclick=&quot;x()&quot;&gt;&amp;&#x27;&lt;/b&gt;">'
        "&lt;b onclick=&quot;x()&quot;&gt;&amp;&#x27;&lt;/b&gt; <i>ok</i></p>"
    )
    assert isinstance(out, Markup) and esc(out) is out  # rendered once, never twice


def test_joined_and_option_lists_escape_their_parts() -> None:
    assert join(["<a>", Markup("<b>")]) == "&lt;a&gt;\n<b>"
    got = options([("1", "<one>"), ('"2"', "two")], '"2"')
    assert got == (
        '<option value="1">&lt;one&gt;</option>\n'
        '<option value="&quot;2&quot;" selected>two</option>'
    )


def test_only_local_paths_are_followed_after_sign_in() -> None:
    assert local_path("/rooms/abc?x=1") == "/rooms/abc?x=1"
    for bad in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "rooms", ""):
        assert local_path(bad) == "/rooms"
