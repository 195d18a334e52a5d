"""Nothing lost, nothing silently wrong: one run per directory, a run knows its corpus,
faults (no space, permission denied, Ctrl-C at start-up, out of memory) named in one line,
every flag checked before any work, a finished resume that says so."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import fsn_cli
from fsn_model import checkpoint as checkpoint_mod
from fsn_model import copy_depth, evaluate, generate
from fsn_model import data as data_mod
from fsn_model import train as train_mod
from fsn_model.run_lock import LOCK_NAME, RunLock
from fsn_model.train import TrainConfig, train
from fsn_studies import compare, sweep

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(model="fsn", params="30k", batch_size=4, seq_len=16, eval_windows=2, progress=False,
            model_overrides={"n_layers": 1})
TINY_FLAGS = ["--params", "30k", "--batch-size", "4", "--seq-len", "16", "--eval-windows", "2", "--no-progress",
              "--sample", "0", "--model-overrides", "n_layers=1"]


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory):
    """A finished 2-step run: its directory."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(TrainConfig(**TINY, data=corpus, steps=2, eval_every=2, out=str(out)))
    return out




# --- one run per directory ------------------------------------------------------------------

def test_a_run_into_a_directory_another_run_holds_is_refused_naming_both(corpus, tmp_path, monkeypatch,
                                                                         forbid_training, one_line_error):
    out = tmp_path / "run"
    out.mkdir()
    forbid_training(monkeypatch)
    with RunLock(out):
        err = one_line_error(train_mod.main, ["--data", corpus, "--out", str(out), "--steps", "2"] + TINY_FLAGS)
    assert str(out) in err and f"pid {os.getpid()}" in err and "in use by another run" in err
    assert not (out / LOCK_NAME).exists()  # the holder released it and removed its file


