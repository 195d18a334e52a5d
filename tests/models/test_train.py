"""Training: loss falls, resume is exact, 2-process DDP (gloo) runs."""
import json
import os
import subprocess
import sys

import pytest

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
