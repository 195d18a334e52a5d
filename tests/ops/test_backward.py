"""Fused backward vs the float64 reference (fp32 and fp16 operands); gradcheck of the
reference; delay causality of gradients bit for bit; determinism; accuracy at large
|theta|."""
import pytest
import torch

from fsn_kernels import frustrated_attention, naive_frustrated_attention
from fsn_kernels.frustrated_attention.backward import attention_bwd
from fsn_kernels.frustrated_attention.constants import DOT_FP16, DOT_IEEE
from fsn_kernels.frustrated_attention.forward import attention_fwd
from fsn_kernels.testing import (
    TOLERANCES,
    assert_close,
    assert_grads_close,
    backend_params,
    make_inputs,
    nan_poisoned_allocations,
    needs_triton,
    output_and_grads,
    reference_output_and_grads,
)

ATOL, RTOL = TOLERANCES["backward"]


def _op(backend):
    return lambda th, g, c, om, scale: frustrated_attention(th, g, c, om, scale, backend=backend)


def _launch_both(theta, gate, coupling, omega, grad_out, scale, **kw):
    """The launchers directly: (out, d theta, d gate, d coupling complex)."""
    c_real = torch.view_as_real(coupling).contiguous()
    with nan_poisoned_allocations():
        out, lse, order = attention_fwd(theta, gate, c_real, omega, scale, **kw)
        d_theta, d_gate, d_cpl = attention_bwd(grad_out, theta, gate, c_real, omega, out, lse, order, scale, **kw)
    return [out, d_theta, d_gate, torch.view_as_complex(d_cpl)]


@needs_triton()
@pytest.mark.parametrize("T,D,NH,omega", [
    (1, 4, 1, None), (17, 4, 1, "random"), (63, 24, 3, None), (63, 24, 3, "random"),
    (130, 32, 2, "rope"), (130, 64, 4, None), (45, 5, 4, "random"), (100, 60, 2, "random"),
])
def test_backward_matches_reference(T, D, NH, omega):
    theta, gate, coupling, om = make_inputs(2, T, 2, D, NH, omega=omega, seed=T + 7 * D)
    grad_out = torch.randn_like(theta)
    with nan_poisoned_allocations():
        got = output_and_grads(_op("triton"), theta, gate, coupling, om, grad_out)
    want = reference_output_and_grads(theta, gate, coupling, om, grad_out)
    assert_grads_close(got, want, ATOL, RTOL)
    assert got[1].dtype == theta.dtype and got[2].dtype == gate.dtype and got[3].dtype == coupling.dtype


@needs_triton()
@pytest.mark.parametrize("block_m,block_n", [(16, 16), (16, 32), (32, 16)])
def test_backward_crosses_block_boundaries(block_m, block_n):
    theta, gate, coupling, omega = make_inputs(2, 71, 3, 9, 3, seed=5)
    grad_out = torch.randn_like(theta)
    got = _launch_both(theta, gate, coupling, omega, grad_out, 0.4, block_m=block_m, block_n=block_n)
    want = reference_output_and_grads(theta, gate, coupling, omega, grad_out, scale=0.4)
    assert_grads_close(got, want, *TOLERANCES["backward-small-tiles"])


@needs_triton()
@pytest.mark.parametrize("T,D,NH,omega", [(40, 8, 2, "random"), (70, 24, 3, None)])
def test_backward_with_fp16_operands(T, D, NH, omega):
    """The low-precision path of every backward kernel (fp16 features, P and dS rounded
    to fp16 before their matmuls) against float64 and against the fp32-operand path."""
    theta, gate, coupling, om = make_inputs(1, T, 2, D, NH, omega=omega, seed=11)
    grad_out = torch.randn_like(theta)
    got = _launch_both(theta, gate, coupling, om, grad_out, D ** -0.5, dot=DOT_FP16.value, block_m=16, block_n=16)
    exact = _launch_both(theta, gate, coupling, om, grad_out, D ** -0.5, dot=DOT_IEEE.value, block_m=16, block_n=16)
    want = reference_output_and_grads(theta, gate, coupling, om, grad_out)
    assert_grads_close(got, want, *TOLERANCES["backward-fp16"])
    errors = [(a - b).abs().max().item() for a, b in zip(got, want)]
    assert all(e > 0 for e in errors), "fp16 operands left no rounding: the low-precision path did not run"
    assert_grads_close(exact, want, ATOL, RTOL)


def test_reference_gradcheck_float64():
    theta, gate, coupling, omega = make_inputs(1, 6, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda th, g, c: naive_frustrated_attention(th, g, c, omega)[0],
                                    (theta, gate, coupling))


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("t", [0, 5, 12])
def test_delay_gradient_reaches_successors_and_never_the_future(backend, t):
    """With only L non-zero, d dtheta[t] / d theta reaches theta[u+1] for u < t (that
    is positions 1..t) and is exactly zero after t."""
    theta, gate, coupling, omega = make_inputs(1, 16, 2, 6, 2)
    coupling[..., 0] = 0
    grad_out = torch.zeros_like(theta)
    grad_out[:, t] = torch.randn_like(grad_out[:, t])
    _, g_theta, g_gate, _ = output_and_grads(_op(backend), theta, gate, coupling, omega, grad_out)
    assert torch.equal(g_theta[:, t + 1:], torch.zeros_like(g_theta[:, t + 1:]))
    assert torch.equal(g_gate[:, t + 1:], torch.zeros_like(g_gate[:, t + 1:]))
    if t > 0:
        assert (g_theta[:, 1: t + 1].abs().amax(dim=(0, 2, 3)) > 0).all(), "a successor got no gradient"


@needs_triton()
def test_deterministic_backward_is_bitwise_reproducible():
    theta, gate, coupling, omega = make_inputs(2, 50, 2, 8, 2)
    grad_out = torch.randn_like(theta)
    runs = [output_and_grads(_op("triton"), theta, gate, coupling, omega, grad_out) for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@needs_triton()
def test_gradients_accurate_at_large_phases():
    """|theta| up to 1e3: fp32 phases carry an absolute rounding of |theta| * 2**-24
    (~6e-5 at 1e3), which trig turns into an absolute error of the same size per term.
    Documented bound: max abs error <= 2e-3 * (1 + max |grad|) (``TOLERANCES``)."""
    atol, rtol = TOLERANCES["large-phases"]
    theta, gate, coupling, omega = make_inputs(2, 40, 2, 8, 2)
    theta = (torch.rand_like(theta) * 2 - 1) * 1e3
    grad_out = torch.randn_like(theta)
    got = output_and_grads(_op("triton"), theta, gate, coupling, omega, grad_out)
    want = reference_output_and_grads(theta, gate, coupling, omega, grad_out)
    for name, a, b in zip(["out", "dtheta", "dgate", "dcoupling"], got, want):
        assert_close(a, b, atol * (1 + b.abs().max().item()), rtol, name)
