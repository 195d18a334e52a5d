"""Training: loss falls, resume is exact, 2-process DDP (gloo) runs; the run directory is
checked first and never silently overwritten; resume keeps its settings; writes are
atomic; non-finite numbers stop the run; SIGINT saves; one lr and few syncs per step."""
import json
import math
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from fsn_model import build_model
from fsn_model import train as train_mod
from fsn_model.config import config_to_dict
from fsn_model.train import TrainConfig, train

TINY = dict(model="fsn", params="30k", batch_size=8, seq_len=32, eval_windows=4, progress=False,
            model_overrides={"n_layers": 2})


@pytest.fixture
def repetitive(tmp_path):
    f = tmp_path / "rep.txt"
    f.write_bytes(b"the quick brown fox jumps over the lazy dog. " * 400)
    return str(f)


def test_loss_falls_on_repetitive_corpus(repetitive, tmp_path):
    log = train(TrainConfig(**TINY, data=repetitive, steps=40, lr=1e-2, warmup=5, eval_every=40,
                            out=str(tmp_path / "run")))
    losses = [r["loss"] for r in log["train"]]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.5, losses
    assert log["final_val_bpb"] < 5.0
    saved = json.loads((tmp_path / "run" / "log.json").read_text())
    assert saved["corpus"]["sha256"] == log["corpus"]["sha256"] and saved["val"][-1]["step"] == 40
    assert (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("model", ["fsn", "transformer"])
def test_resume_gives_same_next_step_loss(repetitive, tmp_path, model):
    cfg = dict(TINY, model=model, data=repetitive, steps=8, eval_every=100)
    full = train(TrainConfig(**cfg, out=str(tmp_path / "a")))
    part = train(TrainConfig(**cfg, out=str(tmp_path / "b"), stop_at=4))
    assert len(part["train"]) == 4
    resumed = train(TrainConfig(**dict(cfg, steps=8), out=str(tmp_path / "b"), resume=True))
    a = [r["loss"] for r in full["train"]]
    b = [r["loss"] for r in resumed["train"]]
    assert len(b) == 8 and b[:4] == a[:4]
    assert b[4:] == pytest.approx(a[4:], rel=0, abs=1e-6)  # the next step after resume included


@pytest.mark.slow
def test_ddp_two_processes_gloo(repetitive, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fsn_model.train", "--data", repetitive, "--params", "30k", "--steps", "3",
           "--batch-size", "4", "--seq-len", "16", "--eval-windows", "2", "--out", str(out),
           "--no-progress", "--sample", "0", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    log = json.loads((out / "log.json").read_text())
    assert log["world_size"] == 2 and len(log["train"]) == 3
    assert "final val bits/byte" in r.stdout


@pytest.mark.parametrize("stop_at", [0, -1])
def test_stop_at_must_be_positive(repetitive, tmp_path, stop_at):
    with pytest.raises(ValueError, match="stop_at"):
        train(TrainConfig(data=repetitive, steps=3, stop_at=stop_at, out=str(tmp_path), progress=False))


# --- the run directory: checked first, never silently overwritten ---------------------------


def test_a_fresh_run_refuses_a_directory_that_holds_a_run(repetitive, tmp_path, monkeypatch, forbid_training):
    cfg = dict(TINY, data=repetitive, steps=2, eval_every=2, out=str(tmp_path / "run"))
    train(TrainConfig(**cfg))
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with monkeypatch.context() as m:
        forbid_training(m)
        with pytest.raises(ValueError, match="already holds a run.*--resume.*--overwrite"):
            train(TrainConfig(**dict(cfg, seed=1)))
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    log = train(TrainConfig(**dict(cfg, seed=1), overwrite=True))
    assert log["train_config"]["seed"] == 1 and len(log["train"]) == 2


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        train(TrainConfig(**TINY, out=str(tmp_path / "empty"), resume=True))
    assert not (tmp_path / "empty" / "checkpoint.pt").exists()


@pytest.mark.parametrize("kind", ["empty", "existing file", "under a file", "/proc"])
def test_an_unusable_out_fails_before_the_first_step(repetitive, tmp_path, monkeypatch, kind, forbid_training):
    (tmp_path / "file").write_text("x")
    out = {"empty": "", "existing file": str(tmp_path / "file"), "under a file": str(tmp_path / "file" / "run"),
           "/proc": "/proc/fsn-no-such-dir/run"}[kind]
    if kind == "/proc" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc on this system")
    forbid_training(monkeypatch)
    with pytest.raises(ValueError, match="out"):
        train(TrainConfig(**dict(TINY, data=repetitive, steps=2, out=out)))


def test_resume_on_the_command_line_keeps_the_saved_steps(repetitive, tmp_path, capsys):
    out = str(tmp_path / "run")
    common = ["--data", repetitive, "--params", "30k", "--batch-size", "4", "--seq-len", "16", "--eval-windows", "2",
              "--out", out, "--no-progress", "--sample", "0"]
    assert train_mod.main(common + ["--steps", "12", "--stop-at", "4", "--eval-every", "100"]) == 0
    capsys.readouterr()
    assert train_mod.main(["--out", out, "--resume", "--no-progress", "--sample", "0", "--stop-at", "6"]) == 0
    printed = capsys.readouterr().out
    assert "resuming" in printed and "stop_at 4 -> 6" in printed and "steps" not in printed.split("overridden")[-1]
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["train_config"]["steps"] == 12
    saved = TrainConfig(**{k: v for k, v in log["train_config"].items()})
    assert [r["lr"] for r in log["train"]] == [train_mod.lr_at(s, saved) for s in range(6)]
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--out", out, "--resume", "--params", "1M"])
    assert e.value.code == 2 and "params cannot change" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["fsn", "fsn-meanfield", "fsn-paper", "fsn-meanfield-paper", "transformer"])
def test_fsn_train_builds_the_model_build_model_builds_for_each_name(name):
    cfg, _ = train_mod._config_from_args(["--model", name, "--params", "250k"])
    with torch.device("meta"):
        assert train_mod.model_config_of(cfg) == build_model(name, "250k").config


def test_fsn_train_trains_the_paper_model_by_name_or_without_the_projections(repetitive, tmp_path, capsys):
    common = ["--data", repetitive, "--params", "30k", "--batch-size", "2", "--seq-len", "16", "--eval-windows", "2",
              "--steps", "1", "--no-progress", "--sample", "0"]
    assert train_mod.main(common + ["--model", "fsn-paper", "--out", str(tmp_path / "a")]) == 0
    assert train_mod.main(common + ["--model-overrides", "projections=false", "--out", str(tmp_path / "b")]) == 0
    expected = config_to_dict(build_model("fsn-paper", "30k").config)
    for run in ("a", "b"):
        assert json.loads((tmp_path / run / "log.json").read_text())["model_config"] == expected
    assert "fsn-paper" in capsys.readouterr().out


# --- what a run writes: atomic log, no stale temporaries, no non-finite numbers -------------

def test_log_json_is_replaced_atomically(repetitive, tmp_path, monkeypatch):
    """A write that dies before its rename leaves the previous complete log.json."""
    out = tmp_path / "run"
    cfg = TrainConfig(**dict(TINY, data=repetitive, steps=4, eval_every=2, out=str(out)))
    real_replace = os.replace
    saves = []

    def replace_dies_on_second_log(src, dst):
        if str(dst).endswith("log.json"):
            saves.append(dst)
            if len(saves) == 2:
                raise OSError("killed mid-write")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_dies_on_second_log)
    with pytest.raises(OSError, match="killed"):
        train(cfg)
    assert json.loads((out / "log.json").read_text())["val"][-1]["step"] == 2
    assert not list(out.glob("*.tmp*"))


