"""Build extra byte corpora from Debian packages: ``python -m fsn_model.corpora prose --out FILE``.

The ``prose`` corpus is English technical prose: the English HTML manuals of eight Debian
packages (``PROSE_SOURCES``: the Debian Administrator's Handbook, the Debian Reference, the
Developer's Reference, Debian Policy, the Securing Debian manual, the New Maintainers' Guide,
the Debian FAQ and the GNU coding and maintainer standards), fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x``. Text is kept from paragraphs, list
items, definitions, titles and admonitions; ``<pre>`` blocks, tables, scripts, styles and
navigation are dropped. Whitespace is collapsed to single spaces, each block becomes one line,
blocks shorter than 40 characters are dropped and exact repeats (the same block in a second
copy of a page, boilerplate) are kept once. The result is UTF-8 text, deterministic for the
package versions listed in the output's provenance line (printed, not written into the file).
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROSE_SOURCES", "ProseSource", "build_prose", "html_blocks", "main"]


@dataclass(frozen=True)
class ProseSource:
    """One Debian package and the glob (relative to its unpacked root) of its English HTML."""

    package: str
    html_glob: str


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

_BLOCK_TAGS = {"p", "li", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "td", "th", "blockquote",
               "div", "title", "caption", "figcaption"}
_SKIP_TAGS = {"pre", "table", "script", "style", "nav", "head", "header", "footer", "noscript",
              "svg", "math", "form", "button", "select"}
_VOID_TAGS = {"br", "img", "hr", "meta", "link", "input", "area", "base", "col", "embed", "source",
              "track", "wbr", "param"}
MIN_BLOCK_CHARS = 40


class _ProseParser(html.parser.HTMLParser):
    """Collects the text of block elements outside skipped subtrees, one string per block."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self._skip_depth = 0
        self._buf: list[str] = []

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        if text:
            self.blocks.append(text)
        self._buf = []

    def handle_starttag(self, tag: str, attrs) -> None:
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
        if tag in _VOID_TAGS:
            return
        if tag in _SKIP_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS and not self._skip_depth:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_blocks(markup: str) -> list[str]:
    """Text blocks of an HTML page (markup str), whitespace-collapsed, in document order."""
    parser = _ProseParser()
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
        for path in sorted(root.glob(source.html_glob)):
            for block in html_blocks(path.read_text(encoding="utf-8", errors="replace")):
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
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_bytes(data)
    tmp_out.replace(out)
    return {"packages": versions, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsn_model.corpora",
        description="Build a byte corpus from Debian packages (needs apt-get and dpkg-deb); "
                    "train on it with --data FILE.")
    parser.add_argument("corpus", choices=["prose"], help="prose: English manuals of "
                        "eight Debian documentation packages (debian-handbook, debian-reference-en, ...)")
    parser.add_argument("--out", required=True, type=Path, help="file to write (UTF-8 text)")
    args = parser.parse_args(argv)
    if args.out.is_dir():
        print(f"error: --out must be a file path, got the directory {args.out}", file=sys.stderr)
        return 2
    try:
        info = build_prose(args.out)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pkgs = ", ".join(f"{p} {v}" for p, v in info["packages"].items())
    print(f"wrote {info['path']}: {info['bytes']:,} bytes, sha256 {info['sha256']} ({pkgs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
