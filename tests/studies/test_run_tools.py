"""The study tools that read run directories: ``record_runs`` (curves of finished and
stopped runs) and ``diagnose_runs`` (loss by position and copy depth, embedding movement)."""
import json
import math

import pytest

from fsn_model.train import TrainConfig, train
from fsn_studies import diagnose_runs, record_runs

TINY = dict(model="fsn", params="30k", batch_size=4, seq_len=32, eval_windows=2, eval_every=4, log_every=1,
            progress=False, model_overrides={"n_layers": 2})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = root / "text.txt"
    data.write_bytes(b"a small corpus of words, repeated and varied: " * 300)
    done = train(TrainConfig(**TINY, data=str(data), steps=8, out=str(root / "done")))
    stopped = train(TrainConfig(**TINY, data=str(data), steps=8, out=str(root / "stopped"), stop_at=6))
    return root, done, stopped


def test_record_of_a_finished_and_a_stopped_run(runs, tmp_path, capsys):
    root, done, stopped = runs
    out = tmp_path / "record.json"
    assert record_runs.main([str(root / "done"), str(root / "stopped"), "--out", str(out), "--train-block", "2",
                             "--path-alias", f"{root}=runs", "--note", "check"]) == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == "run-record" and doc["note"] == "check"
    full, part = doc["runs"]
    assert full["finished"] and full["steps_trained"] == 8
    assert not part["finished"] and part["steps_trained"] == 6
    assert full["run_dir"] == "runs/done" and full["train_config"]["out"] == "runs/done"
    assert full["train_config"]["data"] == "runs/text.txt"
    assert full["val_bits_per_byte"] == [[r["step"], r["bpb"]] for r in done["val"]]
    losses = [r["loss"] for r in stopped["train"]]
    assert [s for s, _ in part["train_bits_per_byte"]] == [2, 4, 6]
    assert part["train_bits_per_byte"][1][1] == pytest.approx((losses[2] + losses[3]) / 2 / math.log(2))
    printed = capsys.readouterr().out
    assert "runs/done: finished" in printed and "runs/stopped: stopped at step 6 of 8" in printed


def test_record_refuses_what_is_not_a_run_directory(tmp_path, capsys):
    assert record_runs.main([str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    assert "expected a run directory holding log.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        record_runs.main([str(tmp_path), "--out", "r.json", "--path-alias", "nonsense"])
    assert stop.value.code == 2
    assert "OLD=NEW" in capsys.readouterr().err


def test_diagnostics_of_a_run(runs, tmp_path):
    root, done, _ = runs
    out = tmp_path / "diag.json"
    assert diagnose_runs.main([str(root / "done"), "--windows", "3", "--out", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["model"] == "fsn" and result["windows"] == 3
    assert list(result["by_position"]) == ["1-4", "5-16", "17-32"]  # cut at the window length, no empty bin
    assert all(math.isfinite(v) for v in result["by_position"].values())
    assert 0 < result["val_bpb"] < 9 and result["embedding"]["moved_rms"] > 0
    assert result["train_bpb_last"] == pytest.approx(done["train"][-1]["loss"] / math.log(2))
