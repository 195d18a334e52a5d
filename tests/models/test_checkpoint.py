"""Checkpoints: plain data only (a file crafted to run code is refused and nothing runs),
configs as dataclasses stored as dicts, the backend not saved, clear errors for damage."""
import os

import pytest
import torch

from fsn_model import FSNConfig, TransformerConfig, build_model, evaluate
from fsn_model.checkpoint import load_checkpoint, load_model, save_checkpoint
from fsn_model.config import config_from_dict, config_to_dict


class _RunsCodeOnLoad:
    """Unpickling this calls os.mkdir(marker): stands for any code an attacker would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _checkpoint(model):
    return {"model_config": config_to_dict(model.config), "train_config": {"seq_len": 16},
            "model": model.state_dict(), "step": 0}


@pytest.fixture
def tiny_fsn():
    torch.manual_seed(0)
    return build_model("fsn", "30k", n_layers=1)


def test_a_checkpoint_crafted_to_run_code_is_refused_and_nothing_runs(tmp_path, tiny_fsn):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save(dict(_checkpoint(tiny_fsn), payload=_RunsCodeOnLoad(marker)), path)
    with pytest.raises(ValueError, match="refusing to load .*could run code") as e:
        load_model(str(path))
    assert "mkdir" in str(e.value)  # it names what the file wanted to call
    assert not marker.exists()


def test_the_eval_cli_refuses_it_in_one_line(tmp_path, tiny_fsn, capsys):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save(dict(_checkpoint(tiny_fsn), payload=_RunsCodeOnLoad(marker)), path)
    with pytest.raises(SystemExit) as e:
        evaluate.main([str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to load" in err and "Traceback" not in err
    assert not marker.exists()


def test_round_trip_rebuilds_the_same_model_without_the_backend(tmp_path, tiny_fsn):
    path = tmp_path / "ok.pt"
    save_checkpoint(str(path), _checkpoint(tiny_fsn))
    assert "backend" not in load_checkpoint(str(path))["model_config"]
    model, _ = load_model(str(path), backend="reference")
    assert model.config == tiny_fsn.config and isinstance(model.config, FSNConfig)
    assert all(block.attn.backend == "reference" for block in model.blocks)
    idx = torch.randint(0, 256, (1, 8))
    for block in tiny_fsn.blocks:  # the same backend on both sides: equal bit for bit
        block.attn.backend = "reference"
    torch.testing.assert_close(model(idx), tiny_fsn.eval()(idx), atol=0, rtol=0)


@pytest.mark.parametrize("config", [FSNConfig(dim=16, n_heads=2, mixer="meanfield", n_modes=5, delay=False),
                                    TransformerConfig(dim=16, n_heads=2, hidden=20)])
def test_config_dict_round_trip(config):
    as_dict = config_to_dict(config)
    assert as_dict["name"] == config.name and config_from_dict(as_dict) == config


def test_config_from_dict_rejects_unknown_keys_and_names():
    with pytest.raises(ValueError, match="unknown keys"):
        config_from_dict({"name": "fsn", "widht": 3})
    with pytest.raises(ValueError, match="name"):
        config_from_dict({"name": "mamba"})


def test_model_config_that_does_not_match_the_weights(tmp_path, tiny_fsn):
    ckpt = _checkpoint(tiny_fsn)
    ckpt["model_config"] = dict(ckpt["model_config"], dim=2 * tiny_fsn.config.dim, n_heads=2 * tiny_fsn.config.n_heads)
    save_checkpoint(str(tmp_path / "bad.pt"), ckpt)
    with pytest.raises(ValueError, match="do not match its model_config"):
        load_model(str(tmp_path / "bad.pt"))


@pytest.mark.parametrize("key", ["model", "model_config", "train_config"])
def test_missing_keys(tmp_path, tiny_fsn, key):
    ckpt = _checkpoint(tiny_fsn)
    del ckpt[key]
    save_checkpoint(str(tmp_path / "bad.pt"), ckpt)
    with pytest.raises(ValueError, match=f"missing keys \\['{key}'\\]"):
        load_model(str(tmp_path / "bad.pt"))


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(str(tmp_path / "x.pt"))


def test_every_flipped_bit_is_refused_or_leaves_the_content_unchanged(tmp_path, tiny_fsn):
    """A checkpoint carries a checksum of its content: 40 random single-bit flips anywhere in
    the file either fail to load (ValueError) or load exactly the saved content, never changed
    weights."""
    import random

    path = tmp_path / "ok.pt"
    save_checkpoint(str(path), _checkpoint(tiny_fsn))
    good = path.read_bytes()
    saved = load_checkpoint(str(path))
    rng = random.Random(0)
    refused = 0
    for _ in range(40):
        data = bytearray(good)
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(str(path))
        except ValueError:
            refused += 1
            continue
        assert loaded["checksum"] == saved["checksum"]
        for name, tensor in saved["model"].items():
            assert torch.equal(loaded["model"][name], tensor), (pos, name)
    assert refused > 0


def test_a_checkpoint_without_a_checksum_loads_with_one_line_saying_it_is_unchecked(tmp_path, tiny_fsn, capsys):
    path = tmp_path / "old.pt"
    torch.save(_checkpoint(tiny_fsn), path)  # as written before checkpoints carried a checksum
    model, _ = load_model(str(path))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unchecked" in err and str(path) in err
    for name, tensor in tiny_fsn.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


def test_a_checkpoint_whose_weights_changed_after_saving_is_refused(tmp_path, tiny_fsn):
    path = tmp_path / "ok.pt"
    save_checkpoint(str(path), _checkpoint(tiny_fsn))
    ckpt = torch.load(path, weights_only=True)
    next(iter(ckpt["model"].values())).view(-1)[0] += 1e-3
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="does not match its checksum"):
        load_checkpoint(str(path))
