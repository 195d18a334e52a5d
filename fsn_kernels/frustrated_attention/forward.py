"""Fused Triton forward of the frustrated-synchronization attention op.

One program per (query block, head, batch). It builds the query features
``gate * [cos phi, sin phi]`` once, then walks the key blocks from 0 to the diagonal
(causal block skipping): per key block it builds the key features ``[cos phi, sin phi]``
and the complex harmonic values from ``exp(i theta)`` by complex multiplication, scores
with two matmuls, runs the online softmax in base 2, and accumulates ``P @ V``. Off the
diagonal the coupling is folded into one value tile ``K exp(i n theta_u) + L exp(i n
theta_{u+1})``; on the diagonal block the static and the delay values get their own
matmuls so the delay path sees the strict mask ``u < t`` exactly (no read of the future
survives, bit for bit). The epilogue demodulates by ``exp(-i n theta_t)`` and writes
dtheta, the natural-log lse and the in-phase part R. Nothing of size T x T exists.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    LOG2E,
    block_d_for,
    dot_mode,
    harmonic_constants,
    harmonics,
    load_coupling,
    mm,
    phase_features,
    pick_config,
    scores_log2,
    value_tiles,
)


@triton.jit(do_not_specialize=["T"])
def _fwd_kernel(
    THETA, GATE, CPL, OMEGA, OUT, LSE, ORDER,
    T, H, D, NH, scale_log2,
    HAS_OMEGA: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
    NH_P: tl.constexpr, N_BITS: tl.constexpr, DOT: tl.constexpr,
):
    num_m = tl.cdiv(T, BLOCK)
    pid_m = num_m - 1 - tl.program_id(0)  # longest rows first
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    row_stride = H * D
    base = b * T * row_stride + h * D
    omega_ptr = OMEGA + h * D
    start_m = pid_m * BLOCK
    offs_m = start_m + tl.arange(0, BLOCK)
    offs_n0 = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    W: tl.constexpr = NH_P * BLOCK_D

    ct_q, st_q, cp_q, sp_q, g_q = phase_features(THETA, GATE, omega_ptr, base, offs_m, offs_d, T, D, row_stride, HAS_OMEGA, True)
    qc = g_q * cp_q
    qs = g_q * sp_q
    kr, ki = load_coupling(CPL, h, D, NH, offs_d, NH_P, 0)
    lr, li = load_coupling(CPL, h, D, NH, offs_d, NH_P, 1)

    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    acc_re = tl.zeros([BLOCK, W], tl.float32)
    acc_im = tl.zeros([BLOCK, W], tl.float32)

    # Key blocks strictly before the diagonal: every (t, u) pair is unmasked, and the
    # successor u + 1 <= start_m <= t is never in the future.
    for start_n in range(0, start_m, BLOCK):
        offs_n = start_n + offs_n0
        cp_k, sp_k, _, _, _, _, vr, vi, wr, wi = value_tiles(
            THETA, GATE, omega_ptr, base, offs_n, offs_d, T, D, row_stride, kr, ki, lr, li, HAS_OMEGA, NH_P, N_BITS)
        v_re = tl.reshape(vr + wr, (BLOCK, W))
        v_im = tl.reshape(vi + wi, (BLOCK, W))

        s = scores_log2(qc, qs, cp_k, sp_k, scale_log2, DOT)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc_re = acc_re * alpha[:, None] + mm(p, v_re, DOT)
        acc_im = acc_im * alpha[:, None] + mm(p, v_im, DOT)
        m_i = m_new

    # Diagonal block: causal mask on the static path, strict mask on the delay path.
    offs_n = start_m + offs_n0
    cp_k, sp_k, _, _, _, _, vr, vi, wr, wi = value_tiles(
        THETA, GATE, omega_ptr, base, offs_n, offs_d, T, D, row_stride, kr, ki, lr, li, HAS_OMEGA, NH_P, N_BITS)
    s = scores_log2(qc, qs, cp_k, sp_k, scale_log2, DOT)
    s = tl.where(offs_n[None, :] <= offs_m[:, None], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    p_strict = tl.where(offs_n[None, :] < offs_m[:, None], p, 0.0)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc_re = acc_re * alpha[:, None] + mm(p, tl.reshape(vr, (BLOCK, W)), DOT) + mm(p_strict, tl.reshape(wr, (BLOCK, W)), DOT)
    acc_im = acc_im * alpha[:, None] + mm(p, tl.reshape(vi, (BLOCK, W)), DOT) + mm(p_strict, tl.reshape(wi, (BLOCK, W)), DOT)
    m_i = m_new

    # Epilogue: O = acc / l, G = exp(-i n theta_t) O, dtheta = sum_n Im G, R = Re G.
    inv_l = 1.0 / l_i
    o_re = tl.reshape(acc_re * inv_l[:, None], (BLOCK, NH_P, BLOCK_D))
    o_im = tl.reshape(acc_im * inv_l[:, None], (BLOCK, NH_P, BLOCK_D))
    er, ei = harmonics(ct_q, st_q, NH_P, N_BITS)
    g_re = er * o_re + ei * o_im
    g_im = er * o_im - ei * o_re
    dtheta = tl.sum(g_im, 1)

    row_ok = offs_m < T
    out_ptrs = base + offs_m[:, None].to(tl.int64) * row_stride + offs_d[None, :]
    tl.store(OUT + out_ptrs, dtheta.to(OUT.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < D))
    lse_ptrs = (b * tl.num_programs(1) + h) * T + offs_m
    tl.store(LSE + lse_ptrs, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=row_ok)  # ln 2: natural-log lse
    offs_h = tl.arange(0, NH_P)
    order_ptrs = (
        ((b * T + offs_m[:, None, None].to(tl.int64)) * H + h) * NH * D
        + offs_h[None, :, None] * D
        + offs_d[None, None, :]
    )
    order_mask = row_ok[:, None, None] & (offs_h[None, :, None] < NH) & (offs_d[None, None, :] < D)
    tl.store(ORDER + order_ptrs, g_re, mask=order_mask)


def forward(theta, gate, coupling_real, omega, scale, dot=None, block=None):
    """Launch the fused forward.

    Args:
        theta, gate: (B, T, H, D) contiguous, fp32/bf16/fp16.
        coupling_real: (H, D, NH, 2, 2) fp32 contiguous (``torch.view_as_real`` of coupling).
        omega: (H, D) fp32 contiguous, or None.
        scale: float.
        dot: matmul operand precision (``common.DOT_*``); default from theta's dtype.
        block: tile length override (power of two >= 16).
    Returns:
        dtheta (B, T, H, D) in theta's dtype, lse (B, H, T) fp32 natural log,
        order R (B, T, H, NH, D) fp32.
    """
    B, T, H, D = theta.shape
    NH = coupling_real.shape[2]
    out = torch.empty_like(theta)
    lse = torch.empty((B, H, T), device=theta.device, dtype=torch.float32)
    order = torch.empty((B, T, H, NH, D), device=theta.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, lse, order
    nh_p, n_bits = harmonic_constants(NH)
    block_d = block_d_for(D)
    dot = dot_mode(theta.dtype) if dot is None else dot
    cfg = pick_config(block_d, nh_p, dot, block)
    grid = (triton.cdiv(T, cfg.block), H, B)
    _fwd_kernel[grid](
        theta, gate, coupling_real, omega if omega is not None else theta, out, lse, order,
        T, H, D, NH, scale * LOG2E,
        HAS_OMEGA=omega is not None, BLOCK=cfg.block, BLOCK_D=block_d,
        NH_P=nh_p, N_BITS=n_bits, DOT=dot,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out, lse, order
