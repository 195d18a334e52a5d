"""Memory is linear in T: every buffer the kernels allocate has B*T rows, so at fixed B*T
the allocations do not grow with T, and none is T x T."""
import torch

from fsn_kernels.frustrated_attention.backward import attention_bwd
from fsn_kernels.frustrated_attention.forward import attention_fwd
from fsn_kernels.testing import make_inputs, needs_triton

pytestmark = needs_triton()


def _allocations(B, T, H=2, D=8, NH=2, monkeypatch=None):
    """Element counts of every tensor the launchers allocate in one forward + backward."""
    sizes = []
    real_empty, real_empty_like, real_zeros_like = torch.empty, torch.empty_like, torch.zeros_like

    def record(fn):
        def wrapped(*args, **kwargs):
            t = fn(*args, **kwargs)
            sizes.append(t.numel())
            return t
        return wrapped

    theta, gate, coupling, omega = make_inputs(B, T, H, D, NH)
    c_real = torch.view_as_real(coupling).contiguous()
    grad_out = torch.randn_like(theta)
    monkeypatch.setattr(torch, "empty", record(real_empty))
    monkeypatch.setattr(torch, "empty_like", record(real_empty_like))
    monkeypatch.setattr(torch, "zeros_like", record(real_zeros_like))
    out, lse, order = attention_fwd(theta, gate, c_real, omega, 0.3)
    attention_bwd(grad_out, theta, gate, c_real, omega, out, lse, order, 0.3)
    monkeypatch.undo()
    return sizes


def test_no_allocation_grows_with_t_at_fixed_tokens(monkeypatch):
    long_rows = _allocations(1, 128, monkeypatch=monkeypatch)
    short_rows = _allocations(8, 16, monkeypatch=monkeypatch)  # the same B*T = 128 tokens
    # a T x T buffer would hold 16384 elements at T = 128 and 256 at T = 16
    assert long_rows == short_rows, f"allocations at B=1, T=128: {long_rows}; at B=8, T=16: {short_rows}"
