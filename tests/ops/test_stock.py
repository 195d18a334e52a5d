"""The stock-PyTorch "stock" backend against the float64 reference: output, lse and every
gradient on odd shapes, NH 1..8, with and without omega, packed sequences, float32 and
float64; the decode step over the phase cache against the full forward."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsn_kernels import frustrated_attention, frustrated_attention_decode, naive_frustrated_attention
from fsn_kernels.frustrated_attention import stock, stock_function
from fsn_kernels.testing import (
    TOLERANCES,
    assert_close,
    assert_grads_close,
    make_inputs,
    output_and_grads,
    reference_output_and_grads,
    to_double,
)

TOL = {torch.float32: TOLERANCES["stock-float32"], torch.float64: TOLERANCES["stock-float64"]}


def _stock(*args, **kw):
    return frustrated_attention(*args, backend="stock", **kw)


def _check(theta, gate, coupling, omega, scale=None, cu_seqlens=None):
    """Output, lse and the three gradients of the stock backend vs the float64 reference
    (sequence by sequence when packed)."""
    atol, rtol = TOL[theta.dtype]
    up = torch.randn(theta.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = output_and_grads(lambda *a: _stock(*a, cu_seqlens=cu_seqlens), theta, gate, coupling, omega, up, scale)
    want = reference_output_and_grads(theta, gate, coupling, omega, up, scale) if cu_seqlens is None else \
        output_and_grads(lambda *a: frustrated_attention(*a, cu_seqlens=cu_seqlens, backend="reference"),
                         *to_double(theta, gate, coupling, omega, up), scale)
    assert_grads_close(got, want, atol, rtol)
    _, lse = _stock(theta, gate, coupling, omega, scale, cu_seqlens=cu_seqlens, return_lse=True)
    _, lse_ref = frustrated_attention(*to_double(theta, gate, coupling, omega), scale, cu_seqlens=cu_seqlens,
                                      return_lse=True, backend="reference")
    assert lse.shape == lse_ref.shape and lse.dtype == (torch.float64 if theta.dtype == torch.float64 else
                                                         torch.float32)
    assert_close(lse, lse_ref, atol, rtol, "lse")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("omega", ["random", None])
@pytest.mark.parametrize("NH", range(1, 9))
def test_stock_equals_the_float64_reference(dtype, omega, NH):
    shape = [(2, 13, 3, 5), (1, 1, 1, 1), (1, 37, 2, 7), (3, 6, 1, 3)][NH % 4]
    _check(*make_inputs(*shape, NH, omega=omega, dtype=dtype, seed=NH))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cu", [[0, 5, 5, 12, 17, 23], [0, 1, 2, 3], [0, 23]], ids=["mixed", "singles", "one"])
def test_stock_packed_equals_each_sequence_alone(dtype, cu):
    theta, gate, coupling, omega = make_inputs(1, cu[-1], 2, 6, 3, dtype=dtype, seed=len(cu))
    _check(theta, gate, coupling, omega, 0.7, torch.tensor(cu, dtype=torch.int32))


@settings(max_examples=6, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 40), H=st.integers(1, 3), D=st.integers(1, 9), NH=st.integers(1, 8),
       omega=st.sampled_from(["random", "rope", None]), scale=st.sampled_from([None, 0.05, 1.3]))
def test_stock_property_any_shape(B, T, H, D, NH, omega, scale):
    _check(*make_inputs(B, T, H, D, NH, omega=omega, seed=T), scale=scale)


def test_stock_low_precision_inputs_are_computed_in_float32():
    theta, gate, coupling, omega = make_inputs(2, 9, 2, 4, 2)
    for dt in (torch.bfloat16, torch.float16):
        out = _stock(theta.to(dt), gate.to(dt), coupling, omega)
        ref = naive_frustrated_attention(theta.to(dt), gate.to(dt), coupling, omega)[0]
        assert out.dtype == dt
        assert_close(out, ref, 1e-2, 1e-2, str(dt))


def test_stock_empty_and_gradcheck():
    theta, gate, coupling, omega = make_inputs(2, 0, 2, 3, 2)
    out, lse = _stock(theta, gate, coupling, omega, return_lse=True)
    assert out.shape == theta.shape and lse.shape == (2, 2, 0)
    th, g, c, om = make_inputs(1, 5, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, k: _stock(a, b, k, om), (th, g, c))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_stock_generic_attention_path_equals_the_reference(monkeypatch, dtype):
    """The path of devices without PyTorch's CPU flash kernel (F.scaled_dot_product_attention
    differentiated by autograd, the log-sum-exp recomputed in chunks), run here by hiding
    the CPU kernel."""
    monkeypatch.setattr(stock, "_CPU_FLASH", None)
    monkeypatch.setattr(stock, "LSE_CHUNK", 4)
    _check(*make_inputs(2, 19, 2, 3, 2, dtype=dtype))
    _check(*make_inputs(1, 19, 2, 3, 3, dtype=dtype), cu_seqlens=torch.tensor([0, 7, 19], dtype=torch.int32))


def test_auto_runs_stock_off_the_kernels():
    theta, gate, coupling, omega = make_inputs(1, 7, 2, 3, 2, device="cpu")
    assert torch.equal(frustrated_attention(theta, gate, coupling, omega), _stock(theta, gate, coupling, omega))


# ----------------------------------------------------------------------------- decode
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("omega", ["random", None])
@pytest.mark.parametrize("NH", [1, 3, 8])
def test_stock_decode_equals_the_full_forward_ragged(dtype, omega, NH):
    B, T, H, D = 4, 12, 2, 5
    theta, gate, coupling, om = make_inputs(B, T, H, D, NH, omega=omega, dtype=dtype, device="cpu", seed=NH)
    full = frustrated_attention(theta, gate, coupling, om, backend="reference")
    lens = [11, 0, 4, 1]
    cache = torch.full((B, T + 3, H, D), float("nan"), dtype=dtype)  # unread rows hold NaN
    for b, n in enumerate(lens):
        cache[b, :n] = theta[b, :n]
    new = torch.stack([theta[b, n] for b, n in enumerate(lens)])[:, None]
    g = torch.stack([gate[b, n] for b, n in enumerate(lens)])[:, None]
    before = cache.clone()
    for backend in ("stock", "auto"):
        cache.copy_(before)
        out = frustrated_attention_decode(new, g, coupling, om, phase_cache=cache,
                                          cache_seqlens=torch.tensor(lens, dtype=torch.int32), backend=backend)
        assert_close(out[:, 0], torch.stack([full[b, n] for b, n in enumerate(lens)]), *TOL[dtype], "decode")
        for b, n in enumerate(lens):
            assert torch.equal(cache[b, n], theta[b, n])
            written = torch.zeros(T + 3, dtype=torch.bool)
            written[n] = True
            torch.testing.assert_close(cache[b, ~written], before[b, ~written], atol=0, rtol=0,
                                       equal_nan=True)  # nothing else written


def test_stock_decode_model_generation_equals_the_forward():
    from fsn_model import build_model

    torch.manual_seed(0)
    model = build_model("fsn", "30k", n_layers=2).eval()
    idx = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        want = model(idx)
        logits, cache = model.prefill(idx[:, :5], capacity=6)  # grows by doubling on the way
        got = [logits[:, -1]]
        for i in range(5, 20):
            step, cache = model.decode(idx[:, i], cache)
            got.append(step)
    assert_close(torch.stack(got[:-1], 1), want[:, 4:19], 1e-4, 1e-4, "logits")


# ---------------------------------------------------------------------------- compile
def test_stock_custom_ops_opcheck():
    from fsn_kernels.frustrated_attention.stock_function import _bwd_op, _fwd_op

    theta, gate, coupling, omega = make_inputs(1, 9, 2, 3, 2, device="cpu")
    c_real = torch.view_as_real(coupling).contiguous()
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    for packed in (None, cu):
        torch.library.opcheck(_fwd_op, (theta, gate, c_real, omega, 0.3, packed, False))
        _, lse, o, q, k, v = _fwd_op(theta, gate, c_real, omega, 0.3, packed, False)
        torch.library.opcheck(_bwd_op, (torch.randn_like(theta), theta, gate, c_real, omega, 0.3, packed, o, lse,
                                        q, k, v, False))


def test_stock_compile_fullgraph_matches_eager():
    theta, gate, coupling, omega = make_inputs(2, 11, 2, 4, 2, device="cpu")

    def loss_fn(th, g, c):
        return frustrated_attention(th, g, c, omega, backend="stock").sin().sum()

    results = []
    for fn in (torch.compile(loss_fn, fullgraph=True, backend="aot_eager"), loss_fn):
        leaves = [x.clone().requires_grad_(True) for x in (theta, gate, coupling)]
        loss = fn(*leaves)
        results.append((loss, *torch.autograd.grad(loss, leaves)))
    for name, a, b in zip(["loss", "grad theta", "grad gate", "grad coupling"], *results):
        assert_close(a, b, 1e-6, 1e-6, name)


# ------------------------------------------------------------- compiled per-token work
def test_stock_compiled_per_token_work_equals_the_reference(monkeypatch):
    """The ops with their per-token work fused by torch.compile (what "auto" runs for large
    inputs on a CPU): float64 tolerances against the reference, two shapes through one
    dynamic-shape compile of each direction."""
    monkeypatch.setattr(stock_function, "STOCK_COMPILE", "on")
    monkeypatch.setattr(stock_function, "_COMPILED", {})
    _check(*make_inputs(2, 13, 3, 5, 3, dtype=torch.float64, seed=4))
    _check(*make_inputs(3, 21, 3, 5, 3, dtype=torch.float64, seed=5), scale=0.4)
    assert set(stock_function._COMPILED) == {"forward", "backward"} and not stock_function._COMPILE_FAILED


def test_stock_compile_policy():
    big = torch.empty(1, 1 << 16, 1, 1)
    small = torch.empty(2, 8, 2, 4)
    assert not stock_function.compile_wanted(big, False, "off")
    assert stock_function.compile_wanted(small, False, "on")
    assert not stock_function.compile_wanted(big, True, "on")  # packed sequences stay eager
    assert not stock_function.compile_wanted(small, False, "auto")
    assert not stock_function.compile_wanted(big.to("meta"), False, "auto")  # only on a CPU
    with pytest.raises(ValueError, match="FSN_STOCK_COMPILE must be one of"):
        stock_function.compile_wanted(small, False, "yes")


def test_stock_compile_auto_needs_a_cxx_compiler(monkeypatch):
    big = torch.empty(1, 1 << 16, 1, 1)
    monkeypatch.setattr(stock_function, "_CXX", True)
    assert stock_function.compile_wanted(big, False, "auto")
    monkeypatch.setattr(stock_function, "_CXX", False)
    assert not stock_function.compile_wanted(big, False, "auto")


def test_stock_compiles_only_when_a_backward_follows(monkeypatch):
    """A forward-only call (evaluation, a prefill) cannot amortise a compile: it stays eager."""
    calls = []
    monkeypatch.setattr(stock_function, "STOCK_COMPILE", "on")
    monkeypatch.setattr(stock_function, "_run", lambda name, fn, *a: calls.append(name) or fn(*a))
    theta, gate, coupling, omega = make_inputs(1, 9, 2, 3, 2, requires_grad=True)
    with torch.no_grad():
        _stock(theta, gate, coupling, omega)
    _stock(theta.detach(), gate.detach(), coupling.detach(), omega)
    assert calls == []
    _stock(theta, gate, coupling, omega).sum().backward()
    assert calls == ["forward", "backward"]


def test_stock_compile_failure_warns_once_and_runs_eagerly(monkeypatch):
    def broken(fn, **kw):
        def run(*a):
            raise RuntimeError("no C++ compiler")
        return run
    monkeypatch.setattr(stock_function, "STOCK_COMPILE", "on")
    monkeypatch.setattr(stock_function, "_COMPILED", {})
    monkeypatch.setattr(stock_function, "_COMPILE_FAILED", [])
    monkeypatch.setattr(stock_function.torch, "compile", broken)
    theta, gate, coupling, omega = make_inputs(2, 9, 2, 3, 2, requires_grad=True)  # training: compiles
    with pytest.warns(RuntimeWarning, match="could not be compiled.*no C\\+\\+ compiler"):
        out = _stock(theta, gate, coupling, omega)
    assert not stock_function.compile_wanted(theta, False, "on")  # eager for good
    monkeypatch.setattr(stock_function, "STOCK_COMPILE", "off")
    assert torch.equal(out, _stock(theta, gate, coupling, omega))


# ----------------------------------------------------------------------------- names
def test_sdpa_backend_name_is_deprecated_and_runs_stock():
    from fsn_model.attention import FrustratedAttention

    theta, gate, coupling, omega = make_inputs(1, 7, 2, 3, 2)
    with pytest.warns(DeprecationWarning, match="'sdpa' is deprecated.*'stock'"):
        out = frustrated_attention(theta, gate, coupling, omega, backend="sdpa")
    assert torch.equal(out, _stock(theta, gate, coupling, omega))
    with pytest.warns(DeprecationWarning, match="'stock'"):
        layer = FrustratedAttention(6, 2, backend="sdpa")
    assert layer.backend == "stock"
