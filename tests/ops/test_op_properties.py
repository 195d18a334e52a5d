"""The op's properties (README, "Properties") with hypothesis, on both backends: bit-for-bit causality (the
delay path included), invariance to a constant phase shift, 2*pi periodicity."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fsn_kernels import frustrated_attention
from fsn_kernels.testing import TOLERANCES, assert_close, backend_params, make_inputs

BACKENDS = backend_params()

shapes = st.tuples(
    st.integers(1, 2),  # B
    st.integers(2, 40),  # T
    st.integers(1, 3),  # H
    st.integers(1, 20),  # D
    st.integers(1, 4),  # NH
    st.booleans(),  # omega
    st.integers(0, 2**31 - 1),  # seed
)


def _inputs(shape):
    B, T, H, D, NH, use_omega, seed = shape
    return make_inputs(B, T, H, D, NH, omega="random" if use_omega else None, seed=seed)


@pytest.mark.parametrize("backend", BACKENDS)
@given(shape=shapes, data=st.data())
def test_causality_bit_for_bit(backend, shape, data):
    theta, gate, coupling, omega = _inputs(shape)
    T = theta.shape[1]
    t = data.draw(st.integers(0, T - 2), label="t")
    delay_only = data.draw(st.booleans(), label="delay_only")
    if delay_only:  # exercise the strict mask alone: only the successor path is live
        coupling = coupling.clone()
        coupling[..., 0] = 0
    out = frustrated_attention(theta, gate, coupling, omega, backend=backend)
    theta2, gate2 = theta.clone(), gate.clone()
    theta2[:, t + 1:] += torch.randn_like(theta2[:, t + 1:]) * 3 + 1
    gate2[:, t + 1:] = torch.rand_like(gate2[:, t + 1:]) * 5
    out2 = frustrated_attention(theta2, gate2, coupling, omega, backend=backend)
    assert torch.equal(out[:, : t + 1], out2[:, : t + 1]), "a future position changed a past output"
    assert not torch.equal(out[:, t + 1:], out2[:, t + 1:]) or coupling.abs().max() == 0


@pytest.mark.parametrize("backend", BACKENDS)
@given(shape=shapes)
def test_constant_phase_shift_invariance(backend, shape):
    theta, gate, coupling, omega = _inputs(shape)
    H, D = theta.shape[2:]
    shift = torch.rand(H, D, generator=torch.Generator().manual_seed(shape[-1])) * 20 - 10
    out = frustrated_attention(theta, gate, coupling, omega, backend=backend)
    shifted = frustrated_attention(theta + shift, gate, coupling, omega, backend=backend)
    assert_close(shifted, out, *TOLERANCES["invariance"], "shifted out")


@pytest.mark.parametrize("backend", BACKENDS)
@given(shape=shapes)
def test_two_pi_periodicity(backend, shape):
    theta, gate, coupling, omega = _inputs(shape)
    k = torch.randint(-3, 4, theta.shape, generator=torch.Generator().manual_seed(shape[-1]))
    out = frustrated_attention(theta, gate, coupling, omega, backend=backend)
    wrapped = frustrated_attention(theta + 2 * math.pi * k, gate, coupling, omega, backend=backend)
    # theta + 2 pi k is rounded to fp32 (|theta| up to ~30, ulp ~2e-6): "up to rounding".
    assert_close(wrapped, out, *TOLERANCES["invariance"], "2 pi shifted out")
