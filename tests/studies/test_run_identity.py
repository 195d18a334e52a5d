"""Study runs can never be mislabelled: a run directory is named and checked by everything that
changes what it trains; finished runs are read back, never replaced; repeats are refused; a
results file belongs to one set of shared settings; files are written whole; Ctrl-C, a NaN loss
and an unwritable --out are one line each."""
import errno
import json
import os
import pathlib
import signal
import sysconfig
from pathlib import Path

import pytest
import torch

from fsn_model import train as train_mod
from fsn_model.data import load_corpus
from fsn_studies import compare, sweep
from fsn_studies.runs import IDENTITY_NAME, run_id, run_identity

SMALL = ["--params", "30k", "--steps", "2", "--eval-every", "1", "--eval-windows", "2", "--device", "cpu",
         "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops; OpenMP spin-waiting on a shared machine costs more than it gains
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes((Path(sysconfig.get_paths()["stdlib"]) / "typing.py").read_bytes()[:60_000])
    return str(path)


def _sweep_argv(tmp_path, data, *extra, trials=("fsn:n_layers=1",)):
    argv = SMALL + ["--data", data, "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"),
                    "--copy-windows", "0", "--batch-size", "2", "--seq-len", "16"] + list(extra)
    for t in trials:
        argv += ["--trial", t]
    return argv


def _compare_argv(tmp_path, data, *extra):
    return SMALL + ["--data", data, "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"),
                    "--models", "transformer", "--ablations", "none", "--seeds", "0", "--copy-windows", "0",
                    "--batch-size", "2", "--seq-len", "16"] + list(extra)



def _results(out: Path):
    (path,) = out.glob("*.json")
    return json.loads(path.read_text())



def _interrupt_at(monkeypatch, at_step):
    """SIGINT to this process when the batch of ``at_step`` is drawn (the run stops after that step)."""
    real = train_mod.get_batch

    def batch(data, batch_size, seq_len, seed, step, rank=0):
        if step == at_step:
            os.kill(os.getpid(), signal.SIGINT)
        return real(data, batch_size, seq_len, seed, step, rank)
    monkeypatch.setattr(train_mod, "get_batch", batch)


# --- 1. a run directory is its settings ------------------------------------------------------

def test_a_sweep_with_other_batch_and_windows_trains_its_own_runs(tmp_path, data, capsys):
    assert sweep.main(_sweep_argv(tmp_path, data)) == 0
    capsys.readouterr()
    assert sweep.main(_sweep_argv(tmp_path, data, "--batch-size", "8", "--seq-len", "32", "--eval-windows", "4",
                                  "--out", str(tmp_path / "out2"))) == 0
    assert "read back" not in capsys.readouterr().out
    (run,) = _results(tmp_path / "out2")["runs"]
    assert run["tokens"] == 2 * 8 * 32
    log = json.loads((Path(run["run_dir"]) / "log.json").read_text())
    assert (log["train_config"]["batch_size"], log["train_config"]["seq_len"],
            log["train_config"]["eval_windows"]) == (8, 32, 4)
    assert len(list((tmp_path / "runs").iterdir())) == 2
    stored = json.loads((Path(run["run_dir"]) / IDENTITY_NAME).read_text())
    assert stored["training"]["batch_size"] == 8 and run_id(stored) == run["run_id"]


def test_a_directory_holding_a_run_of_other_settings_is_refused_not_read_back(tmp_path, data, one_line_error):
    assert sweep.main(_sweep_argv(tmp_path, data)) == 0
    (first,) = (tmp_path / "runs").iterdir()
    argv = _sweep_argv(tmp_path, data, "--batch-size", "8")
    a = sweep._parser().parse_args(argv)
    target = sweep.plan_runs(a, sweep._plan(a), load_corpus(data).sha256)[0].directory(tmp_path / "runs")
    first.rename(target)  # the batch-2 run where the batch-8 run belongs
    ckpt = (target / "checkpoint.pt").stat().st_mtime_ns
    for planted in ("identity", "log"):  # checked in identity.json and in what the run recorded
        if planted == "log":
            wanted = run_identity(sweep._config(a, sweep._plan(a)[0]), load_corpus(data).sha256)
            (target / IDENTITY_NAME).write_text(json.dumps(wanted))
        err = one_line_error(sweep.main, argv, 2)
        assert str(target) in err and "other settings" in err and "batch_size" in err
    assert (target / "checkpoint.pt").stat().st_mtime_ns == ckpt


