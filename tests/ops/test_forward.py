"""Fused forward (feature pass + flash pass) vs the float64 reference on deliberately odd
shapes, with fp32 operands and with fp16 operands (the interpreter's fp16 dots are right,
its bf16 ones are not), and the public API's shapes and edge cases."""
import itertools

import pytest
import torch

from fsn_kernels import frustrated_attention, naive_frustrated_attention
from fsn_kernels.frustrated_attention.constants import DOT_FP16
from fsn_kernels.frustrated_attention.forward import attention_fwd
from fsn_kernels.testing import (
    TOLERANCES,
    assert_close,
    backend_params,
    make_inputs,
    nan_poisoned_allocations,
    needs_triton,
    to_double,
)

pytestmark = needs_triton()

ATOL, RTOL = TOLERANCES["forward"]
ATOL_FP16, RTOL_FP16 = TOLERANCES["forward-fp16"]

SHAPES = list(itertools.product([1, 17, 63, 130], [4, 24, 32, 64], [1, 2, 3], ["random", None]))


def _reference(theta, gate, coupling, omega, scale=None):
    return naive_frustrated_attention(*to_double(theta, gate, coupling, omega), scale=scale)


def _run(theta, gate, coupling, omega, scale, **kw):
    with nan_poisoned_allocations():
        return attention_fwd(theta, gate, torch.view_as_real(coupling).contiguous(), omega, scale, **kw)


@pytest.mark.parametrize("T,D,NH,omega", SHAPES)
def test_forward_matches_reference(T, D, NH, omega):
    theta, gate, coupling, om = make_inputs(2, T, 2, D, NH, omega=omega, seed=T * D + NH)
    out, lse, order = _run(theta, gate, coupling, om, D ** -0.5)
    ref_out, ref_lse, ref_order = _reference(theta, gate, coupling, om)
    assert_close(out, ref_out, ATOL, RTOL, "out")
    assert_close(lse, ref_lse, ATOL, RTOL, "lse")
    assert_close(order, ref_order, ATOL, RTOL, "order R")


@pytest.mark.parametrize("block_m,block_n", [(16, 16), (32, 16), (16, 32), (64, 16)])
@pytest.mark.parametrize("T,D,NH", [(50, 7, 5), (33, 128, 1), (47, 100, 8), (100, 16, 2)])
def test_forward_block_boundaries_and_wide_values(T, D, NH, block_m, block_n):
    """Independent query and key tiles, in both orders, cross many block boundaries;
    NH up to 8 and D up to 128 (padded)."""
    theta, gate, coupling, omega = make_inputs(2, T, 3, D, NH, seed=T + D)
    out, lse, _ = _run(theta, gate, coupling, omega, 0.37, block_m=block_m, block_n=block_n)
    ref_out, ref_lse, _ = _reference(theta, gate, coupling, omega, scale=0.37)
    assert_close(out, ref_out, ATOL, RTOL, "out")
    assert_close(lse, ref_lse, ATOL, RTOL, "lse")


@pytest.mark.parametrize("T,D,NH,omega", [(1, 4, 1, None), (45, 24, 3, "rope"), (130, 32, 2, "random")])
def test_forward_with_fp16_operands(T, D, NH, omega):
    """The low-precision path (features stored in fp16, fp16 matmuls, fp32 accumulation)
    against float64, with fp16-appropriate tolerances."""
    theta, gate, coupling, om = make_inputs(2, T, 2, D, NH, omega=omega, seed=3)
    out, lse, order = _run(theta, gate, coupling, om, D ** -0.5, dot=DOT_FP16.value, block_m=32, block_n=16)
    ref_out, ref_lse, ref_order = _reference(theta, gate, coupling, om)
    scale = ref_out.abs().max().item()
    assert_close(out, ref_out, ATOL_FP16 * max(1.0, scale), RTOL_FP16, "out")
    assert_close(lse, ref_lse, ATOL_FP16, RTOL_FP16, "lse")
    assert_close(order, ref_order, ATOL_FP16 * max(1.0, scale), RTOL_FP16, "order R")


def test_public_api_triton_equals_torch_with_lse():
    theta, gate, coupling, omega = make_inputs(2, 21, 2, 12, 2)
    out_t, lse_t = frustrated_attention(theta, gate, coupling, omega, return_lse=True, backend="triton")
    out_r, lse_r = frustrated_attention(theta, gate, coupling, omega, return_lse=True, backend="reference")
    assert out_t.dtype == theta.dtype and lse_t.dtype == torch.float32
    assert lse_t.shape == (2, 2, 21)
    assert_close(out_t, out_r, ATOL, RTOL, "out")
    assert_close(lse_t, lse_r, ATOL, RTOL, "lse")
    # lse is the natural-log log-sum-exp of the scores: row 0 sees only itself.
    s00 = gate[:, 0].sum(-1) * 12 ** -0.5  # cos(0) = 1; (B, H)
    assert_close(lse_t[:, :, 0], s00, ATOL, RTOL, "lse[t=0]")


@pytest.mark.parametrize("backend", backend_params())
def test_non_contiguous_inputs(backend):
    theta, gate, coupling, omega = make_inputs(2, 19, 4, 6, 2)
    theta_nc = theta.transpose(0, 2).contiguous().transpose(0, 2)  # same values, other strides
    gate_nc = torch.stack([gate, gate], dim=-1)[..., 0]
    coupling_nc = coupling.transpose(0, 1).contiguous().transpose(0, 1)
    omega_nc = omega.t().contiguous().t()
    assert not theta_nc.is_contiguous() and not gate_nc.is_contiguous()
    out = frustrated_attention(theta_nc, gate_nc, coupling_nc, omega_nc, backend=backend)
    ref = frustrated_attention(theta, gate, coupling, omega, backend="reference")
    assert_close(out, ref, ATOL, RTOL, "out")


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("shape", [(0, 5, 2, 4), (2, 0, 2, 4)])
def test_empty_batch_or_length(backend, shape):
    theta = torch.randn(shape)
    gate = torch.rand(shape)
    coupling = torch.randn(shape[2], shape[3], 2, 2, dtype=torch.complex64)
    out, lse = frustrated_attention(theta, gate, coupling, return_lse=True, backend=backend)
    assert out.shape == shape and lse.shape == (shape[0], shape[2], shape[1])


def test_nan_phase_spreads_forward_in_time_and_within_its_tile_only():
    """The documented NaN behaviour: a NaN phase at t' reaches every row t >= t' and the
    earlier rows of t''s query tile (0 x NaN inside a matmul), never earlier tiles."""
    theta, gate, coupling, omega = make_inputs(1, 100, 2, 8, 2)
    theta[0, 70, 1] = float("nan")
    out, _, _ = _run(theta, gate, coupling, omega, 0.35, block_m=16, block_n=16)
    nan_rows = torch.isnan(out[0]).any(-1)  # (T, H)
    assert nan_rows[70:, 1].all() and not nan_rows[:64, 1].any()
    assert not nan_rows[:, 0].any(), "another head was touched"
