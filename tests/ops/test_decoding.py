"""The decode step (``frustrated_attention_decode``) vs the last row of the full op over
the cached prefix plus the new token: ragged cache lengths (0 and T_max - 1 included),
several splits of the cache, the cache written in place at ``cache_seqlens[b]`` and
nowhere else, rows past the length never read, and every bad input refused by name."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fsn_kernels import frustrated_attention, frustrated_attention_decode, naive_frustrated_attention
from fsn_kernels.testing import (
    TOLERANCES,
    assert_close,
    backend_params,
    make_inputs,
    nan_poisoned_allocations,
    needs_triton,
    to_double,
)

ATOL, RTOL = TOLERANCES["decode"]


def _case(B, T_max, H, D, NH, lens, omega="random", seed=0, dtype=torch.float32):
    """Cache (B, T_max, H, D) with NaN in every row >= the length (they must not be read),
    the new token, and the inputs of the full op per sequence."""
    theta, gate, coupling, om = make_inputs(B, T_max + 1, H, D, NH, omega=omega, seed=seed, dtype=dtype)
    lens = torch.tensor(lens, dtype=torch.int32, device=theta.device)
    cache = theta[:, :T_max].clone()
    for b, t in enumerate(lens.tolist()):
        cache[b, t:] = float("nan")
    theta_new = torch.stack([theta[b, t] for b, t in enumerate(lens.tolist())])[:, None].contiguous()
    gate_new = torch.stack([gate[b, t] for b, t in enumerate(lens.tolist())])[:, None].contiguous()
    return dict(theta=theta, gate=gate, coupling=coupling, omega=om, lens=lens, cache=cache,
                theta_new=theta_new, gate_new=gate_new)


def _expected(c, scale=None):
    """Row t of the float64 reference over theta[b, :t + 1] (the cached prefix + new token)."""
    rows = []
    for b, t in enumerate(c["lens"].tolist()):
        th, g, cp, om = to_double(c["theta"][b:b + 1, :t + 1], c["gate"][b:b + 1, :t + 1], c["coupling"], c["omega"])
        rows.append(naive_frustrated_attention(th, g, cp, om, scale)[0][:, -1:])
    return torch.cat(rows)


def _decode(c, backend, scale=None, num_splits=None):
    cache = c["cache"].clone()
    with nan_poisoned_allocations():
        out = frustrated_attention_decode(c["theta_new"], c["gate_new"], c["coupling"], c["omega"], scale,
                                          phase_cache=cache, cache_seqlens=c["lens"], backend=backend,
                                          num_splits=num_splits)
    return out, cache


def _check_cache(c, cache):
    """The new token at position t of each sequence; every other element untouched (NaN
    past t stays NaN)."""
    want = c["cache"].clone()
    for b, t in enumerate(c["lens"].tolist()):
        want[b, t] = c["theta_new"][b, 0]
    assert torch.equal(cache.isnan(), want.isnan())
    assert torch.equal(cache.nan_to_num(), want.nan_to_num())


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("D,NH,omega,lens,num_splits", [
    (7, 3, "random", [0, 5, 37], 3),
    (16, 2, None, [38, 1, 16], 1),
    (32, 1, "rope", [17, 0, 31], 2),
    (5, 2, "random", [39, 39, 0], 5),
    (40, 5, "rope", [21, 3, 9], 2),  # wide values: 8 rows per block, reduced per block
    (100, 8, None, [12, 0, 39], 3),  # the widest: 2 rows per block
])
def test_decode_equals_last_row_of_full_op(backend, D, NH, omega, lens, num_splits):
    c = _case(3, 40, 2, D, NH, lens, omega=omega, seed=D + NH)
    out, cache = _decode(c, backend, num_splits=num_splits)
    assert out.shape == (3, 1, 2, D) and out.dtype == torch.float32
    assert_close(out, _expected(c), ATOL, RTOL, "out")
    _check_cache(c, cache)


@needs_triton()
def test_decode_equals_full_op_kernels_and_splits_agree():
    """Against the full op's Triton forward on each prefix, and across split counts."""
    c = _case(2, 50, 2, 12, 2, [49, 23], seed=3)
    outs = [_decode(c, "triton", scale=0.41, num_splits=n)[0] for n in (1, 2, 4)]
    for b, t in enumerate(c["lens"].tolist()):
        full = frustrated_attention(c["theta"][b:b + 1, :t + 1], c["gate"][b:b + 1, :t + 1], c["coupling"],
                                    c["omega"], 0.41, backend="triton")
        for out in outs:
            assert_close(out[b:b + 1], full[:, -1:], ATOL, RTOL, "out vs full op")
    assert_close(outs[1], outs[0], *TOLERANCES["decode-splits"], "splits 2 vs 1")
    assert_close(outs[2], outs[0], *TOLERANCES["decode-splits"], "splits 4 vs 1")


