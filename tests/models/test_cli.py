"""CLIs: happy paths on a tiny checkpoint; bad input -> one stderr line, exit code 2."""
import json
import subprocess
import sys

import pytest
import torch

from fsn_model import copy_depth, evaluate, generate
from fsn_model import train as train_mod


def test_eval_prints_val_and_test_bpb(checkpoints, corpus, capsys):
    assert evaluate.main([checkpoints["fsn"], "--data", corpus, "--windows", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 < res["val_bpb"] < 10 and 0 < res["test_bpb"] < 10


def test_generate_samples_through_cache(checkpoints, capsys):
    for ckpt in (checkpoints["fsn"], checkpoints["transformer"]):
        assert generate.main([ckpt, "--prompt", "def ", "--length", "12", "--top-k", "5", "--seed", "1"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("def ") and len(out.rstrip("\n")) > len("def ")


def test_greedy_decoding_through_the_phase_cache_equals_full_forwards(checkpoints):
    from fsn_model.checkpoint import load_model
    from fsn_model.fsn import FSNLM
    from fsn_model.generate import sample

    model, _ = load_model(checkpoints["fsn"])
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
    assert copy_depth.main([checkpoints["fsn"], checkpoints["transformer"], "--data", corpus, "--windows", "3",
                            "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| 24-32 |" in out and "fsn" in out and "transformer" in out
    assert png.stat().st_size > 1000
    assert len(json.loads(png.with_suffix(".json").read_text())) == 2


NO_CUDA = not torch.cuda.is_available()
BAD = [  # (command, argv, a word the one-line error must contain)
    (train_mod.main, ["--data", "/no/such/file"], "not found"),
    (train_mod.main, ["--params", "10X"], "params"),
    (train_mod.main, ["--params", "1000G"], "memory"),
    (train_mod.main, ["--model", "mamba"], "model"),
    (train_mod.main, ["--steps", "zero"], "steps"),
    (train_mod.main, ["--lr", "inf"], "lr"),
    (train_mod.main, ["--lr", "nan"], "lr"),
    (train_mod.main, ["--out", ""], "out"),
    (train_mod.main, ["--device", "tpu"], "--device"),
    (train_mod.main, ["--threads", "0"], "--threads"),
    (evaluate.main, ["/no/such/checkpoint.pt"], "not found"),
    (generate.main, ["/no/such/checkpoint.pt", "--prompt", "x"], "not found"),
    (copy_depth.main, ["/no/such/checkpoint.pt"], "not found"),
    (copy_depth.main, [], "checkpoints"),
]
if NO_CUDA:
    BAD += [(train_mod.main, ["--device", "cuda"], "CUDA is not available"),
            (train_mod.main, ["--device", "cuda:0"], "CUDA is not available")]




@pytest.mark.parametrize("fn,argv,word", BAD)
def test_bad_input_exits_2_with_one_line(fn, argv, word, one_line_error):
    assert word in one_line_error(fn, argv)


BAD_WITH_CHECKPOINT = [  # argv after the checkpoint path
    (generate.main, ["--temperature", "nan"], "--temperature"),
    (generate.main, ["--temperature", "-1"], "--temperature"),
    (generate.main, ["--top-k", "-3"], "--top-k"),
    (evaluate.main, ["--seq-len", "-5"], "--seq-len"),
    (evaluate.main, ["--batch-size", "0"], "--batch-size"),
    (evaluate.main, ["--windows", "0"], "--windows"),
] + ([(generate.main, ["--device", "cuda"], "CUDA is not available"),
      (evaluate.main, ["--device", "cuda"], "CUDA is not available")] if NO_CUDA else [])


@pytest.mark.parametrize("fn,argv,word", BAD_WITH_CHECKPOINT)
def test_bad_numbers_for_a_checkpoint_exit_2_with_one_line(checkpoints, fn, argv, word, one_line_error):
    assert word in one_line_error(fn, [checkpoints["fsn"]] + argv)


def test_a_directory_as_data_is_named_a_directory(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_mod.main(["--data", str(tmp_path)])
    assert "directory" in capsys.readouterr().err


def test_eval_prints_its_window_counts(checkpoints, corpus, capsys):
    assert evaluate.main([checkpoints["fsn"], "--data", corpus, "--windows", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["val_windows"] == 3 and res["test_windows"] == 3


@pytest.mark.parametrize("fn", [train_mod.main, evaluate.main, generate.main, copy_depth.main])
def test_help_shows_the_defaults(fn, capsys):
    with pytest.raises(SystemExit) as e:
        fn(["--help"])
    assert e.value.code == 0
    assert "(default: " in capsys.readouterr().out


def test_threads_flag_sets_torch_threads(corpus, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert train_mod.main(["--data", corpus, "--params", "30k", "--steps", "1", "--batch-size", "2", "--seq-len",
                               "16", "--eval-windows", "1", "--out", str(tmp_path / "r"), "--no-progress",
                               "--sample", "0", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bad_input_real_process():
    r = subprocess.run([sys.executable, "-m", "fsn_model.train", "--params", "lots"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "params" in r.stderr, r.stderr


# --- settings declared once: fsn-train's flags are TrainConfig's fields ----------------------

def _dests(parser):
    return {a.dest for a in parser._actions} - {"help"}


def test_every_train_config_field_has_a_flag_and_every_flag_is_a_field_or_cli_only():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(train_mod.TrainConfig)}
    assert _dests(train_mod._parser()) == fields | set(train_mod.CLI_ONLY)
    assert not fields & set(train_mod.CLI_ONLY)
    for f in dataclasses.fields(train_mod.TrainConfig):
        assert f.metadata.get("help"), f"{f.name} has no help"


def test_the_flags_keep_their_names_and_defaults():
    parser = train_mod._parser()
    options = {s for a in parser._actions for s in a.option_strings}
    assert {"--model", "--params", "--data", "--steps", "--batch-size", "--seq-len", "--lr", "--seed", "--eval-every",
            "--eval-windows", "--warmup", "--log-every", "--stop-at", "--pack-documents", "--device", "--out",
            "--resume", "--overwrite", "--no-progress", "--threads", "--sample"} <= options
    args = vars(parser.parse_args([]))
    for name in train_mod.CLI_ONLY:
        args.pop(name)
    assert train_mod.TrainConfig(**args) == train_mod.TrainConfig()  # the defaults are the dataclass's
    assert args["progress"] is True and vars(parser.parse_args(["--no-progress"]))["progress"] is False
    assert vars(parser.parse_args(["--model-overrides", "n_layers=2,delay=false,k1_init=0.5"]))[
        "model_overrides"] == {"n_layers": 2, "delay": False, "k1_init": 0.5}


def test_compare_and_sweep_take_the_shared_flags_from_train_config():
    import dataclasses

    from fsn_studies import compare, study, sweep

    defaults = train_mod.TrainConfig()
    for module, own in ((compare, {"params": "1M"}), (sweep, {"params": "250k", "steps": 800, "eval_every": 100})):
        parser = module._parser()
        assert set(study.SHARED_SETTINGS) <= _dests(parser)
        parsed = vars(parser.parse_args(["--trial", "fsn"] if module is sweep else []))
        for name in study.SHARED_SETTINGS:
            assert parsed[name] == own.get(name, getattr(defaults, name)), name
        a = parser.parse_args(["--trial", "fsn", "--lr", "0.5", "--seq-len", "8"] if module is sweep
                              else ["--lr", "0.5", "--seq-len", "8"])
        base = module.base_config(a)
        assert (base.lr, base.seq_len) == (0.5, 8)
        assert dataclasses.replace(base, seed=3).seq_len == 8


def test_an_old_option_name_trains_with_one_warning_line(corpus, tmp_path, capsys):
    argv = ["--model", "fsn", "--params", "30k", "--steps", "1", "--batch-size", "2", "--seq-len", "16",
            "--data", corpus, "--out", str(tmp_path / "run"), "--eval-windows", "1", "--no-progress",
            "--model-overrides", "n_layers=1,attn_proj=true"]
    assert train_mod.main(argv) == 0
    err = capsys.readouterr().err
    assert "fsn-train: warning: build_model: 'attn_proj' is deprecated, use 'projections'\n" in err
    assert "Traceback" not in err and "DeprecationWarning" not in err
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["model_config"]["projections"] is True
