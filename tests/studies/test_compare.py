"""fsn-compare: one tiny-budget CPU run (every model, both ablations, a two-point
transformer LR sweep, one seed) writes the quality JSON (schema), the learning-curve PNG,
the copy-depth chart and table, into a tmp folder only."""
import json
import math
import sysconfig
from pathlib import Path

import pytest
import torch

from fsn_model import build_model
from fsn_model.config import config_to_dict
from fsn_studies import compare, study

LABELS = {"fsn", "fsn-paper", "fsn-meanfield", "transformer", "fsn-no-delay", "fsn-nh1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    # ~120 kB of the stdlib's typing.py (prose docstrings + code): small, on every machine
    data = tmp / "small.txt"
    data.write_bytes((Path(sysconfig.get_paths()["stdlib"]) / "typing.py").read_bytes()[:120_000])
    out = tmp / "out"
    # one thread: tiny ops gain nothing from more, and on a shared 2-core machine OpenMP
    # spin-waiting turned a 5 ms step into a 1 s one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = compare.main(["--params", "30k", "--seeds", "0", "--steps", "3", "--batch-size", "2", "--seq-len", "32",
                           "--eval-every", "2", "--eval-windows", "4", "--copy-windows", "4", "--device", "cpu",
                           "--data", str(data), "--out", str(out), "--runs-dir", str(tmp / "runs"),
                           "--transformer-lrs", "1e-3,3e-3", "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    (json_path,) = out.glob("quality-small-txt-30k-3steps-*.json")
    return json_path, tmp / "runs"


def test_quality_json_schema(run):
    json_path, _ = run
    doc = json.loads(json_path.read_text())
    assert doc["kind"] == "quality" and doc["corpus"] == "small.txt"
    assert {"device", "corpus", "commit", "runs", "summary", "copy_depth", "settings"} <= set(doc)
    assert {r["model"] for r in doc["runs"]} == LABELS
    assert len(doc["runs"]) == 7  # 5 models + the transformer at 2 learning rates, 1 seed
    for r in doc["runs"]:
        assert {"model", "params", "seed", "tokens", "final_val_bits_per_byte", "curve"} <= set(r)
        assert r["tokens"] == 3 * 2 * 32 and math.isfinite(r["final_val_bits_per_byte"])
        assert [c[0] for c in r["curve"]] == [2 * 64, 3 * 64]
        assert r["curve"][-1][1] == r["final_val_bits_per_byte"]
        assert abs(r["params"] - 30_000) <= 0.02 * 30_000  # same parameter target for all
        log = json.loads((Path(r["run_dir"]) / "log.json").read_text())
        start, stop = log["corpus"]["splits"]["train"]
        assert r["epochs"] == pytest.approx(r["tokens"] / (stop - start))
        last = [t["loss"] for t in log["train"] if t["step"] >= 1]  # eval_every 2: steps 1 and 2
        assert r["final_train_bpb"] == pytest.approx(sum(last) / len(last) / math.log(2))
    assert sorted(r["lr"] for r in doc["runs"] if r["model"] == "transformer") == [1e-3, 3e-3]
    assert sum(s.get("best_lr", False) for s in doc["summary"].values()) == 1
    assert set(doc["copy_depth"]["bins"]) == LABELS


def test_each_run_trains_the_model_its_name_builds(run):
    """The default list keeps the paper's FSN beside the recommended one; the ablations are
    of the recommended FSN (projections kept)."""
    json_path, _ = run
    runs = {r["model"]: r for r in json.loads(json_path.read_text())["runs"]}
    for label, name, overrides in [("fsn", "fsn", {}), ("fsn-paper", "fsn-paper", {}),
                                   ("fsn-meanfield", "fsn-meanfield", {}), ("transformer", "transformer", {}),
                                   ("fsn-no-delay", "fsn", {"delay": False}), ("fsn-nh1", "fsn", {"n_harmonics": 1})]:
        with torch.device("meta"):
            expected = config_to_dict(build_model(name, "30k", **overrides).config)
        assert runs[label]["model_config"] == expected, label
    assert not runs["fsn-paper"]["model_config"]["projections"]
    assert all(runs[label]["model_config"]["projections"] for label in ("fsn", "fsn-no-delay", "fsn-nh1"))


def test_pngs_and_table(run):
    json_path, _ = run
    for suffix in (".png", "-copy-depth.png"):
        assert json_path.with_name(json_path.stem + suffix).stat().st_size > 1000
    assert "| bin |" in json_path.with_suffix(".md").read_text()


def test_no_delay_ablation_keeps_delay_zero(run):
    from fsn_model.checkpoint import load_model

    json_path, _ = run
    dirs = {r["model"]: r["run_dir"] for r in json.loads(json_path.read_text())["runs"]}
    nodelay, _ = load_model(str(Path(dirs["fsn-no-delay"]) / "checkpoint.pt"))
    full, _ = load_model(str(Path(dirs["fsn"]) / "checkpoint.pt"))
    for m, zero in ((nodelay, True), (full, False)):
        cps = [mod.coupling_real for mod in m.modules() if hasattr(mod, "coupling_real")]
        assert cps
        assert all(bool((c[..., 1, :] == 0).all()) == zero for c in cps)
        assert all(bool((c[..., 0, :] != 0).any()) for c in cps)  # K still trains


def test_bad_arguments():
    with pytest.raises(SystemExit):
        compare.main(["--models", "rnn"])
    with pytest.raises(SystemExit):
        compare.main(["--ablations", "no-such"])


def test_a_rerun_reads_finished_runs_back(tmp_path, monkeypatch):
    """A finished run is read back, never retrained or replaced (it used to be overwritten)."""
    data = tmp_path / "small.txt"
    data.write_bytes((Path(sysconfig.get_paths()["stdlib"]) / "typing.py").read_bytes()[:60_000])
    argv = ["--models", "transformer", "--ablations", "none", "--seeds", "0", "--params", "30k", "--steps", "2",
            "--batch-size", "2", "--seq-len", "16", "--eval-windows", "2", "--copy-windows", "0", "--device", "cpu",
            "--data", str(data), "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"),
            "--no-progress"]
    assert compare.main(argv) == 0
    (ckpt,) = (tmp_path / "runs").glob("*/checkpoint.pt")
    before = ckpt.stat().st_mtime_ns
    from fsn_model import train as train_mod

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(train_mod, "get_batch", no_training)
    assert compare.main(argv) == 0
    assert ckpt.stat().st_mtime_ns == before