def test_the_lock_is_released_on_every_exit(corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(TrainConfig(**TINY, data=corpus, steps=2, eval_every=2, out=str(out)))
    assert not (out / LOCK_NAME).exists()
    with monkeypatch.context() as m:  # a run that fails mid-way releases it too
        m.setattr(train_mod, "bits_per_byte", lambda *a, **k: float("nan"))
        with pytest.raises(train_mod.NonFiniteLossError):
            train(TrainConfig(**TINY, data=corpus, steps=2, eval_every=1, out=str(out), overwrite=True))
    RunLock(out).acquire().release()


def test_a_sweep_into_a_run_directory_in_use_is_refused(corpus, tmp_path, one_line_error):
    argv = ["--trial", "fsn:n_layers=1", "--params", "30k", "--steps", "1", "--batch-size", "2", "--seq-len", "16",
            "--eval-windows", "2", "--copy-windows", "0", "--device", "cpu", "--data", corpus,
            "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    a = sweep._parser().parse_args(argv)
    run_dir = sweep.plan_runs(a, sweep._plan(a), data_mod.load_corpus(corpus).sha256)[0].directory(tmp_path / "runs")
    run_dir.mkdir(parents=True)
    with RunLock(run_dir):
        err = one_line_error(sweep.main, argv)
    assert str(run_dir) in err and "in use" in err


@pytest.mark.slow
def test_two_processes_one_directory_and_a_killed_holder_is_stale(corpus, tmp_path, one_line_error):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fsn_model.train", "--data", corpus, "--out", str(out), "--steps", "100000",
           "--eval-every", "100000", "--device", "cpu"] + TINY_FLAGS
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert "fsn-train: training" in proc.stdout.readline()
        err = one_line_error(train_mod.main, ["--data", corpus, "--out", str(out), "--steps", "2", "--overwrite"]
                        + TINY_FLAGS)
        assert str(out) in err and f"pid {proc.pid}" in err
        proc.kill()  # kill -9: no clean release; the lock file stays behind
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert (out / LOCK_NAME).exists()
    assert train_mod.main(["--data", corpus, "--out", str(out), "--steps", "2", "--eval-every", "2", "--overwrite"]
                          + TINY_FLAGS) == 0


# --- a run knows its corpus -----------------------------------------------------------------

def test_a_relative_data_path_is_stored_resolved_and_resume_reads_that_file(corpus, tmp_path, monkeypatch):
    original = Path(corpus).read_bytes()
    for where, payload in (("a", original), ("b", original[::-1])):
        (tmp_path / where / "data").mkdir(parents=True)
        (tmp_path / where / "data" / "corpus.txt").write_bytes(payload)
    out = str(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "a")
    train(TrainConfig(**TINY, data="data/corpus.txt", steps=4, eval_every=2, stop_at=2, out=out))
    monkeypatch.chdir(tmp_path / "b")  # here data/corpus.txt is another file
    log = train(train_mod.resume_config(out, stop_at=4))
    expected = str((tmp_path / "a" / "data" / "corpus.txt").resolve())
    assert log["train_config"]["data"] == expected and log["corpus"]["path"] == expected
    assert len(log["train"]) == 4 and "corpus_history" not in log


def test_resume_refuses_a_changed_corpus_naming_both_hashes_unless_allowed(corpus, tmp_path, monkeypatch,
                                                                           forbid_training, one_line_error):
    data = tmp_path / "corpus.txt"
    data.write_bytes(Path(corpus).read_bytes())
    out = str(tmp_path / "run")
    train(TrainConfig(**TINY, data=str(data), steps=4, eval_every=2, stop_at=2, out=out))
    old = data_mod.sha256_file(data)
    data.write_bytes(Path(corpus).read_bytes()[::-1])
    new = data_mod.sha256_file(data)
    with monkeypatch.context() as m:
        forbid_training(m)
        err = one_line_error(train_mod.main, ["--resume", "--out", out, "--stop-at", "4"])
    assert old in err and new in err and "--allow-different-data" in err
    assert train_mod.main(["--resume", "--out", out, "--stop-at", "4", "--allow-different-data", "--sample",
                           "0"]) == 0
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["corpus"]["sha256"] == new and log["corpus_history"][0]["sha256"] == old
    assert log["corpus_history"][0]["until_step"] == 2 and len(log["train"]) == 4


@pytest.mark.parametrize("tool", ["eval", "copy-depth"])
def test_eval_and_copy_depth_refuse_another_corpus_unless_allowed(finished, corpus, tmp_path, tool, capsys,
                                                                  one_line_error):
    other = tmp_path / "other.txt"
    other.write_bytes(Path(corpus).read_bytes()[::-1])
    ckpt = str(finished / "checkpoint.pt")
    fn, extra = ((evaluate.main, ["--windows", "2"]) if tool == "eval" else
                 (copy_depth.main, ["--windows", "2", "--out", str(tmp_path / "cd.png")]))
    err = one_line_error(fn, [ckpt, "--data", str(other)] + extra)
    assert data_mod.sha256_file(other) in err and data_mod.sha256_file(Path(corpus)) in err
    assert fn([ckpt, "--data", str(other), "--allow-different-data"] + extra) == 0
    assert fn([ckpt] + extra) == 0  # the recorded corpus by default
    capsys.readouterr()


# --- faults: no space, permission denied, out of memory, Ctrl-C at start-up -----------------

@pytest.mark.parametrize("fault", ["ENOSPC", "torch short write"])
def test_no_space_for_a_checkpoint_is_one_line_and_keeps_the_last_good_one(corpus, tmp_path, monkeypatch, fault,
                                                                           one_line_error):
    out = tmp_path / "run"
    real_save = torch.save
    saves = []

    def save_fills_the_disk(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) < 2:
            return real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        if fault == "ENOSPC":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 273408 vs 273296")

    monkeypatch.setattr(checkpoint_mod.torch, "save", save_fills_the_disk)
    monkeypatch.setattr(checkpoint_mod.shutil, "disk_usage", lambda p: SimpleNamespace(free=4096))
    err = one_line_error(train_mod.main, ["--data", corpus, "--out", str(out), "--steps", "4", "--eval-every", "2"]
                    + TINY_FLAGS, code=1)
    assert "no space left on device" in err and str(out / "checkpoint.pt") in err and "kept" in err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not list(out.glob("*.tmp*")) and not (out / LOCK_NAME).exists()


def _deny(monkeypatch, path):
    """Opening ``path`` in fsn_model.data fails as for a file without read permission."""
    real_open = open

    def guarded(file, *args, **kwargs):
        if Path(file).resolve() == Path(path).resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(data_mod, "open", guarded, raising=False)


def test_an_unreadable_data_file_is_one_line_in_train_and_eval(finished, corpus, tmp_path, monkeypatch, one_line_error):
    _deny(monkeypatch, corpus)
    err = one_line_error(train_mod.main, ["--data", corpus, "--out", str(tmp_path / "run")] + TINY_FLAGS)
    assert "not readable (permission denied)" in err and corpus in err
    assert not (tmp_path / "run").exists()
    err = one_line_error(evaluate.main, [str(finished / "checkpoint.pt"), "--data", corpus])
    assert "not readable (permission denied)" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a chmod 000 file anyway; "
                    "the monkeypatched test above covers the same path")
