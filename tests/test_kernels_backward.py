"""Fused Triton backward vs the float64 reference; gradcheck of the reference; delay
causality of gradients bit for bit; determinism; accuracy at large |theta|."""
import pytest
import torch

from fsn_kernels import frustrated_attention, naive_frustrated_attention
from kernel_testing import TRITON_AVAILABLE, assert_close, make_inputs, nan_poisoned_allocations, to_double

needs_triton = pytest.mark.skipif(not TRITON_AVAILABLE, reason="needs CUDA or TRITON_INTERPRET=1")
ATOL, RTOL = 5e-5, 2e-4


def _grads(backend, theta, gate, coupling, omega, grad_out, scale=None):
    leaves = [x.detach().clone().requires_grad_(True) for x in (theta, gate, coupling)]
    out = frustrated_attention(leaves[0], leaves[1], leaves[2], omega, scale, backend=backend)
    return (out, *torch.autograd.grad(out, leaves, grad_out))


def _reference_grads(theta, gate, coupling, omega, grad_out, scale=None):
    th, g, c, om, go = to_double(theta, gate, coupling, omega, grad_out)
    leaves = [x.requires_grad_(True) for x in (th, g, c)]
    out, _, _ = naive_frustrated_attention(*leaves, om, scale)
    return (out, *torch.autograd.grad(out, leaves, go))


@needs_triton
@pytest.mark.parametrize("T,D,NH,use_omega", [
    (1, 4, 1, False), (17, 4, 1, True), (63, 24, 3, False), (63, 24, 3, True),
    (130, 32, 2, True), (130, 64, 4, False), (45, 5, 4, True), (100, 60, 2, True),
])
def test_backward_matches_reference(T, D, NH, use_omega):
    theta, gate, coupling, omega = make_inputs(2, T, 2, D, NH, omega=use_omega)
    grad_out = torch.randn_like(theta)
    with nan_poisoned_allocations():
        got = _grads("triton", theta, gate, coupling, omega, grad_out)
    want = _reference_grads(theta, gate, coupling, omega, grad_out)
    for name, a, b in zip(["dtheta", "grad theta", "grad gate", "grad coupling"], got, want):
        scale = b.abs().max().item() + 1e-12
        assert_close(a, b, ATOL * max(1.0, scale), RTOL, name)
    assert got[1].dtype == theta.dtype and got[2].dtype == gate.dtype and got[3].dtype == coupling.dtype


@needs_triton
@pytest.mark.parametrize("block", [16, 32])
def test_backward_crosses_block_boundaries(block):
    from fsn_kernels.frustrated_attention.backward import backward
    from fsn_kernels.frustrated_attention.forward import forward

    theta, gate, coupling, omega = make_inputs(2, 71, 3, 9, 3)
    grad_out = torch.randn_like(theta)
    c_real = torch.view_as_real(coupling).contiguous()
    with nan_poisoned_allocations():
        out, lse, order = forward(theta, gate, c_real, omega, 0.4, block=block)
        d_theta, d_gate, d_cpl = backward(grad_out, theta, gate, c_real, omega, out, lse, order, 0.4, block=block)
    _, r_theta, r_gate, r_cpl = _reference_grads(theta, gate, coupling, omega, grad_out, scale=0.4)
    assert_close(d_theta, r_theta, 2e-4, RTOL, "grad theta")
    assert_close(d_gate, r_gate, 2e-4, RTOL, "grad gate")
    assert_close(torch.view_as_complex(d_cpl), r_cpl, 2e-4, RTOL, "grad coupling")


def test_reference_gradcheck_float64():
    theta, gate, coupling, omega = make_inputs(1, 6, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda th, g, c: naive_frustrated_attention(th, g, c, omega)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (theta, gate, coupling))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("t", [0, 5, 12])
def test_delay_gradient_reaches_successors_and_never_the_future(backend, t):
    """With only L non-zero, d dtheta[t] / d theta reaches theta[u+1] for u < t (that
    is positions 1..t) and is exactly zero after t."""
    T = 16
    theta, gate, coupling, omega = make_inputs(1, T, 2, 6, 2)
    coupling[..., 0] = 0
    grad_out = torch.zeros_like(theta)
    grad_out[:, t] = torch.randn_like(grad_out[:, t])
    _, g_theta, g_gate, _ = _grads(backend, theta, gate, coupling, omega, grad_out)
    assert torch.equal(g_theta[:, t + 1:], torch.zeros_like(g_theta[:, t + 1:]))
    assert torch.equal(g_gate[:, t + 1:], torch.zeros_like(g_gate[:, t + 1:]))
    if t > 0:
        assert (g_theta[:, 1: t + 1].abs().amax(dim=(0, 2, 3)) > 0).all(), "a successor got no gradient"


@needs_triton
def test_deterministic_backward_is_bitwise_reproducible():
    theta, gate, coupling, omega = make_inputs(2, 50, 2, 8, 2)
    grad_out = torch.randn_like(theta)
    runs = [_grads("triton", theta, gate, coupling, omega, grad_out) for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@needs_triton
def test_gradients_accurate_at_large_phases():
    """|theta| up to 1e3: fp32 phases carry an absolute rounding of |theta| * 2**-24
    (~6e-5 at 1e3), which trig turns into an absolute error of the same size per term.
    Documented bound: max abs error <= 2e-3 * (1 + max |grad|)."""
    theta, gate, coupling, omega = make_inputs(2, 40, 2, 8, 2)
    theta = (torch.rand_like(theta) * 2 - 1) * 1e3
    grad_out = torch.randn_like(theta)
    got = _grads("triton", theta, gate, coupling, omega, grad_out)
    want = _reference_grads(theta, gate, coupling, omega, grad_out)
    for name, a, b in zip(["dtheta", "grad theta", "grad gate", "grad coupling"], got, want):
        assert_close(a, b, 2e-3 * (1 + b.abs().max().item()), 0.0, name)
