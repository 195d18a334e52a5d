"""GPU parity in fp32 and bf16/fp16 (bf16 cannot be tested under the CPU interpreter).

Tolerance rule (flash-attention's): the kernel's error against the float64 reference is
at most 2x (plus a small floor) the error of plain PyTorch computing the same math in the
same low precision."""
import pytest
import torch

from fsn_kernels import frustrated_attention, naive_frustrated_attention
from kernel_testing import make_inputs, to_double

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU parity needs a CUDA device; "
                       "CPU runs cover fp32 under TRITON_INTERPRET=1"),
]

SHAPES = [(2, 17, 2, 4, 1), (2, 130, 4, 32, 2), (1, 1000, 2, 60, 3), (2, 511, 2, 64, 2), (1, 257, 2, 100, 8)]


def _run(theta, gate, coupling, omega, grad_out, fn):
    leaves = [x.detach().clone().requires_grad_(True) for x in (theta, gate, coupling)]
    out = fn(*leaves, omega)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad_out.to(out.dtype))]


def _rel(a, b):
    a, b = (torch.view_as_real(x) if x.is_complex() else x for x in (a, b))
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("shape", SHAPES)
def test_fp32_parity(shape):
    theta, gate, coupling, omega = make_inputs(*shape, device="cuda")
    grad_out = torch.randn_like(theta)
    got = _run(theta, gate, coupling, omega, grad_out, lambda *a: frustrated_attention(*a, backend="triton"))
    want = _run(*to_double(theta, gate, coupling, omega, grad_out),
                lambda *a: naive_frustrated_attention(*a)[0])
    for name, a, b in zip(["dtheta", "grad theta", "grad gate", "grad coupling"], got, want):
        assert _rel(a, b) < 1e-4, f"{name}: relative error {_rel(a, b):.2e}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_low_precision_parity(shape, dtype):
    theta, gate, coupling, omega = make_inputs(*shape, device="cuda")
    grad_out = torch.randn_like(theta)
    theta_lp, gate_lp = theta.to(dtype), gate.to(dtype)
    got = _run(theta_lp, gate_lp, coupling, omega, grad_out, lambda *a: frustrated_attention(*a, backend="triton"))
    plain = _run(theta_lp, gate_lp, coupling, omega, grad_out,
                 lambda th, g, c, om: naive_frustrated_attention(th, g, c, om, compute_dtype=dtype)[0])
    want = _run(*to_double(theta_lp, gate_lp, coupling, omega, grad_out),
                lambda *a: naive_frustrated_attention(*a)[0])
    for name, a, p, b in zip(["dtheta", "grad theta", "grad gate", "grad coupling"], got, plain, want):
        kernel_err, plain_err = _rel(a, b), _rel(p, b)
        assert kernel_err <= 2 * plain_err + 1e-3, f"{name}: kernel {kernel_err:.2e} vs plain {dtype} {plain_err:.2e}"