def test_a_chmod_000_data_file_is_one_line(corpus, tmp_path, one_line_error):
    data = tmp_path / "locked.txt"
    data.write_bytes(Path(corpus).read_bytes())
    data.chmod(0)
    err = one_line_error(train_mod.main, ["--data", str(data), "--out", str(tmp_path / "run")] + TINY_FLAGS)
    assert "permission denied" in err


def test_out_of_memory_while_generating_is_one_line(finished, monkeypatch, one_line_error):
    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4000000000000 bytes. Error code 12 (Cannot allocate memory)")
    monkeypatch.setattr(generate, "sample", oom)
    err = one_line_error(generate.main, [str(finished / "checkpoint.pt"), "--length", "50"], code=1)
    assert "out of memory" in err and "--length" in err


def test_ctrl_c_during_the_imports_is_one_line_and_130_in_process(monkeypatch, capsys):
    def interrupted(name):
        raise KeyboardInterrupt
    monkeypatch.setattr(fsn_cli.importlib, "import_module", interrupted)
    for entry, prog in ((fsn_cli.train, "fsn-train"), (fsn_cli.generate, "fsn-generate")):
        assert entry() == 130
        assert capsys.readouterr().err == f"{prog}: interrupted\n"


@pytest.mark.slow
def test_ctrl_c_during_the_imports_is_one_line_and_130():
    """A real SIGINT, sent while the tool's own module is being imported (a finder sends it, so the
    moment is fixed), with Python's own SIGINT handler: a test run started in the background
    inherits SIGINT ignored, and Python then keeps ignoring it."""
    code = ("import os, signal, sys; sys.path.insert(0, sys.argv[1]); import fsn_cli\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "class SendSigint:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'fsn_model.train':\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "        return None\n"
            "sys.meta_path.insert(0, SendSigint())\n"
            "sys.argv = ['fsn-train', '--steps', '1']\n"
            "sys.exit(fsn_cli.train())\n")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 130 and r.stderr == "fsn-train: interrupted\n", r.stderr[-2000:]


def test_console_scripts_point_at_the_light_module():
    setup = (ROOT / "setup.py").read_text()
    for name in ("train", "evaluate", "generate", "copy_depth", "compare", "sweep"):
        assert f"=fsn_cli:{name}\"" in setup and callable(getattr(fsn_cli, name))
    light = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import fsn_cli; "
                            "print('torch' in sys.modules)", str(ROOT)], capture_output=True, text=True, timeout=60)
    assert light.stdout.strip() == "False", light.stderr


# --- every flag checked before any work; nothing left behind --------------------------------

@pytest.mark.parametrize("argv,word", [
    (["--seed", "-1"], "seed"),
    (["--warmup", "-2"], "warmup"),
    (["--model-overrides", "no_such_knob=1"], "no_such_knob"),
    (["--model-overrides", "n_layers"], "--model-overrides"),
    (["--params", "lots"], "params"),
])
def test_a_bad_flag_is_named_before_any_work_and_out_is_not_created(corpus, tmp_path, monkeypatch, argv, word,
                                                                    forbid_training, one_line_error):
    forbid_training(monkeypatch)
    out = tmp_path / "never"
    err = one_line_error(train_mod.main, ["--data", corpus, "--out", str(out), "--no-progress"] + argv)
    assert word in err
    assert not out.exists()


