"""The commit a result records is that of the checkout it was run from (the working directory),
not wherever the package is installed; outside a checkout it is None."""
import subprocess

from fsn_model import provenance


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_is_the_working_directorys_checkout(tmp_path, monkeypatch):
    repo = tmp_path / "study"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a")
    monkeypatch.chdir(repo)
    sha = _git(repo, "rev-parse", "HEAD")
    assert provenance.git_commit() == sha
    (repo / "a.txt").write_text("b")
    assert provenance.git_commit() == sha + "-dirty"


def test_git_commit_outside_a_checkout_is_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.git_commit() is None


def test_provenance_assumes_no_source_checkout():
    assert not hasattr(provenance, "REPO_ROOT")
