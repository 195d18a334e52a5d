"""build_model hits its parameter targets; bad input raises ValueError naming the argument."""
import pytest

from fsn_model import build_model, count_params, model_from_config, parse_params


@pytest.mark.parametrize("name", ["fsn", "fsn-meanfield", "transformer"])
@pytest.mark.parametrize("params", ["250k", "1M"])
def test_build_model_hits_target(name, params):
    target = parse_params(params)
    model = build_model(name, params)
    n = count_params(model)
    assert abs(n - target) / target <= 0.02, (name, params, n)
    assert model.config.name == name
    assert count_params(model_from_config(model.config)) == n


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
