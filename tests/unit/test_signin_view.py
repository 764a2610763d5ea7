"""Unit tests for core.xccos.signin_view: parked sign-in reads, each kind handed out once."""

from __future__ import annotations

from core.xccos.signin_view import KINDS, SigninViews


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_kind_is_taken_once_then_the_store_is_asked() -> None:
    views: SigninViews[str] = SigninViews(clock=Clock())
    views.put("s1", "read")
    assert views.take("s1", "member") == "read"
    assert views.take("s1", "member") is None  # a second ask goes to the store
    assert views.take("s1", "manager") == "read"
    assert views.take("s1", "follower") == "read"
    assert views.take("s1", "invitations") == "read"
    assert len(views) == 0  # all taken: nothing kept
    assert views.take("other", "member") is None


def test_an_old_read_is_never_handed_out() -> None:
    clock = Clock()
    views: SigninViews[str] = SigninViews(max_age_s=1.0, clock=clock)
    views.put("s1", "read")
    clock.now += 1.5
    assert views.take("s1", "member") is None
    assert len(views) == 0


def test_drop_and_clear_forget_reads() -> None:
    views: SigninViews[str] = SigninViews(clock=Clock())
    views.put("s1", "a")
    views.put("s2", "b")
    views.drop("s1")
    assert views.take("s1", "member") is None
    assert views.take("s2", "member") == "b"
    views.clear()
    assert all(views.take("s2", kind) is None for kind in KINDS)


def test_bounded_in_number_and_age_oldest_go_first() -> None:
    clock = Clock()
    views: SigninViews[int] = SigninViews(max_views=3, max_age_s=1.0, clock=clock)
    for n in range(5):
        views.put(f"s{n}", n)
    assert len(views) == 3
    assert views.take("s0", "member") is None and views.take("s4", "member") == 4
    clock.now += 2.0
    views.put("new", 9)  # the expired ones go as a new one comes
    assert len(views) == 1


def test_drop_user_forgets_the_reads_of_that_user_only() -> None:
    views: SigninViews[str] = SigninViews(clock=Clock())
    views.put("s1", "a", "alice")
    views.put("s2", "b", "alice")
    views.put("s3", "c", "bob")
    views.drop_user("alice")
    assert views.take("s1", "invitations") is None and views.take("s2", "member") is None
    assert views.take("s3", "invitations") == "c"
    views.drop_user("nobody")  # no reads: nothing to do
    assert len(views) == 1


def test_a_read_pushed_out_by_age_or_number_leaves_no_user_entry() -> None:
    clock = Clock()
    views: SigninViews[int] = SigninViews(max_views=2, max_age_s=1.0, clock=clock)
    for n in range(50):
        views.put(f"s{n}", n, f"user{n}")
    assert len(views) == 2 and len(views._by_user) == 2
    clock.now += 2.0
    views.put("new", 9, "someone")
    assert list(views._by_user) == ["someone"]
