"""CLIs: happy paths on a tiny checkpoint; bad input -> one stderr line, exit code 2."""
import json
import subprocess
import sys

import pytest
import torch

from fsn_model import copy_depth, evaluate, generate
from fsn_model import train as train_mod


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    f = tmp_path_factory.mktemp("data") / "small.txt"
    f.write_bytes(b"def f(x):\n    return x + 1\n\nclass A:\n    pass\n" * 300)
    return str(f)


@pytest.fixture(scope="module")
def checkpoints(corpus, tmp_path_factory):
    paths = []
    for model in ("fsn", "transformer"):
        out = tmp_path_factory.mktemp(model)
        cfg = train_mod.TrainConfig(model=model, params="30k", data=corpus, steps=3, batch_size=4, seq_len=32,
                                    eval_windows=2, progress=False, out=str(out), model_overrides={"n_layers": 1})
        train_mod.train(cfg)
        paths.append(str(out / "checkpoint.pt"))
    return paths


def test_eval_prints_val_and_test_bpb(checkpoints, corpus, capsys):
    assert evaluate.main([checkpoints[0], "--data", corpus, "--windows", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 < res["val_bpb"] < 10 and 0 < res["test_bpb"] < 10


def test_generate_samples_through_cache(checkpoints, capsys):
    for ckpt in checkpoints:
        assert generate.main([ckpt, "--prompt", "def ", "--length", "12", "--top-k", "5", "--seed", "1"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("def ") and len(out.rstrip("\n")) > len("def ")


def test_greedy_decoding_through_the_phase_cache_equals_full_forwards(checkpoints):
    from fsn_model.checkpoint import load_model
    from fsn_model.fsn import FSNLM
    from fsn_model.generate import sample

    model, _ = load_model(checkpoints[0])
    assert isinstance(model, FSNLM)
    prompt = list(b"def ")
    cached = sample(model, prompt, max_new=10, temperature=0)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(10):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt):]


def test_copy_depth_table_and_chart(checkpoints, corpus, tmp_path, capsys):
    png = tmp_path / "cd.png"
    assert copy_depth.main(checkpoints + ["--data", corpus, "--windows", "3", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| 24-32 |" in out and "fsn" in out and "transformer" in out
    assert png.stat().st_size > 1000
    assert len(json.loads(png.with_suffix(".json").read_text())) == 2


BAD = [
    (train_mod.main, ["--data", "/no/such/file"]),
    (train_mod.main, ["--params", "10X"]),
    (train_mod.main, ["--model", "mamba"]),
    (train_mod.main, ["--steps", "zero"]),
    (evaluate.main, ["/no/such/checkpoint.pt"]),
    (generate.main, ["/no/such/checkpoint.pt", "--prompt", "x"]),
    (copy_depth.main, ["/no/such/checkpoint.pt"]),
    (copy_depth.main, []),
]


@pytest.mark.parametrize("fn,argv", BAD)
def test_bad_input_exits_2_with_one_line(fn, argv, capsys):
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "Traceback" not in err, err


def test_bad_input_real_process():
    r = subprocess.run([sys.executable, "-m", "fsn_model.train", "--params", "lots"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "params" in r.stderr, r.stderr
