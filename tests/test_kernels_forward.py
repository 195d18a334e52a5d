"""Fused Triton forward vs the float64 reference on deliberately odd shapes."""
import itertools

import pytest
import torch

from fsn_kernels import frustrated_attention, naive_frustrated_attention
from fsn_kernels.frustrated_attention.forward import forward
from kernel_testing import TRITON_AVAILABLE, assert_close, make_inputs, nan_poisoned_allocations, to_double

pytestmark = pytest.mark.skipif(not TRITON_AVAILABLE, reason="needs CUDA or TRITON_INTERPRET=1")

# fp32 kernel vs float64 reference: trig, softmax and accumulation are fp32 and the
# matmuls use IEEE fp32 products, so errors are a few fp32 ulps of the O(1) outputs.
ATOL, RTOL = 2e-5, 1e-4

SHAPES = list(itertools.product([1, 17, 63, 130], [4, 24, 32, 64], [1, 2, 3], [False, True]))


def _reference(theta, gate, coupling, omega, scale=None):
    return naive_frustrated_attention(*to_double(theta, gate, coupling, omega), scale=scale)


@pytest.mark.parametrize("T,D,NH,use_omega", SHAPES)
def test_forward_matches_reference(T, D, NH, use_omega):
    B, H = 2, 2
    theta, gate, coupling, omega = make_inputs(B, T, H, D, NH, omega=use_omega)
    with nan_poisoned_allocations():
        out, lse, order = forward(theta, gate, torch.view_as_real(coupling).contiguous(), omega, D ** -0.5)
    ref_out, ref_lse, ref_order = _reference(theta, gate, coupling, omega)
    assert_close(out, ref_out, ATOL, RTOL, "dtheta")
    assert_close(lse, ref_lse, ATOL, RTOL, "lse")
    assert_close(order, ref_order, ATOL, RTOL, "order R")


@pytest.mark.parametrize("block", [16, 32])
@pytest.mark.parametrize("T,D,NH", [(50, 7, 5), (33, 128, 1), (47, 100, 8)])
def test_forward_block_boundaries_and_wide_values(T, D, NH, block):
    """Small tiles cross many block boundaries; NH up to 8 and D up to 128 (padded)."""
    theta, gate, coupling, omega = make_inputs(2, T, 3, D, NH)
    with nan_poisoned_allocations():
        out, lse, _ = forward(theta, gate, torch.view_as_real(coupling).contiguous(), omega, 0.37, block=block)
    ref_out, ref_lse, _ = _reference(theta, gate, coupling, omega, scale=0.37)
    assert_close(out, ref_out, ATOL, RTOL, "dtheta")
    assert_close(lse, ref_lse, ATOL, RTOL, "lse")


def test_public_api_triton_equals_torch_with_lse():
    theta, gate, coupling, omega = make_inputs(2, 21, 2, 12, 2)
    out_t, lse_t = frustrated_attention(theta, gate, coupling, omega, return_lse=True, backend="triton")
    out_r, lse_r = frustrated_attention(theta, gate, coupling, omega, return_lse=True, backend="torch")
    assert out_t.dtype == theta.dtype and lse_t.dtype == torch.float32
    assert lse_t.shape == (2, 2, 21)
    assert_close(out_t, out_r, ATOL, RTOL, "dtheta")
    assert_close(lse_t, lse_r, ATOL, RTOL, "lse")
    # lse is the natural-log log-sum-exp of the scores: row 0 sees only itself.
    s00 = (gate[:, 0] * 1.0).sum(-1).transpose(0, 1) * 12 ** -0.5  # cos(0) = 1
    assert_close(lse_t[:, :, 0], s00.transpose(0, 1), ATOL, RTOL, "lse[t=0]")


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_non_contiguous_inputs(backend):
    theta, gate, coupling, omega = make_inputs(2, 19, 4, 6, 2)
    theta_nc = theta.transpose(0, 2).contiguous().transpose(0, 2)  # same values, other strides
    gate_nc = torch.stack([gate, gate], dim=-1)[..., 0]
    coupling_nc = coupling.transpose(0, 1).contiguous().transpose(0, 1)
    omega_nc = omega.t().contiguous().t()
    assert not theta_nc.is_contiguous() and not gate_nc.is_contiguous()
    out = frustrated_attention(theta_nc, gate_nc, coupling_nc, omega_nc, backend=backend)
    ref = frustrated_attention(theta, gate, coupling, omega, backend="torch")
    assert_close(out, ref, ATOL, RTOL, "dtheta")


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("shape", [(0, 5, 2, 4), (2, 0, 2, 4)])
def test_empty_batch_or_length(backend, shape):
    theta = torch.randn(shape)
    gate = torch.rand(shape)
    coupling = torch.randn(shape[2], shape[3], 2, 2, dtype=torch.complex64)
    out, lse = frustrated_attention(theta, gate, coupling, return_lse=True, backend=backend)
    assert out.shape == shape and lse.shape == (shape[0], shape[2], shape[1])
