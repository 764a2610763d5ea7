"""The docs name only what this repository holds (issue 11 point 8)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_of_the_repository(doc: Path) -> None:
    missing = [
        target
        for target in LINK.findall(doc.read_text())
        if "://" not in target and not (doc.parent / target).exists()
    ]
    assert missing == []


@pytest.mark.parametrize(
    "path",
    [*DOCS, ROOT / "ops" / "pchat.example.toml", ROOT / "ops" / "systemd" / "pchat.service"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_doc_cites_a_file_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    assert "ARCHITECTURE" not in text
    assert "XCCOS.md" not in text  # the contract is docs/xccos.md
    assert "shared folder" not in text


def test_the_systemd_unit_installs_from_the_repository() -> None:
    """pchat is not on PyPI: `pip install pchat` would install nothing, or someone else's."""
    text = (ROOT / "ops" / "systemd" / "pchat.service").read_text()
    assert not re.search(r"pip install pchat\b", text)
    assert "pip install /opt/pchat-src" in text
