"""Bad model arguments and inputs are refused up front with a ValueError / TypeError naming
the argument: in FSNConfig, build_model (and so --model-overrides / --trial), the layer,
the models' forward / prefill / decode and TrainConfig; an empty sequence backpropagates."""
import math

import pytest
import torch

from fsn_model import FSNLM, FrustratedAttention, FSNConfig, TransformerConfig, TransformerLM, build_model
from fsn_model import train as train_mod
from fsn_model.attention import rope_frequencies
from fsn_studies.sweep import main as sweep_main

TINY_FSN = dict(dim=16, n_heads=2, n_layers=1, hidden=8)


@pytest.mark.parametrize("overrides,error,message", [
    ({"head_dim": 0}, ValueError, "head_dim must be an int >= 1, got 0"),
    ({"head_dim": 2.5}, TypeError, "head_dim must be an int, got 2.5"),
    ({"coupling_std": -1}, ValueError, "coupling_std must be a finite number >= 0, got -1"),
    ({"gate_std": math.nan}, ValueError, "gate_std must be a finite number >= 0, got nan"),
    ({"n_harmonics": 9}, ValueError, r"n_harmonics must be an int in 1..8, got 9"),
    ({"embed_scale": math.inf}, ValueError, "embed_scale must be a finite number > 0, got inf"),
    ({"k1_init": math.nan}, ValueError, "k1_init must be a finite number, got nan"),
])
def test_build_model_refuses_bad_knobs_naming_them(overrides, error, message):
    with pytest.raises(error, match=message):
        build_model("fsn", "30k", **overrides)


@pytest.mark.parametrize("field,value,error,message", [
    ("n_harmonics", 9, ValueError, r"FSNConfig.n_harmonics must be an int in 1..8, got 9"),
    ("embed_scale", math.inf, ValueError, "FSNConfig.embed_scale must be a finite number > 0, got inf"),
    ("k1_init", math.nan, ValueError, "FSNConfig.k1_init must be a finite number, got nan"),
    ("coupling_std", -1.0, ValueError, "FSNConfig.coupling_std must be a finite number >= 0"),
    ("gate_std", "0.1", TypeError, "FSNConfig.gate_std must be a number, got '0.1'"),
])
def test_the_config_refuses_bad_fields(field, value, error, message):
    with pytest.raises(error, match=message):
        FSNConfig(**{field: value})


@pytest.mark.parametrize("args,kwargs,error,message", [
    ((16, 0), {}, ValueError, "n_heads must be an int >= 1, got 0"),
    ((0, 2), {}, ValueError, "dim must be an int >= 1, got 0"),
    ((16, 2), {"n_harmonics": 0}, ValueError, r"n_harmonics must be an int in 1..8, got 0"),
    ((16, 2), {"n_harmonics": 9}, ValueError, r"n_harmonics must be an int in 1..8, got 9"),
    ((16, 3), {}, ValueError, r"dim \(16\) must be divisible by n_heads \(3\)"),
    ((16, 2), {"delay": "no"}, TypeError, "delay must be a bool, got 'no'"),
    ((16, 2), {"rope_base": 0}, ValueError, "rope_base must be a finite number > 0, got 0"),
    ((16, 2), {"rope_base": math.inf}, ValueError, "rope_base must be a finite number > 0, got inf"),
    ((16, 2), {"k1_init": math.nan}, ValueError, "k1_init must be a finite number, got nan"),
    ((16, 2), {"coupling_std": -1}, ValueError, "coupling_std must be a finite number >= 0, got -1"),
])
def test_the_layer_refuses_bad_arguments_before_building(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        FrustratedAttention(*args, **kwargs)
    with pytest.raises(ValueError, match="rope_base"):
        rope_frequencies(2, 8, base=-1.0)


def test_a_bad_knob_on_the_command_line_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--model-overrides", "head_dim=0", "--steps", "1", "--no-progress"])
    assert e.value.code == 2 and "head_dim must be an int >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        sweep_main(["--trial", "fsn:head_dim=0", "--steps", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "head_dim must be an int >= 1, got 0" in err


@pytest.mark.parametrize("make", [lambda: FSNLM(FSNConfig(**TINY_FSN)),
                                  lambda: TransformerLM(TransformerConfig(dim=16, n_heads=2, n_layers=1, hidden=8))],
                         ids=["fsn", "transformer"])
def test_ids_outside_the_vocabulary_are_a_value_error_in_forward_prefill_and_decode(make):
    model = make().eval()
    for bad in (256, -1):
        with pytest.raises(ValueError, match=f"idx must hold token ids in 0..255 \\(vocab_size 256\\), got {bad}"):
            model(torch.tensor([[1, bad]]))
        with pytest.raises(ValueError, match=f"idx must hold token ids in 0..255.*got {bad}"):
            model.prefill(torch.tensor([[bad, 1]]))
        _, cache = model.prefill(torch.tensor([[1, 2]]))
        with pytest.raises(ValueError, match=f"idx_new must hold token ids in 0..255.*got {bad}"):
            model.decode(torch.tensor([bad]), cache)
    with pytest.raises(TypeError, match=r"idx must be an integer tensor of token ids \(B, T\), got a torch.float32"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"idx must have shape \(B, T\), got \(3,\)"):
        model(torch.tensor([1, 2, 3]))
    model(torch.tensor([[0, 255]]))  # the ends of the range are fine


@pytest.mark.parametrize("kwargs", [{}, {"projections": True}])
def test_an_empty_sequence_backpropagates_through_the_layer_with_zero_gradients(kwargs):
    """T = 0 gives an empty result that keeps its graph (the choice here, rather than a
    refusal): an empty batch of a longer pipeline needs no special case."""
    attn = FrustratedAttention(16, 2, **kwargs)
    theta = torch.zeros(2, 0, 16, requires_grad=True)
    out = attn(theta)
    assert out.shape == (2, 0, 16) and out.grad_fn is not None
    out.sum().backward()
    assert theta.grad.shape == (2, 0, 16)
    for name, p in attn.named_parameters():
        assert p.grad is not None and not p.grad.any(), name
    model = FSNLM(FSNConfig(**TINY_FSN, **kwargs))
    model(torch.zeros(1, 0, dtype=torch.long)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("seed", [2**64, 2**70, -1])
def test_a_seed_torch_cannot_take_is_refused_with_the_range(seed, capsys):
    with pytest.raises(ValueError, match=r"seed must be an int in 0..2\*\*64 - 1"):
        train_mod.validate(train_mod.TrainConfig(seed=seed))
    with pytest.raises(SystemExit) as e:
        train_mod.main(["--seed", str(seed), "--no-progress"])
    assert e.value.code == 2 and "seed must be an int in 0..2**64 - 1" in capsys.readouterr().err
    train_mod.validate(train_mod.TrainConfig(seed=2**64 - 1))