def test_the_identity_holds_every_training_setting_and_exact_floats(data):
    sha = load_corpus(data).sha256
    base = train_mod.TrainConfig(model="fsn", params="30k", model_overrides={"n_layers": 1})
    same = run_id(run_identity(base, sha))
    assert run_id(run_identity(train_mod.TrainConfig(model="fsn", params=30_000, model_overrides={"n_layers": 1},
                                                     device="cpu", out="elsewhere", progress=False), sha)) == same
    import dataclasses
    for change in (dict(lr=0.0120000001), dict(batch_size=8), dict(seq_len=32), dict(eval_windows=4),
                   dict(eval_every=7), dict(steps=3), dict(seed=1), dict(warmup=9),
                   dict(model_overrides={"n_layers": 1, "k1_init": 1.0})):
        assert run_id(run_identity(dataclasses.replace(base, **change), sha)) != same, change
    assert run_id(run_identity(base, "0" * 64)) != same


# --- 2. repeats refused before anything trains; distinct floats are distinct runs -------------

@pytest.mark.parametrize("tool,extra", [
    ("sweep", ["--trial", "fsn", "--trial", "fsn"]),
    ("sweep", ["--trial", "fsn", "--trial", "fsn:lr=0.012"]),  # the default lr spelled out: the same run
    ("sweep", ["--trial", "fsn", "--seeds", "1,1"]),
    ("compare", ["--models", "fsn,fsn"]),
    ("compare", ["--seeds", "1,1"]),
    ("compare", ["--transformer-lrs", "6e-3,0.006"]),
])
def test_a_repeated_trial_model_or_seed_is_refused_before_training(tool, extra, tmp_path, data, monkeypatch,
                                                                   forbid_training, one_line_error):
    forbid_training(monkeypatch)
    if tool == "sweep":
        argv, fn = _sweep_argv(tmp_path, data, *extra, trials=()), sweep.main
    else:
        argv, fn = _compare_argv(tmp_path, data, *extra), compare.main
    err = one_line_error(fn, argv, 2)
    assert "twice" in err or "same run" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_nearly_equal_learning_rates_are_two_runs(tmp_path, data):
    a = sweep._parser().parse_args(_sweep_argv(tmp_path, data, trials=("fsn:lr=0.012", "fsn:lr=0.0120000001")))
    plan = sweep._plan(a)
    runs = sweep.plan_runs(a, plan, load_corpus(data).sha256)
    assert runs[0].directory(tmp_path) != runs[1].directory(tmp_path)
    assert plan[0]["trial"] != plan[1]["trial"]


def test_a_bool_is_not_a_number(tmp_path, data, monkeypatch, forbid_training, one_line_error):
    forbid_training(monkeypatch)
    err = one_line_error(sweep.main, _sweep_argv(tmp_path, data, trials=("fsn:lr=true",)), 2)
    assert "lr takes a number, got true" in err
    err = one_line_error(train_mod.main, ["--data", data, "--out", str(tmp_path / "t"), "--no-progress",
                                     "--model-overrides", "k1_init=true"], 2)
    assert "k1_init takes a number" in err
    err = one_line_error(train_mod.main, ["--data", data, "--out", str(tmp_path / "t"), "--no-progress",
                                     "--model-overrides", "delay=1"], 2)
    assert "delay takes true or false" in err


# --- 3, 4, 7. finished runs are never destroyed; Ctrl-C and NaN are one line -------------------

def test_compare_ctrl_c_saves_says_how_to_continue_and_the_rerun_resumes(tmp_path, data, monkeypatch, one_line_error):
    argv = _compare_argv(tmp_path, data, "--steps", "4")
    with monkeypatch.context() as m:
        _interrupt_at(m, 1)
        err = one_line_error(compare.main, argv, 130)
    assert "interrupted" in err and "stopped at step 2 of 4" in err and "run the same command again" in err
    assert "--resume" not in err
    steps = []
    real = train_mod.get_batch
    monkeypatch.setattr(train_mod, "get_batch", lambda d, b, s, seed, step, rank=0: steps.append(step) or
                        real(d, b, s, seed, step, rank))
    assert compare.main(argv) == 0
    assert steps == [2, 3]  # resumed, not retrained from step 0
    (run,) = _results(tmp_path / "out")["runs"]
    assert [c[0] for c in run["curve"]] == [32, 64, 96, 128]


def test_sweep_ctrl_c_is_one_line_and_exit_130(tmp_path, data, monkeypatch, one_line_error):
    _interrupt_at(monkeypatch, 0)
    err = one_line_error(sweep.main, _sweep_argv(tmp_path, data), 130)
    assert err.startswith("fsn-sweep: interrupted") and "run the same command again" in err