def test_stale_temporaries_are_removed_on_the_next_start(repetitive, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead_pid = 2**22 + 1  # above the default pid_max: never a running process
    for name in (f"checkpoint.pt.tmp{dead_pid}", f"log.json.tmp{dead_pid}"):
        (out / name).write_bytes(b"partial")
    train(TrainConfig(**dict(TINY, data=repetitive, steps=2, eval_every=2, out=str(out))))
    assert not list(out.glob("*.tmp*"))


@pytest.mark.parametrize("field,value", [("lr", math.inf), ("lr", math.nan), ("grad_clip", math.inf),
                                         ("weight_decay", math.nan), ("min_lr_ratio", -1.0)])
def test_non_finite_or_negative_hyper_parameters_are_refused(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        train(TrainConfig(**dict(TINY, out=str(tmp_path)), **{field: value}))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(repetitive, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_cross_entropy = train_mod.F.cross_entropy
    calls = []

    def nan_from_the_sixth_step(*args, **kwargs):
        loss = real_cross_entropy(*args, **kwargs)
        if kwargs.get("reduction") == "none":  # evaluation
            return loss
        calls.append(1)
        return loss * math.nan if len(calls) >= 6 else loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", nan_from_the_sixth_step)
    with pytest.raises(train_mod.NonFiniteLossError, match="step 5: training loss is nan.*last good checkpoint"):
        train(TrainConfig(**dict(TINY, data=repetitive, steps=20, eval_every=4, log_every=1, out=str(out))))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 4
    log = json.loads((out / "log.json").read_text())  # strict JSON: no NaN token
    assert [r["step"] for r in log["train"]] == [0, 1, 2, 3]


# --- the loop: one lr per step, host syncs only at the log interval --------------------------

def test_the_loop_computes_lr_once_per_step_and_syncs_only_when_logging(repetitive, tmp_path, monkeypatch):
    lr_calls, syncs = [], []
    real_lr_at = train_mod.lr_at
    monkeypatch.setattr(train_mod, "lr_at", lambda step, cfg: lr_calls.append(step) or real_lr_at(step, cfg))

    def counting(method):
        real = getattr(torch.Tensor, method)

        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename == train_mod.__file__:  # read back by the training loop
                syncs.append(method)
            return real(self, *args, **kwargs)
        return wrapper

    for method in ("item", "tolist", "__float__"):
        monkeypatch.setattr(torch.Tensor, method, counting(method))
    log = train(TrainConfig(**dict(TINY, data=repetitive, steps=20, eval_every=20, log_every=10,
                                   out=str(tmp_path / "run"))))
    monkeypatch.undo()
    assert lr_calls == list(range(20))
    assert len(log["train"]) == 20 and all(math.isfinite(r["loss"]) for r in log["train"])
    assert syncs == ["tolist", "tolist"]  # one read-back per log interval, none per step


# --- progress and interruption -------------------------------------------------------------

def test_the_progress_bar_shows_on_a_terminal_that_reports_no_size():
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()  # a fresh pty reports 0 columns, as under `script`
    with os.fdopen(slave, "w") as stream:
        bar = train_mod._progress_bar(10, 0, "fsn", True, file=stream)
        bar.update(3)
        bar.refresh()
        bar.close()
        stream.flush()
        shown = b""
        while select.select([master], [], [], 0.5)[0]:
            chunk = os.read(master, 10_000)
            if not chunk:
                break
            shown += chunk
    os.close(master)
    assert b"3/10" in shown


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_prints_one_line_and_exits_130(repetitive, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fsn_model.train", "--data", repetitive, "--params", "30k", "--steps", "100000",
           "--batch-size", "4", "--seq-len", "16", "--eval-windows", "2", "--eval-every", "100000", "--out", str(out),
           "--no-progress", "--sample", "0", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "fsn-train: training" in proc.stdout.readline()
        time.sleep(2)  # some steps run
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "interrupted at step" in err and "Traceback" not in err, err
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step > 0 and f"step {step};" in err
    assert len(json.loads((out / "log.json").read_text())["train"]) == step
