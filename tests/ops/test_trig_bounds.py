"""The kernels' ``sincos`` against float64 on every decade of |x| up to the largest float32,
and the op and the decode step bounded by ``sum_n (|K_n| + |L_n|)`` for phases up to 1e30.

``sincos`` runs through a one-line kernel. Under the interpreter (numpy) no multiply-add is
contracted; compiled for a GPU, the products of the reduction are exact inside FMAs, so
its reduction error there is at most the interpreter's. The per-decade table of the op's
README comes from ``TRITON_INTERPRET=1 PYTHONPATH=. python -m tests.ops.test_trig_bounds``.
"""
import math

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fsn_kernels import frustrated_attention, frustrated_attention_decode
from fsn_kernels.frustrated_attention.device_math import TRIG_LIMIT as _TRIG_LIMIT
from fsn_kernels.frustrated_attention.device_math import sincos
from fsn_kernels.testing import make_inputs, needs_triton

FLT_MAX = float(np.finfo(np.float32).max)
TRIG_LIMIT = float(_TRIG_LIMIT.value)  # sincos saturates its argument beyond +-TRIG_LIMIT
EXACT_REDUCTION = 2.0**16 * math.pi / 2  # |k| < 2**16: every product of the reduction is exact
POLY_ERR = 1e-7  # the polynomials and the last roundings (measured: 7.7e-8)


