"""torch.library registration: opcheck of both custom ops, torch.compile(fullgraph=True)
forward and backward with no graph break; autocast and per-input gradient dtypes."""
import pytest
import torch

from fsn_kernels import frustrated_attention
from fsn_kernels.frustrated_attention.triton_function import _bwd_op, _fwd_op
from fsn_kernels.testing import DEVICE, assert_close, make_inputs, needs_triton

pytestmark = needs_triton()


def test_opcheck_forward_and_backward_ops():
    theta, gate, coupling, omega = make_inputs(2, 20, 2, 6, 2)
    c_real = torch.view_as_real(coupling).contiguous()
    torch.library.opcheck(_fwd_op, (theta, gate, c_real, omega, 0.3, 0))
    out, lse, order = _fwd_op(theta, gate, c_real, omega, 0.3, 0)
    torch.library.opcheck(_bwd_op, (torch.randn_like(theta), theta, gate, c_real, omega, out, lse, order, 0.3, 0))


def test_compile_fullgraph_matches_eager():
    theta, gate, coupling, omega = make_inputs(2, 20, 2, 6, 2)

    def loss_fn(th, g, c):
        return frustrated_attention(th, g, c, omega, backend="triton").sin().sum()

    compiled = torch.compile(loss_fn, fullgraph=True)
    results = []
    for fn in (compiled, loss_fn):
        leaves = [x.clone().requires_grad_(True) for x in (theta, gate, coupling)]
        loss = fn(*leaves)
        results.append((loss, *torch.autograd.grad(loss, leaves)))
    for name, a, b in zip(["loss", "grad theta", "grad gate", "grad coupling"], *results):
        assert_close(a, b, 1e-5, 1e-5, name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_give_outputs_and_gradients_in_their_dtypes(dtype):
    """Kernels load low-precision inputs and compute in fp32 (on the CPU interpreter the
    matmuls stay fp32: bf16 dots are wrong there); outputs and grads keep input dtypes."""
    theta, gate, coupling, omega = make_inputs(2, 24, 2, 8, 2)
    theta_lp, gate_lp = theta.to(dtype).requires_grad_(True), gate.to(dtype).requires_grad_(True)
    coupling = coupling.clone().requires_grad_(True)
    out = frustrated_attention(theta_lp, gate_lp, coupling, omega, backend="triton")
    grads = torch.autograd.grad(out.float().sum(), (theta_lp, gate_lp, coupling))
    assert out.dtype == dtype
    assert [g.dtype for g in grads] == [dtype, dtype, torch.complex64]
    ref = frustrated_attention(theta_lp.float(), gate_lp.float(), coupling, omega, backend="reference")
    assert_close(out.float(), ref, 3e-2, 3e-2, "out")


def test_autocast_region():
    theta, gate, coupling, omega = make_inputs(2, 24, 2, 8, 2, requires_grad=True)
    lp = torch.bfloat16 if DEVICE == "cpu" else torch.float16
    with torch.autocast(DEVICE, dtype=lp):
        out = frustrated_attention(theta, gate, coupling, omega, backend="triton")
    grads = torch.autograd.grad(out.sum(), (theta, gate, coupling))
    assert out.dtype == theta.dtype
    assert [g.dtype for g in grads] == [torch.float32, torch.float32, torch.complex64]
    ref = frustrated_attention(theta, gate, coupling, omega, backend="reference")
    tol = 1e-5 if DEVICE == "cpu" else 2e-2  # CPU autocast leaves the kernels' fp32 matmuls alone
    assert_close(out, ref, tol, tol, "out")
