"""core/files/names.py and post.py: stored names, and the file post's one text form."""

from __future__ import annotations

import pytest

from core.errors import BadRequest
from core.files.names import check_name, file_id_of, new_file_id, stored_name
from core.files.post import file_post_text, parse_file_post

ID = "A" * 24


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("Plan.PDF", ID + ".pdf"),
        ("archive.tar.gz", ID + ".gz"),
        ("README", ID),
        (".bashrc", ID),  # a leading dot is a hidden name, not an extension
        ("photo.jpeg-large", ID),  # not letters and digits: no extension
        ("x." + "a" * 17, ID),  # longer than 16: none
        ("über.txt", ID + ".txt"),
    ],
)
def test_stored_name_is_the_id_plus_a_checked_extension(name: str, stored: str) -> None:
    assert stored_name(ID, check_name(name)) == stored
    assert file_id_of(stored) == ID


def test_file_ids_are_random_and_only_store_names_parse() -> None:
    ids = {new_file_id() for _ in range(100)}
    assert len(ids) == 100 and all(file_id_of(i) == i for i in ids)
    for junk in ("README", ID + ".tar.gz", ID + "x", "short.txt", ID + ".part"[:0] + "/x"):
        assert file_id_of(junk) is None


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a\\b", "a\nb", "..", "n" * 256])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(BadRequest):
        check_name(name)


def test_file_post_text_round_trips() -> None:
    url = f"https://chat.example.com/api/files/{ID}"
    text = file_post_text("Q3 (final) [v2].xlsx", 12345, url)
    assert text == f"[file] Q3 (final) [v2].xlsx (12345 bytes) {url}"
    post = parse_file_post(text)
    assert post is not None
    assert (post.file_id, post.name, post.size, post.url) == (
        ID,
        "Q3 (final) [v2].xlsx",
        12345,
        url,
    )


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        f"[file] x (1 bytes) https://h/api/files/{ID} trailing",
        f"[file] x (1 bytes) https://h/api/files/{ID[:-1]}",
        f"[file] a\nb (1 bytes) https://h/api/files/{ID}",
        f"look: [file] x (1 bytes) https://h/api/files/{ID}",
    ],
)
def test_other_posts_are_not_file_posts(text: str) -> None:
    assert parse_file_post(text) is None
