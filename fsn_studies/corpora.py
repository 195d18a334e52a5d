"""Build extra byte corpora from Debian packages: ``python -m fsn_studies.corpora NAME --out FILE``.

Two corpora (``CORPORA``), both English technical prose, fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x``:

* ``prose`` (2.9 MB): the English HTML manuals of eight packages (``PROSE_SOURCES``: the Debian
  Administrator's Handbook, the Debian Reference, the Developer's Reference, Debian Policy, the
  Securing Debian manual, the New Maintainers' Guide, the Debian FAQ and the GNU coding and
  maintainer standards).
* ``kernel-docs`` (18 MB): the Linux kernel's documentation as packaged in ``linux-doc-6.1``
  (``KERNEL_DOC_SOURCES``), without its translations and without Sphinx's C API declarations
  (``<dl class="c function">`` and the like) and permalink marks. Large enough that a 13M-token
  run reads its training split less than once (0.8 epochs).

Text is kept from paragraphs, list items, definitions, titles and admonitions; ``<pre>``
blocks, tables, scripts, styles and navigation are dropped. Whitespace is collapsed to single
spaces, each block becomes one line, blocks shorter than 40 characters are dropped and exact
repeats (the same block in a second copy of a page, boilerplate) are kept once. The result is
UTF-8 text, deterministic for the package versions listed in the output's provenance line
(printed, not written into the file).
"""

from __future__ import annotations

import hashlib
import html.parser
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fsn_model.checkpoint import atomic_write_bytes
from fsn_model.cli import OneLineParser, UsageError, run_cli

__all__ = ["CORPORA", "KERNEL_DOC_SOURCES", "PROSE_SOURCES", "ProseSource", "build_prose",
           "html_blocks", "main"]


@dataclass(frozen=True)
class ProseSource:
    """One Debian package and the glob (relative to its unpacked root) of its English HTML.

    ``exclude``: directory names whose pages are left out (translations); ``skip_classes``:
    HTML classes whose elements are left out with everything inside them."""

    package: str
    html_glob: str
    exclude: tuple[str, ...] = ()
    skip_classes: frozenset[str] = frozenset()

    def pages(self, root: Path) -> list[Path]:
        """The source's HTML pages under an unpacked root, sorted, excluded directories dropped."""
        return [path for path in sorted(root.glob(self.html_glob))
                if not set(self.exclude).intersection(path.relative_to(root).parts[:-1])]


PROSE_SOURCES = (
    ProseSource("debian-handbook", "usr/share/doc/debian-handbook/html/en-US/*.html"),
    ProseSource("debian-reference-en", "usr/share/debian-reference/*.en.html"),
    ProseSource("developers-reference", "usr/share/developers-reference/*.html"),
    ProseSource("debian-policy", "usr/share/doc/debian-policy/policy.html/*.html"),
    ProseSource("harden-doc", "usr/share/doc/harden-doc/html/en-US/*.html"),
    ProseSource("maint-guide", "usr/share/doc/maint-guide/html/*.en.html"),
    ProseSource("debian-faq", "usr/share/doc/debian/FAQ/*.en.html"),
    ProseSource("gnu-standards", "usr/share/doc/gnu-standards/*.html"),
)

KERNEL_DOC_SOURCES = (
    ProseSource("linux-doc-6.1", "usr/share/doc/linux-doc-6.1/html/**/*.html",
                exclude=("translations", "_sources", "_static"),
                skip_classes=frozenset({"headerlink", "c"})),
)

CORPORA = {"prose": PROSE_SOURCES, "kernel-docs": KERNEL_DOC_SOURCES}

_BLOCK_TAGS = {"p", "li", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "blockquote",
               "div", "title", "caption", "figcaption"}
_SKIP_TAGS = {"pre", "table", "script", "style", "nav", "head", "header", "footer", "noscript",
              "svg", "math", "form", "button", "select"}
_VOID_TAGS = {"br", "img", "hr", "meta", "link", "input", "area", "base", "col", "embed", "source",
              "track", "wbr", "param"}
MIN_BLOCK_CHARS = 40


