"""The installed package, as a user gets it: the wheel built from this tree, installed into
a fresh virtual environment (its dependencies seen from this one), and every console script
run from an empty working directory. Each must work there, write its files only under the
working directory (or the folder it is given) and the corpus cache ``$FSN_CACHE``, and
never into site-packages."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("fsn-train", "fsn-eval", "fsn-generate", "fsn-copy-depth", "fsn-compare", "fsn-sweep", "fsn-export")

pytestmark = pytest.mark.slow


def _files(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def _run(venv: Path, cwd: Path, env: dict, *argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, its site-packages) with the wheel of this tree installed, nothing else."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp / "dist").glob("fsn-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=600)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    return venv, site


def test_the_wheel_holds_the_package_and_not_the_studies_results(installed):
    venv, site = installed
    names = {p.parts[0] for p in _files(site)}
    assert {"fsn_kernels", "fsn_model", "fsn_studies", "fsn_cli.py"} <= names
    assert not any("results" in p.parts for p in _files(site / "fsn_studies"))
    assert not (site / "benchmarks").exists() and not (site / "tests").exists()
    for tool in TOOLS:
        assert (venv / "bin" / tool).is_file(), tool


def test_every_console_script_runs_from_an_empty_directory_and_writes_only_there(installed, tmp_path):
    venv, site = installed
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    data = tmp_path / "corpus.txt"
    data.write_bytes((Path(sysconfig.get_paths()["stdlib"]) / "typing.py").read_bytes()[:60_000])
    env = dict(os.environ, FSN_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONPATH="")
    env.pop("PYTHONPATH")
    before = _files(site)

    where = _run(venv, work, env, "python", "-c", "import fsn_model, fsn_kernels, fsn_studies; "
                 "print(fsn_model.__file__, fsn_kernels.__file__, fsn_studies.__file__)").stdout
    assert all(str(site) in path for path in where.split()), where  # the installed copy, not this checkout
    tiny = ["--params", "30k", "--steps", "2", "--batch-size", "2", "--seq-len", "32", "--eval-windows", "2",
            "--data", str(data), "--no-progress"]
    _run(venv, work, env, "fsn-train", *tiny, "--model", "transformer", "--out", "runs/t", "--sample", "8")
    _run(venv, work, env, "fsn-train", *tiny, "--model", "fsn", "--sample", "8")  # default --out: runs/...
    (fsn_ckpt,) = (work / "runs").glob("fsn-*/checkpoint.pt")
    _run(venv, work, env, "fsn-eval", str(fsn_ckpt), "--data", str(data), "--windows", "2")
    _run(venv, work, env, "fsn-generate", str(fsn_ckpt), "--prompt", "def ", "--length", "4")
    _run(venv, work, env, "fsn-copy-depth", str(fsn_ckpt), "runs/t/checkpoint.pt", "--data", str(data),
         "--windows", "2", "--out", "runs/copy-depth.png")
    small = ["--params", "30k", "--seeds", "0", "--steps", "2", "--batch-size", "2", "--seq-len", "32",
             "--eval-every", "2", "--eval-windows", "2", "--copy-windows", "2", "--device", "cpu", "--data",
             str(data), "--no-progress"]
    _run(venv, work, env, "fsn-compare", *small, "--models", "fsn,transformer", "--ablations", "none")
    _run(venv, work, env, "fsn-sweep", *small, "--trial", "fsn", "--trial", "transformer")
    _run(venv, work, env, "fsn-export", str(fsn_ckpt), "hf/fsn")

    assert _files(site) == before, sorted(map(str, _files(site) ^ before))[:20]
    written = {p.parts[0] for p in _files(work)}
    assert written <= {"runs", "hf"}, written
    assert (work / "hf" / "fsn" / "config.json").is_file()
