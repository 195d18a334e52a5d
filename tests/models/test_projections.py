"""Learned projections around the attention op (``FSNConfig.projections``; on the first
``projected_heads`` heads only): a phase projection in, a linear map of the increments out,
both the identity at init. Decoding and packed
documents with them are checked beside the plain models (test_model_layers.py,
test_packed.py), the Hugging Face round trip in test_hf.py."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsn_kernels import frustrated_attention
from fsn_model import FSNLM, FrustratedAttention, FSNConfig, build_model, model_from_config
from fsn_model.attention import PhaseProjection, phase_features
from fsn_model.build import count_params
from fsn_model.config import config_from_dict, config_to_dict
from fsn_model.fsn import previous_token_features


@settings(max_examples=10, deadline=None)
@given(dim=st.integers(1, 6), shift=st.floats(-20.0, 20.0), data=st.data())
def test_fresh_phase_projection_returns_the_same_phases_mod_two_pi(dim, shift, data):
    n_out = data.draw(st.one_of(st.none(), st.integers(1, dim)), label="n_out")
    theta = torch.randn(3, dim, dtype=torch.float64) * 4 + shift
    projected = PhaseProjection(dim, n_out).double()(theta)
    kept = dim if n_out is None else n_out
    assert projected.shape == (3, kept) and projected.abs().max() <= math.pi
    torch.testing.assert_close(phase_features(projected), phase_features(theta[:, :kept]), atol=1e-12, rtol=0)


def test_phase_projection_is_the_angle_of_a_learned_vector():
    torch.manual_seed(0)
    proj = PhaseProjection(3).double()
    with torch.no_grad():
        proj.proj.weight.normal_()
        proj.proj.bias.normal_()
    theta = torch.randn(5, 3, dtype=torch.float64)
    v = phase_features(theta) @ proj.proj.weight.T + proj.proj.bias
    torch.testing.assert_close(proj(theta), torch.atan2(v[:, 3:], v[:, :3]))


@pytest.mark.parametrize("heads,out,per_layer", [(None, True, 3), (1, True, 3), (0, True, 1), (None, False, 2)])
def test_fresh_model_with_projections_equals_the_model_without(heads, out, per_layer, perturb):
    """Identity init: given the other weights of a plain model, the same logits. per_layer:
    the new tensors of a layer (in weight and bias, out weight; fewer with heads 0 or no out)."""
    torch.manual_seed(1)
    cfg = dict(dim=16, n_layers=2, n_heads=2, hidden=24)
    plain = FSNLM(FSNConfig(**cfg), backend="stock").eval()
    proj = FSNLM(FSNConfig(**cfg, projections=True, projected_heads=heads, project_output=out), backend="stock").eval()
    result = proj.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys and len(result.missing_keys) == per_layer * 2
    idx = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(proj(idx), plain(idx), atol=1e-5, rtol=1e-5)
        perturb(proj.blocks[0].attn)
        assert not torch.allclose(proj(idx), plain(idx), atol=1e-3)


def test_layer_with_projections_matches_a_composition_of_its_parts_in_float64(perturb):
    """forward = out_proj(op(in_proj(theta), gate(theta))), with the float64 reference op,
    and its gradients pass gradcheck (through atan2, the gate and both projections)."""
    torch.manual_seed(2)
    layer = FrustratedAttention(6, 2, n_harmonics=2, projections=True, backend="reference").double()
    perturb(layer)
    plain = FrustratedAttention(6, 2, n_harmonics=2, backend="reference").double()
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if "_proj." not in k or "gate" in k})
    theta = torch.randn(2, 7, 6, dtype=torch.float64, requires_grad=True)
    projected = layer.in_proj(theta)
    gate = plain.gate(theta).to(theta.dtype)
    inner = frustrated_attention(projected.view(2, 7, 2, 3), gate, plain.coupling, plain.omega, plain.scale,
                                 backend="reference").reshape(2, 7, 6)
    torch.testing.assert_close(layer(theta), layer.out_proj(inner), atol=1e-12, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda t: layer(t), (theta,), eps=1e-6, atol=1e-6)
    layer(theta).square().sum().backward()
    for name in ("in_proj.proj.weight", "in_proj.proj.bias", "out_proj.weight", "gate_proj.weight", "coupling_real"):
        grad = layer.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_projections_on_some_heads_leave_the_other_heads_on_the_block_input_in_float64(perturb):
    """projected_heads = k: the first k heads attend over in_proj's phases, the others over
    theta itself (bit for bit), and the layer is out_proj of the op on those phases."""
    torch.manual_seed(8)
    layer = FrustratedAttention(9, 3, n_harmonics=2, projections=True, projected_heads=2,
                                backend="reference").double()
    assert layer.in_proj.proj.weight.shape == (2 * 6, 2 * 9)  # 6 phases out, read from all 9 oscillators
    perturb(layer)
    theta = torch.randn(2, 7, 9, dtype=torch.float64, requires_grad=True) * 3
    projected = layer.cached_phases(theta)
    assert torch.equal(projected[..., 6:], theta[..., 6:])
    torch.testing.assert_close(projected[..., :6], layer.in_proj(theta), atol=0, rtol=0)
    assert not torch.allclose(phase_features(projected[..., :6]), phase_features(theta[..., :6]), atol=1e-2)
    gate = layer.gate(theta).to(theta.dtype)
    inner = frustrated_attention(projected.view(2, 7, 3, 3), gate, layer.coupling, layer.omega, layer.scale,
                                 backend="reference").reshape(2, 7, 9)
    torch.testing.assert_close(layer(theta), layer.out_proj(inner), atol=1e-12, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda x: layer(x), (theta.detach().requires_grad_(),), eps=1e-6, atol=1e-6)


def test_projections_without_the_output_map_in_float64(perturb):
    """project_output=False: the layer is the op on in_proj's phases, each increment left on
    the oscillator it was computed for (no out_proj), and differentiable through in_proj."""
    torch.manual_seed(9)
    layer = FrustratedAttention(6, 2, n_harmonics=2, projections=True, project_output=False,
                                backend="reference").double()
    assert layer.out_proj is None and layer.in_proj is not None
    perturb(layer)
    theta = torch.randn(2, 7, 6, dtype=torch.float64) * 3
    projected = layer.in_proj(theta)
    gate = layer.gate(theta).to(theta.dtype)
    inner = frustrated_attention(projected.view(2, 7, 2, 3), gate, layer.coupling, layer.omega, layer.scale,
                                 backend="reference").reshape(2, 7, 6)
    torch.testing.assert_close(layer(theta), inner, atol=1e-12, rtol=1e-12)
    layer(theta).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.in_proj.parameters())


def test_model_with_projections_is_causal_bit_exact(perturb):
    torch.manual_seed(3)
    model = FSNLM(FSNConfig(dim=16, n_layers=2, n_heads=2, hidden=24, projections=True), backend="stock").eval()
    for block in model.blocks:
        perturb(block.attn)
    idx = torch.randint(0, 256, (2, 12))
    idx2 = idx.clone()
    idx2[:, 7] = (idx2[:, 7] + 1) % 256
    with torch.no_grad():
        a, b = model(idx), model(idx2)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_config_sizing_roundtrip_and_checks():
    model = build_model("fsn", "60k", projections=True)
    attn = model.blocks[0].attn
    assert model.config.projections and attn.projections and attn.out_proj.weight.shape == (attn.dim, attn.dim)
    assert abs(count_params(model) - 60_000) <= 0.02 * 60_000
    again = model_from_config(config_from_dict(config_to_dict(model.config)))
    assert again.config == model.config and count_params(again) == count_params(model)
    plain = build_model("fsn-paper", "60k")
    assert not plain.config.projections and plain.blocks[0].attn.in_proj is None  # the paper's FSN
    assert build_model("fsn", "60k").config == model.config  # fsn: with the projections
    old = {k: v for k, v in config_to_dict(plain.config).items() if k != "projections"}
    assert config_from_dict(old).projections is False  # configs saved before the field rebuild unchanged
    with pytest.raises(TypeError, match="projections must be a bool, got 1"):
        FSNConfig(projections=1)
    with pytest.raises(TypeError, match="projections must be a bool, got 'yes'"):
        FrustratedAttention(8, 2, projections="yes")
    with pytest.raises(ValueError, match="FSN models only"):
        build_model("transformer", "60k", projections=True)


def test_projected_heads_sizing_roundtrip_and_checks():
    model = build_model("fsn", "60k", projections=True, projected_heads=2)
    attn = model.blocks[0].attn
    assert model.config.projected_heads == attn.projected_heads == 2 and attn.n_heads >= 2
    assert attn.in_proj.n_out == 2 * attn.head_dim and abs(count_params(model) - 60_000) <= 0.02 * 60_000
    again = model_from_config(config_from_dict(config_to_dict(model.config)))
    assert again.config == model.config and count_params(again) == count_params(model)
    assert build_model("fsn", "60k", projections=True).blocks[0].attn.projected_heads == attn.n_heads  # None: all
    out_only = build_model("fsn", "60k", projections=True, projected_heads=0).blocks[0].attn  # 0: the output map only
    assert out_only.in_proj is None and out_only.out_proj is not None
    theta = torch.randn(1, 5, out_only.dim)
    assert out_only.cached_phases(theta) is theta
    old = {k: v for k, v in config_to_dict(build_model("fsn", "60k", projections=True).config).items()
           if k != "projected_heads"}
    assert config_from_dict(old).projected_heads is None  # configs saved before the field rebuild unchanged
    with pytest.raises(ValueError, match="projected_heads=1 needs projections=True"):
        FSNConfig(projected_heads=1)
    with pytest.raises(ValueError, match="project_output=False needs projections=True"):
        FSNConfig(project_output=False)
    with pytest.raises(ValueError, match="projected_heads=0 with project_output=False projects nothing"):
        FSNConfig(projections=True, projected_heads=0, project_output=False)
    with pytest.raises(TypeError, match="project_output must be a bool, got 1"):
        FSNConfig(projections=True, project_output=1)
    with pytest.raises(ValueError, match=r"projected_heads must be in 0..n_heads \(4\), got 5"):
        FSNConfig(projections=True, projected_heads=5)
    with pytest.raises(TypeError, match="projected_heads must be None or an int, got True"):
        FSNConfig(projections=True, projected_heads=True)
    with pytest.raises(ValueError, match=r"projected_heads must be in 0..n_heads \(2\), got -1"):
        FrustratedAttention(8, 2, projections=True, projected_heads=-1)
    with pytest.raises(ValueError, match="needs projections=True"):
        FrustratedAttention(8, 2, projected_heads=1)
    with pytest.raises(ValueError, match="FSN models only"):
        build_model("transformer", "60k", projected_heads=1)


def test_projections_keep_phases_and_increments_in_theta_dtype_under_autocast(perturb):
    """Under bf16 autocast the linear maps run in bf16, but projected (an angle) and the returned
    increments stay in theta's float32, as without projections."""
    torch.manual_seed(4)
    layer = FrustratedAttention(16, 2, projections=True, backend="stock")
    perturb(layer, std=0.1)
    theta = torch.randn(2, 9, 16)
    with torch.no_grad():
        exact_out, exact_projected = layer(theta), layer.cached_phases(theta)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, projected = layer(theta), layer.cached_phases(theta)
    assert out.dtype == projected.dtype == torch.float32
    torch.testing.assert_close(phase_features(projected), phase_features(exact_projected), atol=3e-2, rtol=0)
    torch.testing.assert_close(out, exact_out, atol=3e-2, rtol=3e-2)


