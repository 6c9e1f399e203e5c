"""Every relative link in the project's Markdown resolves inside this repository (a fresh clone has no ../shared)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.kedro_project import PROJECT_ROOT

SKIPPED_DIRS = {"data", "build", "mlruns", "node_modules"}  # outputs, not documentation
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`+[^`\n]*`+")
INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.md")
                  if not any(part.startswith(".") or part in SKIPPED_DIRS for part in p.relative_to(root).parts[:-1]))


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(path: Path, root: Path) -> list[str]:
    """`target: reason` for every relative link of `path` that leaves `root`, is missing, or names a missing anchor."""
    text = path.read_text(encoding="utf-8")
    problems = []
    prose = _prose(text)
    for target in INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose):
        if SCHEME.match(target):
            continue  # a URL, not a file of this repository
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading with id #{anchor}")
    return problems


def test_the_readme_and_the_docs_are_checked() -> None:
    names = {p.relative_to(PROJECT_ROOT).as_posix() for p in markdown_files(PROJECT_ROOT)}
    assert {"README.md", "docs/ARCHITECTURE.md", "docs/reference_code.md", "docs/stack.md"} <= names


@pytest.mark.parametrize("path", markdown_files(PROJECT_ROOT), ids=lambda p: p.relative_to(PROJECT_ROOT).as_posix())
def test_relative_links_resolve_inside_the_repository(path: Path) -> None:
    assert broken_links(path, PROJECT_ROOT) == []


def test_the_checker_names_each_kind_of_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Sharded runs\n\ntext\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/guide.md#sharded-runs) [ok](#top-part) [web](https://example.org/x.md) `[code](nope.md)`\n"
        "# Top part\n"
        "[peers](../shared/notes/peers.md) [gone](docs/missing.md) [anchor](docs/guide.md#sharding)\n"
        "```\n[fenced](also-nope.md)\n```\n"
        "[ref]: docs/other.md\n")
    assert broken_links(page, tmp_path) == ["../shared/notes/peers.md: outside the repository",
                                            "docs/missing.md: no such file",
                                            "docs/guide.md#sharding: no heading with id #sharding",
                                            "docs/other.md: no such file"]