@needs_triton()
def test_decoding_a_sequence_step_by_step_reproduces_the_full_op():
    """Decode from an empty cache, one token at a time, advancing the lengths: every row of
    the full op; the cache ends up holding the sequence."""
    B, T, H, D, NH = 2, 9, 2, 8, 2
    theta, gate, coupling, omega = make_inputs(B, T, H, D, NH, seed=5)
    full = frustrated_attention(theta, gate, coupling, omega, backend="triton")
    cache = torch.zeros(B, 16, H, D, device=theta.device)
    lens = torch.zeros(B, dtype=torch.int32, device=theta.device)
    rows = []
    for t in range(T):
        rows.append(frustrated_attention_decode(theta[:, t:t + 1], gate[:, t:t + 1], coupling, omega,
                                                phase_cache=cache, cache_seqlens=lens, backend="triton",
                                                num_splits=2))
        lens += 1
    assert_close(torch.cat(rows, 1), full, ATOL, RTOL, "decoded rows")
    assert torch.equal(cache[:, :T], theta) and not cache[:, T:].any()


@needs_triton()
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_low_precision_phases(dtype):
    """fp16/bf16 cache and inputs: loaded and upcast, computed in fp32 (the reference gets
    the same rounded inputs); the output and the cache keep the input dtype."""
    c = _case(2, 20, 2, 8, 2, [19, 4], seed=7, dtype=dtype)
    out, cache = _decode(c, "triton", num_splits=2)
    assert out.dtype == dtype and cache.dtype == dtype
    assert_close(out, _expected(c), *TOLERANCES["decode-bf16" if dtype == torch.bfloat16 else "decode-fp16"], "out")
    _check_cache(c, cache)


# ------------------------------------------------------------------------- bad inputs
def _good():
    theta, gate, coupling, omega = make_inputs(2, 1, 2, 4, 2, seed=1)
    return dict(theta_new=theta, gate_new=gate, coupling=coupling, omega=omega,
                phase_cache=torch.zeros(2, 6, 2, 4, device=theta.device),
                cache_seqlens=torch.tensor([0, 3], dtype=torch.int32, device=theta.device))


def _call(kw, backend="reference"):
    kw = dict(kw)
    return frustrated_attention_decode(kw.pop("theta_new"), kw.pop("gate_new"), kw.pop("coupling"), kw.pop("omega"),
                                       kw.pop("scale", None), backend=backend, **kw)


BAD = [
    ("theta_new", lambda g: g["theta_new"].repeat(1, 2, 1, 1), ValueError, "theta_new must have shape"),
    ("theta_new", lambda g: g["theta_new"].to(torch.int64), TypeError, "theta_new must be a real"),
    ("theta_new", lambda g: g["theta_new"][0], ValueError, "theta_new must have shape"),
    ("gate_new", lambda g: g["gate_new"][:, :, :1], ValueError, "gate_new must have"),
    ("coupling", lambda g: g["coupling"].real, TypeError, "coupling must be a complex"),
    ("coupling", lambda g: g["coupling"][:1], ValueError, "coupling must have shape"),
    ("omega", lambda g: g["omega"][:1], ValueError, "omega must have shape"),
    ("phase_cache", lambda g: g["phase_cache"].double(), TypeError, "phase_cache must have theta_new's dtype"),
    ("phase_cache", lambda g: g["phase_cache"][:1], ValueError, "phase_cache must have shape"),
    ("phase_cache", lambda g: g["phase_cache"][:, :, :, :3], ValueError, "phase_cache must have shape"),
    ("phase_cache", lambda g: g["phase_cache"][:, :0], ValueError, "T_max >= 1"),
    ("phase_cache", lambda g: g["phase_cache"].transpose(0, 1).contiguous().transpose(0, 1), ValueError,
     "phase_cache must be contiguous"),
    ("phase_cache", lambda g: g["phase_cache"].numpy(), TypeError, "phase_cache must be a torch.Tensor"),
    ("cache_seqlens", lambda g: g["cache_seqlens"].long(), TypeError, "cache_seqlens must be int32"),
    ("cache_seqlens", lambda g: g["cache_seqlens"][:1], ValueError, "cache_seqlens must have shape"),
    ("phase_cache", lambda g: g["phase_cache"].to("meta"), ValueError, "phase_cache is on meta but theta_new is on"),
    ("cache_seqlens", lambda g: g["cache_seqlens"].to("meta"), ValueError, "cache_seqlens is on meta"),
    ("coupling", lambda g: g["coupling"].to("meta"), ValueError, "coupling is on meta"),
    ("cache_seqlens", lambda g: g["cache_seqlens"] + 3, ValueError, r"\[0, 5\].*\[3, 6\]"),
    ("cache_seqlens", lambda g: g["cache_seqlens"] - 1, ValueError, "cache_seqlens must be in"),
    ("cache_seqlens", lambda g: [0, 3], TypeError, "cache_seqlens must be an int32 torch.Tensor"),
    ("scale", lambda g: -1.0, ValueError, "scale must be finite and positive"),
    ("scale", lambda g: "big", TypeError, "scale must be a real number"),
    ("num_splits", lambda g: 0, ValueError, "num_splits must be"),
]


