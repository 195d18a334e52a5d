"""The per-token feature pass: everything trigonometric, once per token and head.

For token ``t`` of head ``h`` (phases in fp32, precise trig):

* ``q^ = scale * log2(e) * gate * [cos phi, sin phi]``   [2 * BLOCK_D]
* ``k^ = [cos phi, sin phi]``                              [2 * BLOCK_D]
* ``v^ = [Re, Im] of K_n z_t + L_n z_{t+1}``, ``z = exp(i n theta)``, the delay half 0
  at the last position of a sequence                      [2 * NH_P * BLOCK_D]
* ``s_tt = scale * log2(e) * sum_d gate``, the diagonal score in base 2 (``cos 0 = 1``),
  fp32, (B, H, T)

and, for the backward, the complex upstream gradient ``dO^ = [Re, Im] of i Gd z_t`` and
the softmax row term ``Delta = sum_d Gd dtheta``. Re/im (and cos/sin) are interleaved.
Features are stored (H, B*T, width) in the matmul operand dtype, so the flash passes read
each key tile as one contiguous block and contain no trigonometry.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    FEATURE_DTYPES,
    LOG2E,
    cmul,
    feature_tile,
    harmonics,
    interleave,
    load_coupling,
    padded_harmonics,
    padded_head_dim,
    phase_trig,
    sincos,
    token_block,
    token_program,
)


@triton.heuristics({
    "HAS_OMEGA": lambda args: args["OMEGA"] is not None,
    "WITH_GRAD": lambda args: args["GRAD"] is not None,
    "IS_VARLEN": lambda args: args["POS"] is not None,
})
@triton.jit(do_not_specialize=["N", "T"])
def _features_kernel(
    THETA, GATE, CPL, OMEGA, GRAD, OUT,  # inputs (B, T, H, D); coupling (H, D, NH, 2, 2)
    Q, K, V, SDIAG, DO, DELTA,  # features (H, N, width); diagonal score, Delta (B, H, T)
    POS, SEQ_END,  # packed sequences: position of each token row, the row after its sequence; or None
    N, T, H, D, NH, qk_scale,
    HAS_OMEGA: tl.constexpr, WITH_GRAD: tl.constexpr, IS_VARLEN: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, NH_P: tl.constexpr, N_BITS: tl.constexpr,
):
    KW: tl.constexpr = 2 * BLOCK_D
    VW: tl.constexpr = 2 * NH_P * BLOCK_D
    h, rows, pos, seq_end, row_ok, offs_d, in_off, in_mask, stat = token_program(
        N, T, H, D, POS, SEQ_END, BLOCK_T, BLOCK_D, IS_VARLEN)

    theta = tl.load(THETA + in_off, mask=in_mask, other=0.0).to(tl.float32)
    gate = tl.load(GATE + in_off, mask=in_mask, other=0.0).to(tl.float32)
    ct, st, cp, sp = phase_trig(theta, OMEGA, h, D, offs_d, pos, HAS_OMEGA)
    has_next = row_ok & (rows + 1 < seq_end)  # the delay never crosses a sequence's end
    theta_next = tl.load(THETA + in_off + H * D, mask=has_next[:, None] & in_mask, other=0.0).to(tl.float32)

    zr, zi = harmonics(ct, st, NH_P, N_BITS)  # [BT, NH_P, BD]
    sn, cn = sincos(theta_next)
    yr, yi = harmonics(cn, sn, NH_P, N_BITS)
    kr, ki = load_coupling(CPL, h, D, NH, offs_d, NH_P, 0)
    lr, li = load_coupling(CPL, h, D, NH, offs_d, NH_P, 1)
    vr, vi = cmul(kr, ki, zr, zi)
    dr, di = cmul(lr, li, yr, yi)
    nxt = has_next[:, None, None]
    vr += tl.where(nxt, dr, 0.0)
    vi += tl.where(nxt, di, 0.0)

    dtype = Q.dtype.element_ty
    q_scaled = gate * qk_scale
    first, offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T, tl.arange(0, BLOCK_T)
    q_ptrs, _ = feature_tile(Q, h, first, offs_t, BLOCK_T, KW, N)  # [BT, KW]
    k_ptrs, _ = feature_tile(K, h, first, offs_t, BLOCK_T, KW, N)
    v_ptrs, _ = feature_tile(V, h, first, offs_t, BLOCK_T, VW, N)  # [BT, VW]
    tl.store(q_ptrs, interleave(q_scaled * cp, q_scaled * sp, BLOCK_T, KW).to(dtype), mask=row_ok[:, None])
    tl.store(k_ptrs, interleave(cp, sp, BLOCK_T, KW).to(dtype), mask=row_ok[:, None])
    tl.store(v_ptrs, interleave(vr, vi, BLOCK_T, VW).to(dtype), mask=row_ok[:, None])
    tl.store(SDIAG + stat, tl.sum(q_scaled, 1), mask=row_ok)

    if WITH_GRAD:
        gd = tl.load(GRAD + in_off, mask=in_mask, other=0.0).to(tl.float32)
        out = tl.load(OUT + in_off, mask=in_mask, other=0.0).to(tl.float32)
        real_harmonic = (tl.arange(0, NH_P) < NH)[None, :, None]
        g3 = tl.where(real_harmonic, gd[:, None, :], 0.0)
        # dO = i Gd exp(i n theta) = -Gd sin(n theta) + i Gd cos(n theta)
        do_ptrs, _ = feature_tile(DO, h, first, offs_t, BLOCK_T, VW, N)
        tl.store(do_ptrs, interleave(-g3 * zi, g3 * zr, BLOCK_T, VW).to(dtype), mask=row_ok[:, None])
        tl.store(DELTA + stat, tl.sum(gd * out, 1), mask=row_ok)


def compute_features(theta, gate, coupling_real, omega, scale, dot, grad_out=None, out=None, pack=None):
    """Launch the feature pass.

    Args:
        theta, gate: (B, T, H, D) contiguous, fp32/bf16/fp16.
        coupling_real: (H, D, NH, 2, 2) fp32 contiguous.
        omega: (H, D) fp32 contiguous, or None.
        scale: score scale (natural units).
        dot: matmul operand mode (``common.DOT_*`` value); the features' dtype.
        grad_out, out: (B, T, H, D) upstream gradient and forward output, for the
            backward's dO^ and Delta (both or neither).
        pack: ``common.Packing`` of packed sequences (rotary positions restart and the
            delay stops at each sequence), or None for B sequences of length T.
    Returns:
        q^, k^ (H, B*T, 2*D_P), v^ (H, B*T, 2*NH_P*D_P) in the operand dtype, the diagonal
        score s_tt (B, H, T) fp32 in base 2; with grad_out also dO^ (like v^) and
        Delta (B, H, T) fp32.
    """
    B, T, H, D = theta.shape
    NH = coupling_real.shape[2]
    N = B * T
    nh_p, n_bits = padded_harmonics(NH)
    block_d = padded_head_dim(D)
    dtype = FEATURE_DTYPES[dot]
    kw, vw = 2 * block_d, 2 * nh_p * block_d
    q = torch.empty((H, N, kw), device=theta.device, dtype=dtype)
    k = torch.empty_like(q)
    v = torch.empty((H, N, vw), device=theta.device, dtype=dtype)
    with_grad = grad_out is not None
    s_diag = torch.empty((B, H, T), device=theta.device, dtype=torch.float32)
    d_o = torch.empty_like(v) if with_grad else None
    delta = torch.empty((B, H, T), device=theta.device, dtype=torch.float32) if with_grad else None
    block_t, warps = token_block(block_d, nh_p)
    grid = (triton.cdiv(N, block_t), H)
    _features_kernel[grid](
        theta, gate, coupling_real, omega, grad_out, out, q, k, v, s_diag, d_o, delta,
        None if pack is None else pack.pos, None if pack is None else pack.seq_end,
        N, T, H, D, NH, scale * LOG2E.value,
        BLOCK_T=block_t, BLOCK_D=block_d, NH_P=nh_p, N_BITS=n_bits,
        num_warps=warps, enable_fp_fusion=True,
    )
    return (q, k, v, s_diag, d_o, delta) if with_grad else (q, k, v, s_diag)
