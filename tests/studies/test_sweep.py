"""fsn-sweep: a tiny-budget CPU sweep (two FSN trials with knobs, the transformer, two
seeds) writes the quality JSON (schema), PNGs and the sweep table into a tmp folder, and a
second call reuses the finished runs instead of retraining them."""
import json
import math
import sysconfig
from pathlib import Path

import pytest
import torch

from fsn_model.build import build_model
from fsn_model.config import config_to_dict
from fsn_studies import sweep

FINAL = "final_val_bits_per_byte"
TRIALS = ["fsn:lr=3e-3", "fsn:lr=6e-3,k1_init=1.0,readout_norm=true,n_layers=2", "transformer:lr=3e-3"]


def _args(tmp):
    args = ["--params", "30k", "--seeds", "0,1", "--steps", "3", "--batch-size", "2", "--seq-len", "32",
            "--eval-every", "2", "--eval-windows", "4", "--copy-windows", "4", "--device", "cpu",
            "--data", str(tmp / "small.txt"), "--out", str(tmp / "out"), "--runs-dir", str(tmp / "runs"),
            "--no-progress"]
    for t in TRIALS:
        args += ["--trial", t]
    return args


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    (tmp / "small.txt").write_bytes((Path(sysconfig.get_paths()["stdlib"]) / "typing.py").read_bytes()[:120_000])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops; OpenMP spin-waiting on a shared machine costs more than it gains
    try:
        assert sweep.main(_args(tmp)) == 0
    finally:
        torch.set_num_threads(threads)
    (json_path,) = (tmp / "out").glob("sweep-small-txt-30k-3steps-*.json")
    return tmp, json_path


def test_sweep_json_schema_and_table(run):
    _, json_path = run
    doc = json.loads(json_path.read_text())
    assert doc["kind"] == "quality" and doc["study"] == "sweep" and doc["corpus"] == "small.txt"
    assert {"device", "corpus", "commit", "runs", "summary", "copy_depth", "settings"} <= set(doc)
    assert len(doc["runs"]) == 6 and len(doc["summary"]) == 3
    for r in doc["runs"]:
        assert {"model", "trial", "knobs", "params", "seed", "lr", "tokens", FINAL, "curve"} <= set(r)
        assert r["tokens"] == 3 * 2 * 32 and math.isfinite(r[FINAL])
        assert r["curve"][-1][1] == r[FINAL]
        assert abs(r["params"] - 30_000) <= 0.02 * 30_000
        assert 0 < r["final_train_bpb"] < 9 and r["epochs"] == pytest.approx(r["tokens"] / (0.9 * 120_000), rel=1e-4)
    knobbed = [r for r in doc["runs"] if r["knobs"].get("k1_init") == 1.0]
    assert len(knobbed) == 2 and all(r["lr"] == 6e-3 for r in knobbed)
    cfg = knobbed[0]["model_config"]
    assert cfg["k1_init"] == 1.0 and cfg["readout_norm"] is True and cfg["n_layers"] == 2
    assert sum(s["best_of_model"] for s in doc["summary"].values()) == 2  # one fsn, one transformer
    assert set(doc["copy_depth"]["bins"]) == {"fsn", "transformer"}
    md = json_path.with_suffix(".md").read_text()
    assert "| model | trial | lr | seed |" in md and "| train bits/byte (last 2 steps) | epochs |" in md
    assert "| bin |" in md
    for suffix in (".png", "-copy-depth.png"):
        assert json_path.with_name(json_path.stem + suffix).stat().st_size > 1000


def test_finished_runs_are_reused(run):
    tmp, json_path = run
    before = json.loads(json_path.read_text())
    logs = sorted((tmp / "runs").rglob("log.json"))
    assert len(logs) == 6
    mtimes = [p.stat().st_mtime_ns for p in logs]
    assert sweep.main(_args(tmp)) == 0
    assert [p.stat().st_mtime_ns for p in logs] == mtimes  # nothing retrained or rewritten
    after = json.loads(json_path.read_text())
    assert [r[FINAL] for r in after["runs"]] == [r[FINAL] for r in before["runs"]]


def test_each_trial_trains_the_model_its_name_builds(run):
    tmp, json_path = run
    for r in json.loads(json_path.read_text())["runs"]:
        with torch.device("meta"):
            expected = build_model(r["model"], "30k", **r["overrides"]).config
        assert r["model_config"] == config_to_dict(expected), r["trial"]
    assert sweep.parse_trial("fsn-paper:lr=1e-3") == {"model": "fsn-paper", "knobs": {"lr": 1e-3}}
    assert sweep.parse_trial("fsn-meanfield-paper") == {"model": "fsn-meanfield-paper", "knobs": {}}


def test_knobs_reach_the_model():
    m = build_model("fsn", "30k", k1_init=1.0, coupling_std=0.0, gate_std=0.0, readout_norm=True)
    attn = m.blocks[0].attn
    assert float(attn.coupling_real.detach()[:, :, 0, 0, 0].min()) == 1.0
    assert float(attn.gate_proj.weight.detach().abs().max()) == 0.0
    assert isinstance(m.readout_norm, torch.nn.LayerNorm)
    assert not isinstance(build_model("fsn", "30k").readout_norm, torch.nn.LayerNorm)  # default norm-free


def test_embed_scale_same_phases_at_init_and_decode_matches():
    torch.manual_seed(0)
    plain = build_model("fsn", "30k")
    torch.manual_seed(0)
    scaled = build_model("fsn", "30k", embed_scale=4.0)
    assert float(scaled.embed.weight.detach().abs().max()) <= torch.pi / 4
    idx = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(scaled(idx), plain(idx), atol=1e-4, rtol=1e-4)  # same function at init
        _, cache = scaled.prefill(idx[:, :8])
        step, _ = scaled.decode(idx[:, 8], cache)
        torch.testing.assert_close(step, scaled(idx)[:, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("argv", [
    ["--trial", "rnn:lr=1e-3"],
    ["--trial", "fsn:lr"],
    ["--trial", "fsn:no_such_knob=1"],
    ["--trial", "transformer:k1_init=1.0"],
    [],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(argv + ["--steps", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fsn-sweep: error:") and "\n" not in err


def test_defaults_write_under_the_working_directory(tmp_path, monkeypatch):
    """Without --out / --runs-dir everything lands in ./runs/sweep/<corpus>/ of the working
    directory, never beside the package."""
    (tmp_path / "small.txt").write_bytes((Path(sysconfig.get_paths()["stdlib"]) / "typing.py").read_bytes()[:60_000])
    monkeypatch.chdir(tmp_path)
    assert sweep.main(["--trial", "fsn:n_layers=1", "--params", "30k", "--steps", "1", "--batch-size", "2",
                       "--seq-len", "16", "--eval-windows", "2", "--copy-windows", "0", "--device", "cpu",
                       "--data", "small.txt", "--no-progress"]) == 0
    (json_path,) = (tmp_path / "runs" / "sweep" / "small.txt" / "results").glob("sweep-*.json")
    assert json.loads(json_path.read_text())["runs"][0]["run_dir"].startswith(str(Path("runs", "sweep", "small.txt")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "small.txt"]
