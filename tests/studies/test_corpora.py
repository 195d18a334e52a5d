"""The corpus builder: HTML -> prose blocks, class-skipped subtrees, the tree walk with dedupe and
excluded directories, and its CLI (no network: the download step is replaced or made to fail)."""
from pathlib import Path

import pytest

from fsn_studies import corpora
from fsn_studies.corpora import ProseSource, html_blocks, prose_from_tree

PAGE = """<html><head><title>Ignored title in head</title><style>p {color: red}</style></head>
<body><nav>Home &gt; Chapter</nav>
<h2>A heading that is long enough to be kept as a block</h2>
<p>First paragraph, with <code>inline code</code> and an entity &amp; a
line break kept as one line of text.</p>
<pre>$ apt-get install something
this is a code block and must go</pre>
<table><tr><td>a table cell that is long enough but sits in a table</td></tr></table>
<ul><li>A list item that says something in plain English words.</li></ul>
<p>short</p>
</body></html>"""


def test_html_blocks_keep_prose_and_drop_code_tables_and_navigation():
    blocks = html_blocks(PAGE)
    assert "A heading that is long enough to be kept as a block" in blocks
    assert ("First paragraph, with inline code and an entity & a line break kept as one line of text."
            in blocks)
    assert "A list item that says something in plain English words." in blocks
    text = "\n".join(blocks)
    for dropped in ("apt-get install", "table cell", "Home", "color", "Ignored title"):
        assert dropped not in text


def test_prose_from_tree_filters_short_blocks_and_dedupes_across_pages(tmp_path):
    pages = tmp_path / "doc"
    pages.mkdir()
    (pages / "a.html").write_text(PAGE, encoding="utf-8")
    (pages / "b.html").write_text(PAGE + "<p>Only on the second page, and long enough to stay.</p>",
                                  encoding="utf-8")
    text = prose_from_tree(tmp_path, (ProseSource("pkg", "doc/*.html"),))
    lines = text.splitlines()
    assert len(lines) == len(set(lines)) == 4
    assert lines[-1] == "Only on the second page, and long enough to stay."
    assert all(len(line) >= corpora.MIN_BLOCK_CHARS for line in lines)
    assert text.endswith("\n")


def test_cli_missing_tools_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)
    _exits(2, ["prose", "--out", str(tmp_path / "p.txt")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "apt-get and dpkg-deb" in err
    assert not (tmp_path / "p.txt").exists()


def test_cli_download_failure_and_directory_out(tmp_path, monkeypatch, capsys):
    def failing(workdir, packages):
        raise RuntimeError("apt-get download debian-handbook failed: E: Unable to locate package")

    monkeypatch.setattr(corpora.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(corpora, "_download_and_unpack", failing)
    _exits(2, ["prose", "--out", str(tmp_path / "p.txt")])
    assert "Unable to locate package" in capsys.readouterr().err
    _exits(2, ["prose", "--out", str(tmp_path)])
    assert "must be a file path" in capsys.readouterr().err


def _exits(code, argv):
    with pytest.raises(SystemExit) as exc:
        corpora.main(argv)
    assert exc.value.code == code


def _fake_download(workdir, packages):
    root = Path(workdir) / "root" / "doc"
    root.mkdir(parents=True)
    (root / "a.html").write_text(PAGE, encoding="utf-8")
    return {p: "1.0" for p in packages}


def test_a_full_disk_leaves_no_file_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import errno

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(corpora.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(corpora, "_download_and_unpack", _fake_download)
    monkeypatch.setattr(corpora, "CORPORA", {"prose": (ProseSource("pkg", "doc/*.html"),)})
    monkeypatch.setattr(Path, "write_bytes", full)
    _exits(1, ["prose", "--out", str(tmp_path / "p.txt")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left" in err and str(tmp_path / "p.txt") in err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(workdir, packages):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpora.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(corpora, "_download_and_unpack", interrupted)
    _exits(130, ["prose", "--out", str(tmp_path / "p.txt")])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_build_prose_writes_file_and_provenance(tmp_path, monkeypatch):
    def fake(workdir, packages):
        root = Path(workdir) / "root" / "doc"
        root.mkdir(parents=True)
        (root / "a.html").write_text(PAGE, encoding="utf-8")
        return {p: "1.0" for p in packages}

    monkeypatch.setattr(corpora.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(corpora, "_download_and_unpack", fake)
    out = tmp_path / "sub" / "prose.txt"
    info = corpora.build_prose(out, (ProseSource("pkg", "doc/*.html"),))
    data = out.read_bytes()
    assert info["bytes"] == len(data) > 0 and info["packages"] == {"pkg": "1.0"}
    import hashlib
    assert info["sha256"] == hashlib.sha256(data).hexdigest()


SPHINX_PAGE = """<html><body><div class="body">
<h1>Memory management overview<a class="headerlink" href="#mm" title="Permalink">¶</a></h1>
<dl class="c function"><dt class="sig">int <span>alloc_pages_exact</span>(size_t size)</dt>
<dd><p>Allocates pages; the API description goes with its declaration.</p>
<dl class="simple"><dt>size</dt><dd><p>the number of bytes to allocate, a nested list</p></dd></dl>
</dd></dl>
<p>A paragraph after the declaration is prose and has to be kept.</p>
</div></body></html>"""


def test_skip_classes_drop_whole_subtrees_and_nothing_else():
    kept = html_blocks(SPHINX_PAGE, frozenset({"headerlink", "c"}))
    assert kept == ["Memory management overview",
                    "A paragraph after the declaration is prose and has to be kept."]
    plain = "\n".join(html_blocks(SPHINX_PAGE))
    for text in ("\u00b6", "alloc_pages_exact", "nested list", "has to be kept"):
        assert text in plain


def test_pages_leave_out_excluded_directories(tmp_path):
    for rel in ("html/a.html", "html/mm/b.html", "html/translations/zh_CN/c.html",
                "html/mm/translations.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("<p>x</p>", encoding="utf-8")
    source = ProseSource("pkg", "html/**/*.html", exclude=("translations",))
    assert [p.relative_to(tmp_path).as_posix() for p in source.pages(tmp_path)] == [
        "html/a.html", "html/mm/b.html", "html/mm/translations.html"]


def test_cli_builds_kernel_docs_from_its_sources(tmp_path, monkeypatch, capsys):
    def fake(workdir, packages):
        assert packages == [s.package for s in corpora.KERNEL_DOC_SOURCES]
        html = Path(workdir) / "root" / "usr/share/doc/linux-doc-6.1/html"
        (html / "translations" / "it_IT").mkdir(parents=True)
        (html / "mm.html").write_text(SPHINX_PAGE, encoding="utf-8")
        (html / "translations" / "it_IT" / "mm.html").write_text(
            "<p>Una pagina tradotta che non deve entrare nel corpus inglese.</p>", encoding="utf-8")
        return {p: "6.1" for p in packages}

    monkeypatch.setattr(corpora.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(corpora, "_download_and_unpack", fake)
    out = tmp_path / "kernel-docs.txt"
    assert corpora.main(["kernel-docs", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (
        "A paragraph after the declaration is prose and has to be kept.\n")
    assert "linux-doc-6.1 6.1" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["poetry", "--out", "x"], ["prose"]])
def test_cli_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        corpora.main(argv)
    assert exc.value.code == 2
