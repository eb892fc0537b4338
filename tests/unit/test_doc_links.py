"""README.md and docs/ stand on their own in a clone: every link they hold leads to a file
of this repository (and to a heading that exists there), none to another site or to a
path above the repository, such as the `../shared/` a clone does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
AUTOLINK = re.compile(r"<([a-z][a-z0-9+.-]*:[^>\s]+)>", re.IGNORECASE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
# A path leading out of its folder, as a link or mentioned in text or code: `../shared/…`.
PARENT_PATH = re.compile(r"(?<![\w./])(?:\.\./)+[\w.-][\w./-]*")


def links(text: str) -> list[str]:
    return [
        *INLINE_LINK.findall(text),
        *REFERENCE_LINK.findall(text),
        *AUTOLINK.findall(text),
    ]


def anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with each link of `document`, in words; [] when every one is fine."""
    text = document.read_text(encoding="utf-8")
    wrong = []
    for target in links(text):
        if SCHEME.match(target):
            wrong.append(f"{target}: points outside the repository")
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.is_relative_to(root):
            wrong.append(f"{target}: leads out of the repository")
        elif not resolved.exists():
            wrong.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            wrong.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    for mention in PARENT_PATH.findall(text):
        resolved = (document.parent / mention).resolve()
        if not resolved.is_relative_to(root) or not resolved.exists():
            wrong.append(f"{mention}: a path outside the repository")
    return wrong


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_the_documentation_leads_to_a_file_of_the_repository(
    document: Path,
) -> None:
    assert broken_links(document) == []


def test_the_check_finds_links_that_leave_the_repository(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# Here\n\n## Users and passwords\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See [the design](../shared/DESIGN.md), [a site](https://example.org/x),"
        " <https://example.org/y>, [gone](docs/gone.md), [here](docs/here.md),"
        " [heading](docs/here.md#users-and-passwords), [no heading](docs/here.md#nope)\n"
        "and, in code, `cat ../shared/STYLE.md`.\n\n[ref]: ../elsewhere.md\n"
    )

    assert broken_links(readme, root=tmp_path) == [
        "../shared/DESIGN.md: leads out of the repository",
        "https://example.org/x: points outside the repository",
        "docs/gone.md: no such file in the repository",
        "docs/here.md#nope: no heading #nope in docs/here.md",
        "../elsewhere.md: leads out of the repository",
        "https://example.org/y: points outside the repository",
        "../shared/DESIGN.md: a path outside the repository",
        "../shared/STYLE.md: a path outside the repository",
        "../elsewhere.md: a path outside the repository",
    ]
