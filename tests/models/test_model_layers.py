"""fsn_model layers and models: shapes, gradients, init, cached decoding."""
import pytest
import torch

from fsn_kernels.frustrated_attention.naive import kuramoto_closed_form
from fsn_kernels.testing import DEVICE, backend_params
from fsn_model import (
    FSNLM,
    FrustratedAttention,
    FSNConfig,
    MeanFieldCoupling,
    PhaseSwiGLU,
    TransformerConfig,
    TransformerLM,
)


def _randomise_coupling(layer, std=0.3):
    with torch.no_grad():
        layer.coupling_real.normal_(0.0, std)


def test_attention_shapes_grads_and_real_parameters():
    torch.manual_seed(0)
    layer = FrustratedAttention(24, 3, n_harmonics=3)
    assert layer.coupling_real.shape == (3, 8, 3, 2, 2) and not layer.coupling_real.is_complex()
    assert all(not p.is_complex() for p in layer.parameters())
    assert layer.coupling.shape == (3, 8, 3, 2) and layer.coupling.is_complex()
    assert not layer.omega.requires_grad and "omega" not in layer.state_dict()
    theta = (5 * torch.randn(2, 7, 24)).requires_grad_()
    out = layer(theta)
    assert out.shape == (2, 7, 24) and out.dtype == theta.dtype and torch.isfinite(out).all()
    out.square().sum().backward()
    for t in (theta.grad, layer.gate_proj.weight.grad, layer.gate_proj.bias.grad, layer.coupling_real.grad):
        assert t is not None and torch.isfinite(t).all() and t.abs().sum() > 0


def test_fresh_attention_is_kuramoto():
    """No init noise: gates are 1, K_1 = k1, rest 0 -> k1 * sum_u A sin(theta_u - theta_t)."""
    layer = FrustratedAttention(16, 2, n_harmonics=2, k1_init=0.7, coupling_std=0.0, gate_std=0.0)
    theta = torch.randn(2, 9, 16, dtype=torch.float32) * 3
    ref = kuramoto_closed_form(theta.view(2, 9, 2, 8), torch.ones(2, 9, 2, 8), layer.omega)
    torch.testing.assert_close(layer(theta), 0.7 * ref.reshape(2, 9, 16).float(), atol=1e-5, rtol=1e-5)


def test_attention_without_delay_never_uses_or_trains_L():
    torch.manual_seed(2)
    layer = FrustratedAttention(16, 2, n_harmonics=2, delay=False)
    with torch.no_grad():
        layer.coupling_real[..., 1, :].normal_()  # even a non-zero stored L must not act
    theta = torch.randn(2, 9, 16) * 2
    out = layer(theta)
    reference = FrustratedAttention(16, 2, n_harmonics=2)
    reference.load_state_dict(layer.state_dict())
    with torch.no_grad():
        reference.coupling_real[..., 1, :] = 0
    torch.testing.assert_close(out, reference(theta), atol=0, rtol=0)
    out.square().sum().backward()
    assert torch.equal(layer.coupling_real.grad[..., 1, :], torch.zeros_like(layer.coupling_real.grad[..., 1, :]))
    assert layer.coupling_real.grad[..., 0, :].abs().sum() > 0


@pytest.mark.parametrize("backend", backend_params())
def test_attention_decode_equals_forward(backend):
    """Step by step over a preallocated cache (written in place, never copied) equals the
    full forward; ragged lengths decode each sequence at its own position."""
    torch.manual_seed(1)
    dev = DEVICE if backend == "triton" else "cpu"
    layer = FrustratedAttention(16, 2, n_harmonics=3, backend=backend).to(dev)
    _randomise_coupling(layer)  # nonzero delay L_n and harmonics exercised
    theta = torch.randn(2, 11, 16, device=dev) * 2
    full = layer(theta)
    cache = torch.zeros(2, 16, 16, device=dev)
    lens = torch.zeros(2, dtype=torch.int32, device=dev)
    ptr = cache.data_ptr()
    steps = []
    for t in range(11):
        steps.append(layer.decode(theta[:, t: t + 1], cache, lens))
        lens += 1
    assert cache.data_ptr() == ptr and torch.equal(cache[:, :11], theta)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-5, rtol=1e-4)
    # ragged: sequence 0 at position 3, sequence 1 at position 10
    lens = torch.tensor([3, 10], dtype=torch.int32, device=dev)
    new = torch.stack([theta[0, 3], theta[1, 10]])[:, None]
    ragged = layer.decode(new, cache, lens)
    torch.testing.assert_close(ragged[0, 0], full[0, 3], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ragged[1, 0], full[1, 10], atol=2e-5, rtol=1e-4)