def test_prefill_projects_each_layer_once_and_matches_the_forward(perturb):
    """The prefill caches projected = in_proj(theta) and the attention reuses it: one projection per
    layer, and the same logits as the forward."""
    torch.manual_seed(6)
    model = FSNLM(FSNConfig(dim=12, n_layers=2, n_heads=2, hidden=16, projections=True), backend="stock").eval()
    for block in model.blocks:
        perturb(block.attn)
    calls = []
    for block in model.blocks:
        block.attn.in_proj.register_forward_hook(lambda *_: calls.append(1))
    idx = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        logits, cache = model.prefill(idx)
        assert len(calls) == 2
        torch.testing.assert_close(logits, model(idx), atol=0, rtol=0)
        theta = model.embed(idx) * model.embed_scale
        torch.testing.assert_close(cache.phases[0][:, :7], model.blocks[0].attn.in_proj(theta), atol=0, rtol=0)


@pytest.mark.parametrize("mixer", ["swiglu", "meanfield"])
def test_token_shift_with_projections_reads_the_previous_tokens_projected_phases(mixer, perturb):
    """With projections and token_shift the mixer's previous-token input is projected[t-1], the row
    the phase cache holds: the block equals that composition, the shift's mixes away from
    their init so the previous token matters."""
    torch.manual_seed(7)
    cfg = FSNConfig(dim=8, n_layers=1, n_heads=2, hidden=12, n_modes=5, mixer=mixer, projections=True,
                    token_shift=True)
    block = FSNLM(cfg, backend="stock").double().blocks[0]
    perturb(block.attn)
    with torch.no_grad():
        for name, p in block.mix.named_parameters():
            if name.startswith("shift_"):
                p.uniform_(0.2, 0.8)
    theta = torch.randn(2, 6, 8, dtype=torch.float64) * 2
    with torch.no_grad():
        mid = theta + block.attn(theta)
        expected = mid + block.mix(mid, previous_token_features(block.attn.in_proj(theta)))
        torch.testing.assert_close(block(theta), expected, atol=1e-12, rtol=0)
        assert not torch.allclose(block(theta), mid + block.mix(mid, previous_token_features(theta)))


def test_old_option_names_load_silently_and_warn_when_passed():
    """Configs stored under the old names (attn_proj, attn_proj_heads, attn_proj_out) load as
    the current ones; a caller passing an old name is warned; both names at once is refused."""
    import warnings

    old = {"name": "fsn", "dim": 16, "n_layers": 1, "n_heads": 2, "hidden": 8, "attn_proj": True,
           "attn_proj_heads": 1, "attn_proj_out": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = config_from_dict(old)
    assert (cfg.projections, cfg.projected_heads, cfg.project_output) == (True, 1, False)
    with pytest.warns(DeprecationWarning, match="'attn_proj' is deprecated, use 'projections'"):
        model = build_model("fsn", "30k", attn_proj=True)
    assert model.config.projections
    with pytest.raises(ValueError, match="old name of 'projections'"):
        config_from_dict({**old, "projections": True})
