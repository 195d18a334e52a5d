"""build_model hits its parameter targets for every model name; "fsn" / "fsn-meanfield" are
FSN with projections and "fsn-paper" / "fsn-meanfield-paper" exactly what "fsn" /
"fsn-meanfield" built before; bad input raises ValueError naming the argument."""
import pytest
import torch

from fsn_model import MODEL_NAMES, build_model, count_params, model_from_config, parse_params
from fsn_model.build import MODELS
from fsn_model.config import config_from_dict, config_to_dict

# What build_model("fsn" / "fsn-meanfield", ...) built before the projections became their
# default, read from that version: the paper's models, now "fsn-paper" / "fsn-meanfield-paper".
_PAPER = dict(vocab_size=256, n_layers=4, n_harmonics=2, delay=True, k1_init=0.5, coupling_std=0.02, gate_std=0.02,
              readout_norm=False, token_shift=False, projections=False, projected_heads=None, project_output=True)
PAPER_CONFIGS = {
    ("fsn-paper", "250k"): dict(_PAPER, name="fsn", dim=64, n_heads=4, mixer="swiglu", hidden=129, n_modes=64,
                                embed_scale=8.0),
    ("fsn-paper", "1M"): dict(_PAPER, name="fsn", dim=144, n_heads=9, mixer="swiglu", hidden=249, n_modes=64,
                              embed_scale=8.0),
    ("fsn-meanfield-paper", "250k"): dict(_PAPER, name="fsn-meanfield", dim=96, n_heads=6, mixer="meanfield",
                                          hidden=128, n_modes=60, embed_scale=1.0),
    ("fsn-meanfield-paper", "1M"): dict(_PAPER, name="fsn-meanfield", dim=224, n_heads=14, mixer="meanfield",
                                        hidden=128, n_modes=14, embed_scale=1.0),
}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("params", ["250k", "1M"])
def test_build_model_hits_target(name, params):
    target = parse_params(params)
    model = build_model(name, params)
    n = count_params(model)
    assert abs(n - target) / target <= 0.02, (name, params, n)
    assert model.config.name == MODELS[name][0]  # the architecture
    assert count_params(model_from_config(model.config)) == n


@pytest.mark.parametrize("name,params", sorted(PAPER_CONFIGS))
def test_the_paper_models_are_what_fsn_built_before(name, params):
    assert config_to_dict(build_model(name, params).config) == PAPER_CONFIGS[name, params]


@pytest.mark.parametrize("name,paper", [("fsn", "fsn-paper"), ("fsn-meanfield", "fsn-meanfield-paper")])
def test_fsn_has_the_projections_and_without_them_is_the_paper_model(name, paper):
    with torch.device("meta"):
        cfg = build_model(name, "250k").config
        assert cfg.projections and cfg.projected_heads is None and cfg.project_output
        assert cfg.embed_scale == (8.0 if name == "fsn" else 1.0)
        assert build_model(name, "250k", projections=False).config == build_model(paper, "250k").config
        assert build_model(paper, "250k", projections=True).config == cfg
        with pytest.raises(ValueError, match="projected_heads=1 needs projections=True"):
            build_model(paper, "250k", projected_heads=1)


@pytest.mark.parametrize("params,vocab_size", [("10k", 64), ("16k", 256), ("20k", 256), ("30k", 256),
                                               ("100k", 256), ("3M", 256)])
def test_every_name_lands_within_two_percent_across_sizes(params, vocab_size):
    target = parse_params(params)
    with torch.device("meta"):
        for name in MODEL_NAMES:
            n = count_params(build_model(name, params, vocab_size=vocab_size))
            assert abs(n - target) / target <= 0.02, (name, params, n)


def test_a_target_below_the_embedding_and_readout_is_refused_for_every_fsn_name():
    with torch.device("meta"):  # 256 x 16 embedding + readout alone are 12.5k
        for name in [m for m in MODEL_NAMES if m != "transformer"]:
            with pytest.raises(ValueError, match=f"params: no {name} shape within 2% of 10,000"):
                build_model(name, "10k")


def test_a_config_saved_without_the_projection_keys_loads_without_projections():
    old = {k: v for k, v in PAPER_CONFIGS["fsn-paper", "250k"].items()
           if k not in ("projections", "projected_heads", "project_output")}
    cfg = config_from_dict(old)
    assert not cfg.projections and cfg == build_model("fsn-paper", "250k").config
    assert all(block.attn.in_proj is None and block.attn.out_proj is None for block in model_from_config(old).blocks)


def test_parse_params():
    assert parse_params("250k") == 250_000 and parse_params("1M") == 1_000_000
    assert parse_params("1.5m") == 1_500_000 and parse_params(12345) == 12345


@pytest.mark.parametrize("bad", ["ten", "1X", "", "-5k", 5])
def test_bad_size_raises(bad):
    with pytest.raises(ValueError, match="params"):
        build_model("fsn", bad)


def test_unknown_name_and_override_raise():
    with pytest.raises(ValueError, match="name"):
        build_model("mamba", "250k")
    with pytest.raises(ValueError, match="overrides"):
        build_model("fsn", "250k", widht=3)


def test_overrides_apply():
    model = build_model("fsn", "250k", n_layers=2, n_harmonics=3)
    assert model.config.n_layers == 2 and model.config.n_harmonics == 3
    assert abs(count_params(model) - 250_000) / 250_000 <= 0.02


def test_more_weights_than_memory_is_a_value_error_not_an_allocation_failure():
    with pytest.raises(ValueError, match="params: .* GiB, more than this machine's"):
        build_model("fsn", "1000G")


def test_backend_is_a_runtime_option_not_part_of_the_config():
    model = build_model("fsn", "30k", n_layers=1, backend="reference")
    assert all(block.attn.backend == "reference" for block in model.blocks)
    assert "backend" not in vars(model.config)
    with pytest.raises(ValueError, match="overrides"):
        build_model("fsn", "30k", not_a_field=1)
