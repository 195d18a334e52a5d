"""Every relative link in the repository's markdown files points at a file or folder that exists
(result files and write-ups move; a link must move with them)."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target) and [text](target "title"); the target ends at whitespace, ')' or '#'
LINK = re.compile(r"\[[^\]]*\]\(<?([^)\s#>]*)")


def markdown_files():
    """The tracked and untracked-but-not-ignored .md files of the checkout (every .md under ROOT
    outside hidden and build folders when git is not available)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30, check=True).stdout.split()
        return sorted(ROOT / p for p in out if (ROOT / p).is_file())
    except (OSError, subprocess.SubprocessError):
        skip = {".git", "build", "dist", "runs", "data", ".benchmarks"}
        return sorted(p for p in ROOT.rglob("*.md") if not skip.intersection(p.relative_to(ROOT).parts))


def broken_links(doc: Path):
    """The relative link targets of ``doc`` that resolve to nothing (web, mail and in-page links skipped)."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)  # code is not a link
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [t for t in LINK.findall(text) if t and not re.match(r"^[a-z][a-z0-9+.-]*:", t, flags=re.I)]
    return [t for t in targets if not (doc.parent / t).exists()]


def test_the_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("x")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](there.md) [web](https://x.org/a.md) [anchor](#top) [gone](results/gone.json) "
                   "[ok too](there.md#part) `[Re, Im](K_n z)`\n```\n[in code](nowhere.md)\n```\n")
    assert broken_links(doc) == ["results/gone.json"]


def test_markdown_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "fsn_studies/README.md", "fsn_model/README.md"} <= names


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    missing = broken_links(doc)
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"