def test_a_diverged_run_is_named_in_one_line_with_a_flag_to_change(tmp_path, data, monkeypatch, one_line_error):
    monkeypatch.setattr(train_mod, "bits_per_byte", lambda *a, **k: float("nan"))
    err = one_line_error(sweep.main, _sweep_argv(tmp_path, data, trials=("fsn:n_layers=1",)), 1)
    assert "fsn lr=0.012 n_layers=1 seed 0 diverged" in err and "--trial" in err
    assert str(tmp_path / "runs") in err and "--resume" not in err
    err = one_line_error(compare.main, _compare_argv(tmp_path, data), 1)
    assert "diverged" in err and "--transformer-lrs" in err


def test_compares_sharing_runs_dir_feed_tables_only_from_their_own_finished_runs(tmp_path, data, monkeypatch,
                                                                                 one_line_error):
    with monkeypatch.context() as m:  # a compare of 4 steps, stopped half-way, leaves a started run
        _interrupt_at(m, 1)
        one_line_error(compare.main, _compare_argv(tmp_path, data, "--steps", "4"), 130)
    (started,) = (tmp_path / "runs").iterdir()
    assert compare.main(_compare_argv(tmp_path, data, "--steps", "2", "--copy-windows", "2")) == 0
    doc = _results(tmp_path / "out")
    (ckpt,) = doc["copy_depth"]["checkpoints"].values()
    assert Path(ckpt).parent != started
    log = json.loads((Path(ckpt).parent / "log.json").read_text())
    assert log["train_config"]["steps"] == 2 and log["val"][-1]["step"] == 2
    assert json.loads((started / "log.json").read_text())["train"][-1]["step"] == 1  # left as it was


# --- 5. one results file per set of shared settings ------------------------------------------

def test_sweeps_into_one_out_merge_by_settings_and_never_count_a_seed_twice(tmp_path, data):
    assert sweep.main(_sweep_argv(tmp_path, data, trials=("fsn:n_layers=1",))) == 0
    assert sweep.main(_sweep_argv(tmp_path, data, trials=("transformer:n_layers=1",))) == 0
    assert sweep.main(_sweep_argv(tmp_path, data, trials=("fsn:n_layers=1",))) == 0  # read back, not doubled
    doc = _results(tmp_path / "out")
    assert sorted(r["model"] for r in doc["runs"]) == ["fsn", "transformer"]
    assert all(s["seeds"] == [0] for s in doc["summary"].values())
    assert sweep.main(_sweep_argv(tmp_path, data, "--seq-len", "32", trials=("fsn:n_layers=1",))) == 0
    assert len(list((tmp_path / "out").glob("*.json"))) == 2  # other settings: another file


def test_a_named_results_file_of_other_settings_is_refused_before_training(tmp_path, data, monkeypatch,
                                                                           forbid_training, one_line_error):
    assert sweep.main(_sweep_argv(tmp_path, data, "--name", "study")) == 0
    forbid_training(monkeypatch)
    err = one_line_error(sweep.main, _sweep_argv(tmp_path, data, "--name", "study", "--seq-len", "32"), 2)
    assert str(tmp_path / "out" / "study.json") in err and "other settings" in err


# --- 6, 8. whole files or none; --out checked first --------------------------------------------

def test_a_full_disk_keeps_the_previous_results_and_names_the_path(tmp_path, data, monkeypatch, one_line_error):
    argv = _sweep_argv(tmp_path, data, "--name", "study")
    assert sweep.main(argv) == 0
    path = tmp_path / "out" / "study.json"
    before = path.read_bytes()
    real = pathlib.Path.write_text

    def full_disk(self, text, *args, **kwargs):
        if self.parent == tmp_path / "out":
            real(self, text[:4096], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *args, **kwargs)
    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    err = one_line_error(sweep.main, argv, 1)
    assert str(path) in err and "no space left" in err
    assert path.read_bytes() == before and json.loads(before)
    assert [p.name for p in (tmp_path / "out").iterdir() if ".tmp" in p.name] == []


def test_an_unwritable_out_is_refused_before_training(tmp_path, data, monkeypatch, forbid_training, one_line_error):
    forbid_training(monkeypatch)
    for fn, argv in ((sweep.main, _sweep_argv(tmp_path, data)), (compare.main, _compare_argv(tmp_path, data))):
        err = one_line_error(fn, argv + ["--out", "/proc"], 2)  # no file can be made in /proc, even by root
        assert "--out /proc is not a writable directory" in err
