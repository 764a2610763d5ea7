"""PostAnswer: an INFO with posts is answered once, after its posts, in a fixed order."""

from __future__ import annotations

from core.errors import Forbidden, NoDialog, PchatError, TooLarge
from shards.worker.answer import PostAnswer


def recorder() -> tuple[list[str], PostAnswer]:
    out: list[str] = []

    def respond(refusal: PchatError | None) -> None:
        out.append("200" if refusal is None else str(refusal.sip_status))

    return out, PostAnswer(respond, out.append)


def test_200_goes_before_the_rpls_once_every_post_is_done() -> None:
    out, answer = recorder()
    answer.started()
    answer.started()
    answer.reply("rpl:join")  # a command of the same envelope waits with the posts
    answer.post_done("rpl:grpchat 1", None)
    answer.seal()
    assert out == []  # the second post is still running
    answer.post_done("rpl:grpchat 2", None)
    assert out == ["200", "rpl:join", "rpl:grpchat 1", "rpl:grpchat 2"]
    answer.reply("late")  # after the answer, rpls go straight out
    assert out[-1] == "late" and answer.answered


def test_the_first_refusal_is_the_status_and_its_rpl_goes_first() -> None:
    out, answer = recorder()
    answer.started()
    answer.started()
    answer.seal()
    answer.post_done("rpl 413", TooLarge("long"))
    answer.post_done("rpl 403", Forbidden("no"))
    assert out == ["rpl 413", "rpl 403", "413"]


def test_a_failed_envelope_is_answered_once_with_its_error() -> None:
    out, answer = recorder()
    answer.started()
    answer.reply("held")
    answer.fail(NoDialog("gone"))
    answer.post_done("rpl", None)  # the post finishing later sends only its rpl
    answer.fail(NoDialog("again"))
    assert out == ["481", "rpl"]