@triton.jit
def _sincos_kernel(X, S, C, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < N
    s, c = sincos(tl.load(X + offs, mask=ok, other=0.0))
    tl.store(S + offs, s, mask=ok)
    tl.store(C + offs, c, mask=ok)


def kernel_sincos(x: np.ndarray):
    """(sin, cos) of a float32 array by the kernels' ``sincos``."""
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    s, c = torch.empty_like(x), torch.empty_like(x)
    _sincos_kernel[(triton.cdiv(x.numel(), 4096),)](x, s, c, x.numel(), BLOCK=4096)
    return s.numpy(), c.numpy()


def decade_points(e: int, n: int, seed: int = 0) -> np.ndarray:
    """n float32 points, log-uniform in [10^e, 10^(e+1)) capped at the largest float32, both
    signs, plus the decade's ends."""
    rng = np.random.default_rng(seed + 1000 * (e + 1))
    lo, hi = 10.0**e, min(10.0 ** (e + 1), FLT_MAX)
    mag = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    x = np.concatenate([mag * rng.choice([-1.0, 1.0], n), [lo, -lo, hi, -hi]])
    return x.astype(np.float32)


def decade_errors(e: int, n: int):
    """(max |sin err|, max |cos err|) against float64 on :func:`decade_points`, split at
    TRIG_LIMIT: the first pair over |x| <= TRIG_LIMIT (None if no point), the second above."""
    x = decade_points(e, n)
    s, c = kernel_sincos(x)
    xd = x.astype(np.float64)
    es, ec = np.abs(s - np.sin(xd)), np.abs(c - np.cos(xd))
    inside = np.abs(xd) <= TRIG_LIMIT
    pair = lambda m: (float(es[m].max()), float(ec[m].max())) if m.any() else None  # noqa: E731
    return pair(inside), pair(~inside)


@needs_triton()
@pytest.mark.parametrize("e", [-1, *range(39)])
def test_sincos_bounded_and_accurate_per_decade(e):
    """Each decade of |x| from 0.1 to 3.4e38: in [-1, 1], never NaN, on the unit circle;
    error <= 1e-7 while the reduction is exact (|x| < 1.03e5), <= 1e-7 + ulp(x) up to
    TRIG_LIMIT, and beyond it exactly sincos(+-TRIG_LIMIT) (the argument saturates)."""
    x = decade_points(e, 2000)
    s, c = kernel_sincos(x)
    assert not np.isnan(s).any() and not np.isnan(c).any()
    assert np.abs(s).max() <= 1.0 and np.abs(c).max() <= 1.0
    xd = x.astype(np.float64)
    exact = np.abs(xd) < EXACT_REDUCTION
    # off the circle only by the polynomials' error, on |r| <= pi/4 + ulp(x) / 2
    norm_err = np.abs(s.astype(np.float64) ** 2 + c.astype(np.float64) ** 2 - 1.0)
    assert norm_err[exact].max(initial=0.0) <= 1e-6 and norm_err.max() <= 1e-3
    err = np.maximum(np.abs(s - np.sin(xd)), np.abs(c - np.cos(xd)))
    assert err[exact].max(initial=0.0) <= POLY_ERR
    inside = ~exact & (np.abs(xd) <= TRIG_LIMIT)
    assert (err[inside] <= POLY_ERR + np.spacing(np.abs(x[inside])).astype(np.float64)).all()
    beyond = np.abs(xd) > TRIG_LIMIT
    if beyond.any():
        s_lim, c_lim = kernel_sincos(np.sign(x[beyond]) * np.float32(TRIG_LIMIT))
        assert np.array_equal(s[beyond], s_lim) and np.array_equal(c[beyond], c_lim)


@needs_triton()
def test_sincos_special_values():
    """+-inf saturate like every large argument, NaN stays NaN, zero gives (0, 1), the
    smallest subnormal (0 or itself, 1), and the saturation starts at TRIG_LIMIT."""
    lim = np.float32(TRIG_LIMIT)
    x = np.array([np.inf, -np.inf, FLT_MAX, -FLT_MAX, lim, -lim, np.nan, 0.0, 1e-45,
                  np.nextafter(lim, np.float32(0)), np.nextafter(lim, np.float32(np.inf))], np.float32)
    s, c = kernel_sincos(x)
    assert s[0] == s[2] == s[4] and c[0] == c[2] == c[4]
    assert s[1] == s[3] == s[5] == -s[0] and c[1] == c[3] == c[5] == c[0]
    assert np.isnan(s[6]) and np.isnan(c[6])
    assert s[7] == 0.0 and c[7] == 1.0 and abs(s[8]) <= np.float32(1e-45) and c[8] == 1.0
    assert abs(s[4] - math.sin(TRIG_LIMIT)) <= POLY_ERR + float(np.spacing(lim))
    assert (s[9], c[9]) != (s[4], c[4]) and (s[10], c[10]) == (s[4], c[4])


def coupling_bound(coupling: torch.Tensor) -> torch.Tensor:
    """(H, D) sum_n (|K_n| + |L_n|): |out[b, t, h, d]| is at most this, softmax rows being
    convex combinations of unit-modulus harmonics times K_n and L_n."""
    return coupling.abs().sum((-1, -2)).to(torch.float64)


def assert_bounded(out: torch.Tensor, bound: torch.Tensor):
    out = out.to(torch.float64)
    assert torch.isfinite(out).all(), f"{(~torch.isfinite(out)).sum().item()} non-finite outputs"
    excess = (out.abs() - bound * (1 + 1e-5) - 1e-6).max().item()
    assert excess <= 0.0, f"an output exceeds sum_n(|K_n| + |L_n|) by {excess:.3g}"


@pytest.mark.parametrize("backend", ["reference", "stock", pytest.param("triton", marks=needs_triton())])
@settings(max_examples=3)  # each example runs the op and the decode step: keep CI cheap
@given(exponent=st.integers(0, 30), omega=st.sampled_from([None, "random"]), seed=st.integers(0, 2**16))
@example(exponent=30, omega=None, seed=0)
@example(exponent=8, omega="random", seed=1)
def test_outputs_bounded_for_huge_phases(backend, exponent, omega, seed):
    """The op and the decode step at |theta| ~ 10^exponent: finite, and each output within
    sum_n (|K_n| + |L_n|) of its oscillator."""
    B, T, H, D, NH = 2, 9, 2, 5, 2
    theta, gate, coupling, om = make_inputs(B, T, H, D, NH, omega=omega, seed=seed, theta_scale=10.0**exponent)
    bound = coupling_bound(coupling)[None, None]
    assert_bounded(frustrated_attention(theta, gate, coupling, om, backend=backend), bound)
    lens = torch.tensor([T - 1, 3], dtype=torch.int32, device=theta.device)
    cache = theta.clone()  # T_max = T: row T - 1 is overwritten with itself, sequence 1 uses 3 rows
    out = frustrated_attention_decode(theta[:, T - 1:].contiguous(), gate[:, T - 1:].contiguous(), coupling, om,
                                      phase_cache=cache, cache_seqlens=lens, backend=backend)
    assert_bounded(out, bound)


if __name__ == "__main__":  # the README's per-decade table
    n = 20000
    print(f"| decade of \\|x\\| | max \\|sin err\\| | max \\|cos err\\| |  ({n} points per decade)")
    print("|---|---|---|")
    for e in range(31):
        inside, beyond = decade_errors(e, n)
        for part, errs in (("", inside), (f" (> {TRIG_LIMIT:.3g}, saturated)", beyond)):
            if errs is not None:
                print(f"| 1e{e}{part} | {errs[0]:.2g} | {errs[1]:.2g} |")