def test_a_missing_data_file_leaves_no_out_directory(tmp_path, one_line_error):
    out = tmp_path / "never"
    err = one_line_error(train_mod.main, ["--data", str(tmp_path / "missing.txt"), "--out", str(out)])
    assert "not found" in err and not out.exists()


@pytest.mark.parametrize("fn,argv,word", [
    (compare.main, ["--seeds", "-1"], "--seeds"),
    (compare.main, ["--seeds", "a,b"], "--seeds"),
    (sweep.main, ["--trial", "fsn", "--seeds", "-1"], "--seeds"),
    (compare.main, ["--steps", "0"], "steps"),
    (sweep.main, ["--trial", "fsn", "--lr", "-1"], "lr"),
])
def test_compare_and_sweep_check_every_setting_before_the_first_run(fn, argv, word, tmp_path, monkeypatch,
                                                                    forbid_training, one_line_error):
    forbid_training(monkeypatch)
    err = one_line_error(fn, argv + ["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert word in err
    assert not (tmp_path / "runs").exists()


def test_generate_refuses_a_length_its_caches_cannot_hold(finished, one_line_error):
    err = one_line_error(generate.main, [str(finished / "checkpoint.pt"), "--length", "1000000000000"])
    assert "--length 1000000000000" in err and "GiB" in err


def test_a_tiny_temperature_is_greedy_not_nan(finished):
    from fsn_model.checkpoint import load_model
    from fsn_model.generate import sample

    model, _ = load_model(str(finished / "checkpoint.pt"))
    prompt = list(b"def ")
    greedy = sample(model, prompt, 12, temperature=0)
    for t in (1e-40, 1e-300, 5e-324):
        assert sample(model, prompt, 12, temperature=t, seed=3) == greedy
    assert len(sample(model, prompt, 12, temperature=1e300)) == 12  # huge: uniform, still finite


def test_generate_takes_a_non_utf8_prompt_as_bytes(finished, capsys):
    from fsn_model.checkpoint import load_model
    from fsn_model.generate import sample

    raw = b"\xff\xfedef "
    assert generate.main([str(finished / "checkpoint.pt"), "--prompt", os.fsdecode(raw), "--length", "6",
                          "--temperature", "0"]) == 0
    model, _ = load_model(str(finished / "checkpoint.pt"))
    expected = (raw + bytes(sample(model, list(raw), 6, temperature=0))).decode("utf-8", errors="replace")
    assert capsys.readouterr().out == expected + "\n"


def test_an_empty_checkpoint_gives_a_reason(tmp_path, one_line_error):
    empty = tmp_path / "checkpoint.pt"
    empty.write_bytes(b"")
    err = one_line_error(evaluate.main, [str(empty)])
    assert f"cannot read checkpoint {empty}: the file is empty" in err


# --- a resume with nothing left to run says so ----------------------------------------------

def test_resuming_a_run_stopped_by_stop_at_says_what_to_pass(corpus, tmp_path, monkeypatch, capsys, forbid_training):
    out = str(tmp_path / "s1")
    assert train_mod.main(["--data", corpus, "--out", out, "--steps", "6", "--eval-every", "2", "--stop-at", "2"]
                          + TINY_FLAGS) == 0
    capsys.readouterr()
    forbid_training(monkeypatch)
    assert train_mod.main(["--resume", "--out", out, "--sample", "0"]) == 0
    printed = capsys.readouterr().out
    assert "already stopped at step 2" in printed and "--stop-at" in printed and "fsn-train: resuming" not in printed


def test_resuming_a_finished_run_says_it_is_complete(finished, monkeypatch, capsys, forbid_training):
    forbid_training(monkeypatch)
    assert train_mod.main(["--resume", "--out", str(finished), "--sample", "0"]) == 0
    printed = capsys.readouterr().out
    assert "already complete (2 of 2 steps)" in printed and "--steps" in printed
    assert "final val bits/byte" in printed