def test_train_fit_averages_the_last_steps_in_bits():
    log = {"train": [{"step": i, "loss": loss * math.log(2)} for i, loss in enumerate([9.0, 3.0, 2.0, 1.0])],
           "corpus": {"splits": {"train": [10, 110]}}}
    assert study.train_fit(log, 2, 250) == pytest.approx({"final_train_bpb": 1.5, "epochs": 2.5})
    assert study.train_fit(log, 10, 50)["final_train_bpb"] == pytest.approx(15.0 / 4)  # fewer steps than asked


def test_defaults_write_under_the_working_directory(tmp_path, monkeypatch):
    """Without --out / --runs-dir the results and runs land in ./runs/compare/<corpus>/."""
    (tmp_path / "small.txt").write_bytes((Path(sysconfig.get_paths()["stdlib"]) / "typing.py").read_bytes()[:60_000])
    monkeypatch.chdir(tmp_path)
    assert compare.main(["--models", "transformer", "--ablations", "none", "--transformer-lrs", "", "--seeds", "0",
                         "--params", "30k", "--steps", "1", "--batch-size", "2", "--seq-len", "16", "--eval-windows",
                         "2", "--copy-windows", "0", "--device", "cpu", "--data", "small.txt", "--no-progress"]) == 0
    assert list((tmp_path / "runs" / "compare" / "small.txt" / "results").glob("quality-small-txt-*.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "small.txt"]