def test_meanfield_closed_form_and_grads():
    """NH=1, K_1=1: dtheta = sum_m softmax_m(s) sin(psi_m - theta_t)."""
    torch.manual_seed(2)
    mf = MeanFieldCoupling(8, 2, n_modes=5, n_harmonics=1)
    with torch.no_grad():
        mf.coupling_real.zero_()
        mf.coupling_real[..., 0, 0] = 1.0
    theta = torch.randn(3, 4, 8, requires_grad=True)
    out = mf(theta)
    g = torch.nn.functional.softplus(mf.gate_proj(torch.cat([theta.cos(), theta.sin()], -1))).view(3, 4, 2, 4)
    th = theta.view(3, 4, 2, 4)
    diff = th[:, :, :, None, :] - mf.psi[None, None]  # (B, T, H, M, D)
    attn = torch.softmax(0.5 * (g[:, :, :, None] * diff.cos()).sum(-1), -1)
    ref = (attn[..., None] * torch.sin(-diff)).sum(3).reshape(3, 4, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert mf.psi.grad.abs().sum() > 0 and theta.grad.abs().sum() > 0


def test_meanfield_two_harmonics_complex_coupling_against_a_loop():
    torch.manual_seed(3)
    mf = MeanFieldCoupling(6, 2, n_modes=4, n_harmonics=2)
    with torch.no_grad():
        mf.coupling_real.normal_(0.0, 0.7)
    theta = torch.randn(2, 3, 6, dtype=torch.float64)
    out = mf(theta.float()).double()
    g = torch.nn.functional.softplus(mf.gate_proj(torch.cat([theta.cos(), theta.sin()], -1).float())).double()
    g, th = g.view(2, 3, 2, 3), theta.view(2, 3, 2, 3)
    psi, K = mf.psi.double(), torch.view_as_complex(mf.coupling_real.double())  # (H, M, D), (H, D, NH)
    ref = torch.zeros(2, 3, 2, 3, dtype=torch.float64)
    for b in range(2):
        for t in range(3):
            for h in range(2):
                s = 3 ** -0.5 * (g[b, t, h] * torch.cos(th[b, t, h] - psi[h])).sum(-1)  # (M,)
                a = torch.softmax(s, 0)
                for n in (1, 2):
                    o = K[h, :, n - 1] * (a[:, None] * torch.exp(1j * n * psi[h])).sum(0)
                    ref[b, t, h] += (torch.exp(-1j * n * th[b, t, h]) * o).imag
    torch.testing.assert_close(out, ref.reshape(2, 3, 6), atol=2e-5, rtol=1e-4)


def test_swiglu_mixer_shapes():
    mix = PhaseSwiGLU(12, 20)
    theta = torch.randn(2, 5, 12, requires_grad=True)
    out = mix(theta)
    assert out.shape == (2, 5, 12)
    out.sum().backward()
    assert theta.grad.abs().sum() > 0
    torch.testing.assert_close(mix(theta + 2 * torch.pi), out, atol=1e-5, rtol=1e-5)  # a function of the angle


def test_models_shapes_and_gradients():
    torch.manual_seed(3)
    idx = torch.randint(0, 256, (2, 10))
    for model in (FSNLM(FSNConfig(dim=16, n_layers=2, n_heads=2, hidden=24)),
                  FSNLM(FSNConfig(dim=16, n_layers=2, n_heads=2, mixer="meanfield", n_modes=6)),
                  TransformerLM(TransformerConfig(dim=16, n_layers=2, n_heads=2, hidden=24))):
        logits = model(idx)
        assert logits.shape == (2, 10, 256) and logits.dtype == torch.float32
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, missing


def test_transformer_is_causal():
    model = TransformerLM(TransformerConfig(dim=16, n_layers=2, n_heads=2, hidden=24))
    idx = torch.randint(0, 256, (1, 12))
    idx2 = idx.clone()
    idx2[0, 8:] = (idx2[0, 8:] + 1) % 256
    torch.testing.assert_close(model(idx)[:, :8], model(idx2)[:, :8])


@pytest.mark.parametrize("backend", backend_params())
def test_lm_cached_decoding_equals_full_forward(backend, perturb):
    """prefill + decode through the preallocated phase cache (in place, growing by doubling
    past its capacity) equals the full forward; so does decoding from an empty cache."""
    torch.manual_seed(4)
    for mixer, extra in [("swiglu", {}), ("meanfield", {}), ("swiglu", {"token_shift": True}),
                         ("meanfield", {"token_shift": True}), ("swiglu", {"projections": True}),
                         ("meanfield", {"projections": True}), ("swiglu", {"projections": True, "token_shift": True}),
                         ("swiglu", {"projections": True, "projected_heads": 1, "token_shift": True}),
                         ("swiglu", {"projections": True, "project_output": False})]:
        cfg = FSNConfig(dim=16, n_layers=3, n_heads=2, n_harmonics=2, mixer=mixer, hidden=24, n_modes=6, **extra)
        dev = DEVICE if backend == "triton" else "cpu"
        model = FSNLM(cfg, backend=backend).to(dev).eval()
        for block in model.blocks:
            _randomise_coupling(block.attn)
            if block.attn.projections:  # away from the identity init, so the cache must hold the projected phases
                perturb(block.attn)
        idx = torch.randint(0, 256, (2, 13), device=dev)
        with torch.no_grad():
            full = model(idx)
            logits, cache = model.prefill(idx[:, :5], capacity=9)
            assert len(cache.phases) == 3 and cache.phases[0].shape == (2, 9, 16)  # C = dim floats / token / layer
            assert cache.length == 5 and cache.seqlens.tolist() == [5, 5] and cache.bytes_per_token == 3 * 16 * 4
            ptrs = [p.data_ptr() for p in cache.phases]
            steps = [logits]
            for t in range(5, 13):
                step_logits, cache = model.decode(idx[:, t], cache)
                steps.append(step_logits[:, None])
                if t < 8:  # within capacity: written in place, no new tensors
                    assert [p.data_ptr() for p in cache.phases] == ptrs
            assert cache.length == 13 and cache.capacity == 18  # doubled once
            empty = model.new_cache(2, 4)
            first, empty = model.decode(idx[:, 0], empty)
            second, _ = model.decode(idx[:, 1], empty)
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(first, full[:, 0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(second, full[:, 1], atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match="PhaseCache"):
        model.decode(idx[:, 0], [None] * 3)


def test_transformer_kv_cache_decoding_equals_full_forward():
    """The baseline's preallocated KV cache: prefill + decode (SDPA over a view of the cache)
    equals the full forward, within capacity and past it (doubling)."""
    torch.manual_seed(5)
    model = TransformerLM(TransformerConfig(dim=16, n_layers=2, n_heads=2, hidden=24)).eval()
    idx = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        full = model(idx)
        logits, cache = model.prefill(idx[:, :4], capacity=8)
        assert cache.k[0].shape == (2, 2, 8, 8) and cache.bytes_per_token == 2 * 2 * 16 * 4  # K + V, 2 layers
        steps = [logits]
        for t in range(4, 12):
            step_logits, cache = model.decode(idx[:, t], cache)
            steps.append(step_logits[:, None])
        assert cache.length == 12 and cache.capacity == 16
        first, _ = model.decode(idx[:, 0], model.new_cache(2, 3))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first, full[:, 0], atol=1e-5, rtol=1e-5)


def test_forward_does_not_go_through_prefill(monkeypatch):
    model = FSNLM(FSNConfig(dim=16, n_layers=2, n_heads=2, hidden=24))
    idx = torch.randint(0, 256, (1, 6))
    expected, cache = model.prefill(idx)
    monkeypatch.setattr(FSNLM, "prefill", lambda *args, **kwargs: pytest.fail("forward called prefill"))
    torch.testing.assert_close(model(idx), expected, atol=0, rtol=0)
    assert len(cache.phases) == 2


def test_models_take_their_config_type():
    with pytest.raises(TypeError, match="FSNConfig"):
        FSNLM(TransformerConfig())
    with pytest.raises(TypeError, match="TransformerConfig"):
        TransformerLM(FSNConfig())
    with pytest.raises(ValueError, match="mixer"):
        FSNConfig(mixer="mlp")
    with pytest.raises(ValueError, match="divisible"):
        FSNConfig(dim=10, n_heads=4)