@pytest.mark.parametrize("name,make,exc,match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_decode_bad_inputs(name, make, exc, match):
    kw = _good()
    kw[name] = make(kw)
    cache = kw["phase_cache"]
    before = cache.clone() if isinstance(cache, torch.Tensor) and cache.device.type != "meta" else None
    with pytest.raises(exc, match=match):
        _call(kw)
    if before is not None and cache.shape == before.shape:
        assert torch.equal(cache, before)  # nothing written


def test_decode_bad_backend_and_float64_on_triton():
    with pytest.raises(ValueError, match="backend must be one of"):
        _call(_good(), backend="cuda")
    kw = _good()
    kw["theta_new"], kw["gate_new"], kw["phase_cache"] = kw["theta_new"].double(), kw["gate_new"].double(), \
        kw["phase_cache"].double()
    with pytest.raises(ValueError, match="float64"):
        _call(kw, backend="triton")
    out = _call(kw, backend="auto")  # float64 goes to the reference
    assert out.dtype == torch.float64


@pytest.mark.parametrize("backend", backend_params())
def test_decode_accepts_a_numpy_scale_like_the_op(backend):
    c = _case(2, 10, 2, 6, 2, [3, 9], seed=4)
    out, cache = _decode(c, backend, scale=np.float32(0.5))
    assert_close(out, _expected(c, scale=0.5), ATOL, RTOL, "out")
    _check_cache(c, cache)


def test_decode_on_meta_tensors_gives_shape_and_dtype_like_the_op():
    """Meta tensors (tracing, shape inference) hold no values: no length is read."""
    kw = {k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in _good().items()}
    out = _call(kw, backend="auto")
    assert out.device.type == "meta" and out.shape == (2, 1, 2, 4) and out.dtype == torch.float32
    full = frustrated_attention(kw["theta_new"], kw["gate_new"], kw["coupling"], kw["omega"])
    assert full.device.type == "meta" and full.shape == out.shape


# -------------------------------------------------------------------------- hypothesis
@needs_triton()
@given(
    B=st.integers(1, 3), H=st.integers(1, 2), D=st.integers(1, 20), NH=st.integers(1, 4),
    T_max=st.integers(1, 40), num_splits=st.integers(1, 4), omega=st.sampled_from(["random", None]),
    data=st.data(),
)
def test_decode_hypothesis(B, H, D, NH, T_max, num_splits, omega, data):
    lens = data.draw(st.lists(st.integers(0, T_max - 1), min_size=B, max_size=B))
    c = _case(B, T_max, H, D, NH, lens, omega=omega, seed=B + H + D + T_max)
    out, cache = _decode(c, "triton", num_splits=num_splits)
    assert_close(out, _expected(c), ATOL, RTOL, "out")
    _check_cache(c, cache)


def test_the_stock_decode_step_under_cpu_autocast_equals_it_without():
    """Under CPU bf16 autocast the stock step computes in float32 (autocast off inside), as
    without autocast: a model generating under autocast decodes what its forward computes."""
    c = _case(2, 6, 2, 8, 2, [3, 5])
    plain, cache_plain = _decode(c, "stock")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto, cache_auto = _decode(c, "stock")
    assert auto.dtype == torch.float32 and torch.equal(auto, plain)
    assert torch.equal(cache_auto.nan_to_num(7.0), cache_plain.nan_to_num(7.0))
