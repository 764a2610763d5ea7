"""The server's INFOs from a dialog's template (core/sip/dialog.py), read back by the codec."""

from __future__ import annotations

from core.sip.codec import SipCodec
from core.sip.dialog import Dialog
from core.sip.message import SipMessage


def _dialog(
    call_id: str = "c1@h", tag: str = "rt", target: str = "sip:bob@10.0.0.2:5060"
) -> Dialog:
    return Dialog(
        call_id=call_id,
        local_uri="sip:pchat@example.com",
        local_tag="lt",
        remote_from=f'"Bob" <sip:bob@example.com>;tag={tag}',
        remote_uri="sip:bob@example.com",
        remote_tag=tag,
        remote_target=target,
        contact="<sip:pchat@127.0.0.1:5041;transport=tcp>",
        via_host="127.0.0.1:5041",
    )


def _parsed(data: bytes) -> list[SipMessage]:
    items = SipCodec().feed(data)
    assert all(isinstance(i, SipMessage) for i in items), items
    return [i for i in items if isinstance(i, SipMessage)]


def test_infos_carry_the_dialog_a_fresh_cseq_and_branch_and_the_exact_body() -> None:
    dialog = _dialog()
    bodies = [b"<cmd/>", "caf\u00e9 \u2603".encode(), b""]
    infos = _parsed(b"".join(dialog.info(body) for body in bodies))
    assert [m.body for m in infos] == bodies
    assert [m.get("CSeq") for m in infos] == ["1 INFO", "2 INFO", "3 INFO"]
    branches = [m.get("Via") for m in infos]
    assert len(set(branches)) == 3 and all(
        b and b.endswith(f".{n + 1}") for n, b in enumerate(branches)
    )
    first = infos[0]
    assert (first.method, first.uri) == ("INFO", "sip:bob@10.0.0.2:5060")
    assert first.call_id == "c1@h"
    assert first.get("From") == "<sip:pchat@example.com>;tag=lt"
    assert first.get("To") == '"Bob" <sip:bob@example.com>;tag=rt'
    assert first.get("Content-Type") == "text/plain; charset=utf-8"


def test_a_percent_sign_in_the_dialogs_values_is_copied_literally() -> None:
    # Call-IDs, tags and URIs may hold '%' (escapes): the template must not read them as
    # format directives.
    dialog = _dialog(call_id="a%d%s%%@h", tag="t%25", target="sip:b%40x@10.0.0.2")
    info = _parsed(dialog.info(b"x%dy"))[0]
    assert info.call_id == "a%d%s%%@h"
    assert info.uri == "sip:b%40x@10.0.0.2"
    assert info.get("To") == '"Bob" <sip:bob@example.com>;tag=t%25'
    assert info.body == b"x%dy"
    assert _parsed(dialog.request("BYE"))[0].call_id == "a%d%s%%@h"