class _ProseParser(html.parser.HTMLParser):
    """Collects the text of block elements outside skipped subtrees, one string per block.

    A subtree is skipped when its tag is in _SKIP_TAGS or its class list holds one of
    ``skip_classes``."""

    def __init__(self, skip_classes: frozenset[str] = frozenset()) -> None:
        super().__init__(convert_charrefs=True)
        self._skip_classes = skip_classes
        self.blocks: list[str] = []
        self._skip_depth = 0
        self._buf: list[str] = []
        self._class_skip_tag: str | None = None
        self._class_skip_nesting = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        if text:
            self.blocks.append(text)
        self._buf = []

    def _class_skipped(self, tag: str, attrs) -> bool:
        """Tracks the subtree skipped for its class; True while inside it (its own tags included)."""
        if self._class_skip_tag is not None:
            if tag == self._class_skip_tag:
                self._class_skip_nesting += 1
            return True
        classes = next((value or "" for name, value in attrs if name == "class"), "").split()
        if tag not in _VOID_TAGS and self._skip_classes.intersection(classes):
            self._class_skip_tag, self._class_skip_nesting = tag, 1
            return True
        return False

    def handle_starttag(self, tag: str, attrs) -> None:
        if self._class_skipped(tag, attrs):
            return
        if tag in _VOID_TAGS:
            if tag == "br" and not self._skip_depth:
                self._buf.append(" ")
            return
        if tag in _SKIP_TAGS:
            if not self._skip_depth:
                self._flush()
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS and not self._skip_depth:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._class_skip_tag is not None:
            if tag == self._class_skip_tag:
                self._class_skip_nesting -= 1
                if not self._class_skip_nesting:
                    self._class_skip_tag = None
            return
        if tag in _VOID_TAGS:
            return
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS and not self._skip_depth:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip_depth and self._class_skip_tag is None:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_blocks(markup: str, skip_classes: frozenset[str] = frozenset()) -> list[str]:
    """Text blocks of an HTML page (markup str), whitespace-collapsed, in document order;
    elements whose class list holds one of ``skip_classes`` are dropped with their contents."""
    parser = _ProseParser(skip_classes)
    parser.feed(markup)
    parser.close()
    return parser.blocks


def _require_tools() -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"the prose corpus needs {' and '.join(missing)} (a Debian/Ubuntu system with a "
            "reachable package archive); not found on PATH")


def _download_and_unpack(workdir: Path, packages: list[str]) -> dict[str, str]:
    """apt-get download + dpkg-deb -x every package into workdir/root; returns {package: version}."""
    result = subprocess.run(["apt-get", "download", *packages], cwd=workdir,
                            capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"apt-get download {' '.join(packages)} failed: {last}")
    versions = {}
    root = workdir / "root"
    for package in packages:
        debs = sorted(workdir.glob(f"{package}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download left no .deb for {package}")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
        versions[package] = debs[-1].name.split("_")[1]
    return versions


def prose_from_tree(root: Path, sources=PROSE_SOURCES) -> str:
    """The prose corpus text from an unpacked tree: blocks of every source's HTML (sorted paths),
    at least MIN_BLOCK_CHARS long, exact repeats dropped, one block per line."""
    seen: set[str] = set()
    lines: list[str] = []
    for source in sources:
        for path in source.pages(root):
            markup = path.read_text(encoding="utf-8", errors="replace")
            for block in html_blocks(markup, source.skip_classes):
                if len(block) < MIN_BLOCK_CHARS or block in seen:
                    continue
                seen.add(block)
                lines.append(block)
    return "\n".join(lines) + "\n"


def build_prose(out: Path, sources=PROSE_SOURCES) -> dict:
    """Fetch, extract and write the prose corpus to ``out``; returns its provenance
    (packages and versions, bytes, sha256)."""
    _require_tools()
    with tempfile.TemporaryDirectory(prefix="fsn-prose-") as tmp:
        workdir = Path(tmp)
        versions = _download_and_unpack(workdir, [s.package for s in sources])
        text = prose_from_tree(workdir / "root", sources)
    data = text.encode("utf-8")
    if not data.strip():
        raise RuntimeError("the packages held no prose (did their layout change?)")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, lambda tmp: Path(tmp).write_bytes(data))  # no partial file, even on a full disk
    return {"packages": versions, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(out)}


def main(argv: list[str] | None = None) -> int:
    """One line on any failure: exit 2 for bad input or a failed download, 1 for a write that
    failed (full disk: nothing is left behind), 130 on Ctrl-C."""
    return run_cli(PROG, _main, argv)


PROG = "python -m fsn_studies.corpora"


def _main(argv) -> int:
    parser = OneLineParser(
        prog=PROG,
        description="Build a byte corpus from Debian packages (needs apt-get and dpkg-deb); "
                    "train on it with --data FILE.")
    parser.add_argument("corpus", choices=sorted(CORPORA), help="prose: English manuals of eight "
                        "Debian documentation packages (debian-handbook, debian-reference-en, ...), "
                        "2.9 MB; kernel-docs: the Linux kernel's documentation (linux-doc-6.1), "
                        "English pages without C API declarations, 18 MB")
    parser.add_argument("--out", required=True, type=Path, help="file to write (UTF-8 text)")
    args = parser.parse_args(argv)
    if args.out.is_dir():
        raise UsageError(f"--out must be a file path, got the directory {args.out}")
    try:
        info = build_prose(args.out, CORPORA[args.corpus])
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        raise UsageError(str(exc)) from None
    pkgs = ", ".join(f"{p} {v}" for p, v in info["packages"].items())
    print(f"wrote {info['path']}: {info['bytes']:,} bytes, sha256 {info['sha256']} ({pkgs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
