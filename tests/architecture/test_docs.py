"""The README is a front page and docs/ a guide a newcomer can walk: short, linked, no dead ends.

- README.md stays at most 300 lines: everything else lives in a page of docs/.
- Every relative link (and image) in README.md and docs/*.md names a file that exists, and a
  ``#fragment`` names a heading of that page (GitHub's anchors) or an explicit ``<a id>``.
- Every docs/*.md page is linked from README.md or docs/README.md (the guide's index).
- The files the README's commands post (``curl --data-binary @FILE``) are in the repository.

No database, no network: links to other sites are not fetched.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest

from tests.support import REPO

REPO = REPO
README = REPO / "README.md"
DOCS = REPO / "docs"
INDEX = DOCS / "README.md"
MAX_README_LINES = 300

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans: where links live."""
    kept, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            kept.append("")
            continue
        kept.append("" if fenced else line)
    return INLINE_CODE.sub("", "\n".join(kept))


def links(page: Path) -> list[str]:
    return [m.group(2) for m in LINK.finditer(prose(page.read_text(encoding="utf-8")))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lower case, punctuation dropped."""
    text = LINK.sub(lambda m: m.group(1), heading)  # a link in a heading anchors by its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = page.read_text(encoding="utf-8")
    fenced = False
    for line in text.split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if fenced:
            continue
        found.update(HTML_ID.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def is_external(target: str) -> bool:
    return bool(urllib.parse.urlsplit(target).scheme) or target.startswith("//")


def test_the_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move a topic into docs/"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if is_external(target):
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / urllib.parse.unquote(path)).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
            continue
        if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme_or_the_index() -> None:
    linked: set[Path] = set()
    for page in (README, INDEX):
        for target in links(page):
            path = target.partition("#")[0]
            if path and not is_external(target):
                linked.add((page.parent / urllib.parse.unquote(path)).resolve())
    orphans = [
        p.name for p in sorted(DOCS.glob("*.md")) if p != INDEX and p.resolve() not in linked
    ]
    assert not orphans, f"docs pages linked from neither README.md nor docs/README.md: {orphans}"
    assert INDEX.resolve() in linked, "README.md must link the guide's index, docs/README.md"


def test_the_files_the_readme_posts_exist() -> None:
    text = README.read_text(encoding="utf-8")
    posted = re.findall(r"--data(?:-binary)?\s+@(\S+)", text)
    assert posted, "the README's first webhook posts a file of the repository"
    missing = [p for p in posted if not (REPO / p).is_file()]
    assert not missing, f"README posts files a fresh clone does not have: {missing}"


def test_the_link_checker_sees_what_github_renders() -> None:
    """The checker itself: anchors as GitHub makes them, and code is not a link."""
    assert slug("Process roles (`service/roles.py`)") == "process-roles-servicerolespy"
    assert slug("Start-up, errors and logs") == "start-up-errors-and-logs"
    assert slug("`acklog simulate CHANNEL`") == "acklog-simulate-channel"
    text = "see [a](a.md#x) and `[b](b.md)`\n```\n[c](c.md)\n```\n![d](d.png)"
    assert [m.group(2) for m in LINK.finditer(prose(text))] == ["a.md#x", "d.png"]
