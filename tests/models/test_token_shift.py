"""Token shift (``token_shift=True``): the mixers also read the previous token's block input.
Decoding and packed documents with it are checked beside the plain models
(test_model_layers.py, test_packed.py)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsn_model import (
    FSNLM,
    FSNConfig,
    MeanFieldCoupling,
    PhaseSwiGLU,
    TransformerConfig,
    build_model,
    model_from_config,
)
from fsn_model.attention import phase_features
from fsn_model.build import count_params
from fsn_model.config import config_from_dict, config_to_dict
from fsn_model.fsn import previous_token_features
from fsn_model.mixers import shift_mix


@settings(max_examples=12, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5), C=st.integers(1, 4))
def test_previous_token_features_shift_by_one_and_restart_at_each_document(lengths, C):
    T = sum(lengths)
    if T == 0:
        return
    theta = torch.randn(1, T, C, dtype=torch.float64)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    prev = previous_token_features(theta, cu)
    f = phase_features(theta)
    starts = set(cu[:-1].tolist())
    for t in range(T):
        want = torch.zeros_like(f[0, t]) if t in starts else f[0, t - 1]
        assert torch.equal(prev[0, t], want), t
    unpacked = previous_token_features(theta)
    assert torch.equal(unpacked[0, 0], torch.zeros_like(f[0, 0])) and torch.equal(unpacked[0, 1:], f[0, :-1])


def test_shift_mix_is_the_per_feature_interpolation_and_needs_the_previous_token():
    f, p = torch.randn(3, 4), torch.randn(3, 4)
    mu = torch.tensor([1.0, 0.0, 0.25, 0.5])
    torch.testing.assert_close(shift_mix(f, p, mu), mu * f + (1 - mu) * p)
    with pytest.raises(ValueError, match=r"prev_features: .* shape \(3, 4\), got None"):
        PhaseSwiGLU(2, 5, shift=True)(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"got \(3, 2\)"):
        MeanFieldCoupling(2, 1, 3, shift=True)(torch.randn(1, 3, 2), torch.randn(3, 2))


def test_swiglu_with_shift_pairs_the_two_tokens_and_without_ignores_them():
    torch.manual_seed(0)
    theta, prev = torch.randn(2, 5, 8), phase_features(torch.randn(2, 5, 8))
    plain = PhaseSwiGLU(8, 12)
    torch.testing.assert_close(plain(theta, prev), plain(theta))  # no shift: prev is ignored
    mix = PhaseSwiGLU(8, 12, shift=True)
    with torch.no_grad():  # mu = 1 everywhere: exactly the plain mixer with the same weights
        mix.shift_a.fill_(1.0)
        mix.shift_b.fill_(1.0)
        plain.w13.weight.copy_(mix.w13.weight)
        plain.w2.weight.copy_(mix.w2.weight)
    torch.testing.assert_close(mix(theta, prev), plain(theta))
    with torch.no_grad():
        mix.shift_a.fill_(0.5)
    assert not torch.allclose(mix(theta, prev), plain(theta))
    out = mix(theta, prev.requires_grad_())
    out.sum().backward()
    assert mix.shift_a.grad.abs().sum() > 0 and mix.shift_b.grad.abs().sum() > 0 and prev.grad.abs().sum() > 0


def test_meanfield_with_shift_trains_its_mix():
    torch.manual_seed(1)
    mix = MeanFieldCoupling(8, 2, 5, shift=True)
    theta, prev = torch.randn(2, 4, 8), phase_features(torch.randn(2, 4, 8))
    mix(theta, prev).sum().backward()
    assert mix.shift_g.grad.abs().sum() > 0


@pytest.mark.parametrize("mixer", ["swiglu", "meanfield"])
def test_model_with_shift_is_causal_and_uses_the_previous_token(mixer):
    torch.manual_seed(2)
    model = FSNLM(FSNConfig(dim=16, n_layers=2, n_heads=2, mixer=mixer, hidden=24, n_modes=6,
                            token_shift=True), backend="stock").eval()
    idx = torch.randint(0, 256, (2, 12))
    idx2 = idx.clone()
    idx2[:, 7] = (idx2[:, 7] + 1) % 256
    with torch.no_grad():
        a, b = model(idx), model(idx2)
    assert torch.equal(a[:, :7], b[:, :7])  # bit-exact: nothing reads ahead
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_token_shift_config_roundtrip_sizing_and_checks():
    model = build_model("fsn", "60k", token_shift=True)
    assert model.config.token_shift and model.blocks[0].mix.shift_a is not None
    assert abs(count_params(model) - 60_000) <= 0.02 * 60_000
    again = model_from_config(config_from_dict(config_to_dict(model.config)))
    assert again.config == model.config and count_params(again) == count_params(model)
    assert not build_model("fsn", "60k").config.token_shift  # default off
    old = {k: v for k, v in config_to_dict(model.config).items() if k != "token_shift"}
    assert config_from_dict(old).token_shift is False  # configs saved before the field rebuild unchanged
    with pytest.raises(TypeError, match="token_shift must be a bool, got 1"):
        FSNConfig(token_shift=1)
    with pytest.raises(ValueError, match="FSN models only"):
        build_model("transformer", "60k", embed_scale=2.0)


def test_transformer_with_shift_is_causal_and_decodes_like_its_forward():
    """The control: the baseline's MLP given the same shift (norm2 of the previous token's
    block input); prefill + decode and decoding from an empty cache equal the forward."""
    torch.manual_seed(3)
    model = build_model("transformer", "60k", token_shift=True).eval()
    assert model.config.token_shift and abs(count_params(model) - 60_000) <= 0.02 * 60_000
    assert config_from_dict(config_to_dict(model.config)) == model.config
    with pytest.raises(TypeError, match="token_shift must be a bool"):
        TransformerConfig(token_shift="yes")
    idx = torch.randint(0, 256, (2, 11))
    idx2 = idx.clone()
    idx2[:, 6] = (idx2[:, 6] + 1) % 256
    with torch.no_grad():
        full = model(idx)
        assert torch.allclose(model(idx2)[:, :6], full[:, :6], atol=1e-6)
        logits, cache = model.prefill(idx[:, :4], capacity=6)
        steps = [logits] + [model.decode(idx[:, t], cache)[0][:, None] for t in range(4, 11)]
        empty = model.new_cache(2, 2)
        first = [model.decode(idx[:, t], empty)[0][:, None] for t in range(3)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(first, 1), full[:, :3], atol=1e-5, rtol=1e-5)
