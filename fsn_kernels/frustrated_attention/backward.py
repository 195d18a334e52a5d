"""Backward: the FlashAttention-2 structure on the per-token features, then a per-token
chain rule back to theta, gate and the coupling. No atomics, no T x T tensor.

1. ``compute_features(..., grad_out, out)``: q^, k^, v^ (recomputed: cheaper than saving
   them, see README), the upstream gradient ``dO^ = i Gd exp(i n theta)`` and
   ``Delta = sum_d Gd out``.
2. ``_bwd_kv_kernel``, key-major: for keys u, ``dv^_u = sum_{t>u} P dO^_t`` and
   ``dk^_u = sum_{t>u} dS q^_t`` with ``dS = P (dO^_t . v^_u - Delta_t)``.
3. ``_bwd_q_kernel``, query-major: ``dq^_t = sum_{u<t} dS k^_u``.
4. ``_chain_kernel``, per token: the diagonal term (closed form), the query/key phase
   and gate derivatives of the features, the static value ``K z_t`` and the delay value
   ``L z_t`` of the predecessor (``dv^_{t-1}``), the demodulation ``-sum_n n Gd R``; the
   coupling gradient as per-program partials that torch sums in a fixed order.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .constants import LN2, LOG2E, dot_mode
from .device_math import harmonics, mm, phase_trig
from .features import compute_features_and_upstream
from .geometry import launch_geometry
from .launch_policy import launch
from .layout import (
    deinterleave,
    feature_rows,
    feature_tile,
    load_coupling,
    order_offsets,
    program_sequence,
    token_offsets,
    token_positions,
    token_rows,
    token_stats,
)
from .tile_configs import backward_kv_configs, backward_q_configs, fixed_config


@triton.jit
def _row_stats(LSE, DELTA, stat, ok):
    """Base-2 lse (+inf past T, so P = 0 there) and Delta of rows ``stat``."""
    lse2 = tl.load(LSE + stat, mask=ok, other=float("inf")) * LOG2E
    delta = tl.load(DELTA + stat, mask=ok, other=0.0)
    return lse2, delta


@triton.jit
def _bwd_kv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, h, bos, stat_base, offs_n, lo, hi, seq_len, N,
                  BLOCK_M: tl.constexpr, KW: tl.constexpr, VW: tl.constexpr,
                  MASKED: tl.constexpr, DOT: tl.constexpr):
    """Accumulate dk^, dv^ of one key block over the query blocks in [lo, hi);
    MASKED keeps ``t > u`` only."""
    offs_m0 = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        q, do = feature_rows(Q, DO, h, bos, offs_m, seq_len, N, KW, VW, True)  # [BM, KW], [BM, VW]
        lse2, delta = _row_stats(LSE, DELTA, stat_base + offs_m, offs_m < seq_len)
        p_t = tl.exp2(mm(k, tl.trans(q), None, DOT) - lse2[None, :])  # [BN, BM]
        if MASKED:
            p_t = tl.where(offs_m[None, :] > offs_n[:, None], p_t, 0.0)
        dv = mm(p_t, do, dv, DOT)  # [BN, VW]
        dp_t = mm(v, tl.trans(do), None, DOT)  # [BN, BM]
        ds_t = p_t * (dp_t - delta[None, :])
        dk = mm(ds_t, q, dk, DOT)  # [BN, KW]
    return dk, dv


@triton.heuristics({"IS_VARLEN": lambda args: args["CU"] is not None})
@triton.jit(do_not_specialize=["N", "T"])
def _bwd_kv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    CU,  # cu_seqlens (S + 1,) int32 of packed sequences, or None
    N, T, H,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    NH_P: tl.constexpr, DOT: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    KW: tl.constexpr = 2 * BLOCK_D
    VW: tl.constexpr = 2 * NH_P * BLOCK_D
    start_n, h, bos, seq_len, stat_base = program_sequence(T, H, CU, False, IS_VARLEN, BLOCK_N)
    if start_n >= seq_len:  # a packed sequence shorter than the longest
        return
    offs_n = start_n + tl.arange(0, BLOCK_N)
    k, v = feature_rows(K, V, h, bos, offs_n, seq_len, N, KW, VW, True)  # [BN, KW], [BN, VW]
    dk = tl.zeros([BLOCK_N, KW], tl.float32)
    dv = tl.zeros([BLOCK_N, VW], tl.float32)
    band_lo = (start_n // BLOCK_M) * BLOCK_M
    band_hi = tl.minimum(tl.cdiv(start_n + BLOCK_N, BLOCK_M) * BLOCK_M, seq_len)
    dk, dv = _bwd_kv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, h, bos, stat_base, offs_n, band_lo, band_hi, seq_len, N,
                           BLOCK_M, KW, VW, True, DOT)
    dk, dv = _bwd_kv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, h, bos, stat_base, offs_n, band_hi, seq_len, seq_len, N,
                           BLOCK_M, KW, VW, False, DOT)
    dk_ptrs, n_ok = feature_tile(DK, h, bos, offs_n, seq_len, KW, N)
    dv_ptrs, _ = feature_tile(DV, h, bos, offs_n, seq_len, VW, N)
    tl.store(dk_ptrs, dk, mask=n_ok[:, None])
    tl.store(dv_ptrs, dv, mask=n_ok[:, None])


@triton.jit
def _bwd_q_inner(dq, q, do, lse2, delta, K, V, h, bos, offs_m, lo, hi, seq_len, N,
                 BLOCK_N: tl.constexpr, KW: tl.constexpr, VW: tl.constexpr,
                 MASKED: tl.constexpr, DOT: tl.constexpr):
    """Accumulate dq^ of one query block over the key blocks in [lo, hi); MASKED keeps
    ``u < t`` only, otherwise every key of the range precedes every query row."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k, v = feature_rows(K, V, h, bos, offs_n, seq_len, N, KW, VW, MASKED)  # [BN, KW], [BN, VW]
        p = tl.exp2(mm(q, tl.trans(k), None, DOT) - lse2[:, None])  # [BM, BN]
        if MASKED:
            p = tl.where(offs_n[None, :] < offs_m[:, None], p, 0.0)
        dp = mm(do, tl.trans(v), None, DOT)  # [BM, BN]
        ds = p * (dp - delta[:, None])
        dq = mm(ds, k, dq, DOT)  # [BM, KW]
    return dq


@triton.heuristics({"IS_VARLEN": lambda args: args["CU"] is not None})
@triton.jit(do_not_specialize=["N", "T"])
def _bwd_q_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    CU,  # cu_seqlens (S + 1,) int32 of packed sequences, or None
    N, T, H,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    NH_P: tl.constexpr, DOT: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    KW: tl.constexpr = 2 * BLOCK_D
    VW: tl.constexpr = 2 * NH_P * BLOCK_D
    start_m, h, bos, seq_len, stat_base = program_sequence(T, H, CU, True, IS_VARLEN, BLOCK_M)
    if start_m >= seq_len:  # a packed sequence shorter than the longest
        return
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q, do = feature_rows(Q, DO, h, bos, offs_m, seq_len, N, KW, VW, True)  # [BM, KW], [BM, VW]
    m_ok = offs_m < seq_len
    lse2, delta = _row_stats(LSE, DELTA, stat_base + offs_m, m_ok)
    dq = tl.zeros([BLOCK_M, KW], tl.float32)
    band = (start_m // BLOCK_N) * BLOCK_N
    dq = _bwd_q_inner(dq, q, do, lse2, delta, K, V, h, bos, offs_m, 0, band, seq_len, N,
                      BLOCK_N, KW, VW, False, DOT)
    dq = _bwd_q_inner(dq, q, do, lse2, delta, K, V, h, bos, offs_m, band, tl.minimum(start_m + BLOCK_M, seq_len),
                      seq_len, N, BLOCK_N, KW, VW, True, DOT)
    dq_ptrs, _ = feature_tile(DQ, h, bos, offs_m, seq_len, KW, N)
    tl.store(dq_ptrs, dq, mask=m_ok[:, None])


@triton.jit
def _store_coupling_partial(DCPL, part, h, H, D, NH, offs_d, wr, wi, NH_P: tl.constexpr, WHICH: tl.constexpr):
    """Store sum over rows of w [R, NH_P, BD] into slab (part, h) of (P, H, D, NH, 2, 2)."""
    offs_n = tl.arange(0, NH_P)
    mask = (offs_n[:, None] < NH) & (offs_d[None, :] < D)
    ptr = DCPL + ((part * H + h).to(tl.int64) * D + offs_d[None, :]) * NH * 4 + offs_n[:, None] * 4 + WHICH * 2
    tl.store(ptr, tl.sum(wr, 0), mask=mask)
    tl.store(ptr + 1, tl.sum(wi, 0), mask=mask)


@triton.heuristics({
    "HAS_OMEGA": lambda args: args["OMEGA"] is not None,
    "IS_VARLEN": lambda args: args["POS"] is not None,
})
@triton.jit(do_not_specialize=["N", "T"])
def _chain_kernel(
    THETA, GATE, CPL, OMEGA, GRAD, ORDER, LSE, SDIAG, DELTA, DQ, DK, DV,  # inputs
    POS,  # packed sequences: position of each token row in its sequence, or None
    DTHETA, DGATE, DCPL,  # outputs: (B, T, H, D) x 2, partials (P, H, D, NH, 2, 2)
    N, T, H, D, NH, scale,
    HAS_OMEGA: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
    NH_P: tl.constexpr, N_BITS: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    KW: tl.constexpr = 2 * BLOCK_D
    VW: tl.constexpr = 2 * NH_P * BLOCK_D
    part = tl.program_id(0)
    h = tl.program_id(1)
    rows, row_ok = token_rows(N, BLOCK_T)
    offs_d, in_off, in_mask = token_offsets(rows, row_ok, h, H, D, BLOCK_D)
    pos = token_positions(rows, row_ok, T, POS, IS_VARLEN)
    stat = token_stats(rows, h, H, T)
    theta = tl.load(THETA + in_off, mask=in_mask, other=0.0).to(tl.float32)
    gate = tl.load(GATE + in_off, mask=in_mask, other=0.0).to(tl.float32)
    gd = tl.load(GRAD + in_off, mask=in_mask, other=0.0).to(tl.float32)
    ct, st, cp, sp = phase_trig(theta, OMEGA, h, D, offs_d, pos, HAS_OMEGA)
    zr, zi = harmonics(ct, st, NH_P, N_BITS)  # [BT, NH_P, BD]
    kr, ki = load_coupling(CPL, h, D, NH, offs_d, NH_P, 0)
    lr, li = load_coupling(CPL, h, D, NH, offs_d, NH_P, 1)
    n = (tl.arange(0, NH_P) + 1).to(tl.float32)[None, :, None]

    first, offs_t = tl.program_id(0).to(tl.int64) * BLOCK_T, tl.arange(0, BLOCK_T)
    dq_ptrs, _ = feature_tile(DQ, h, first, offs_t, BLOCK_T, KW, N)  # [BT, KW]
    dk_ptrs, _ = feature_tile(DK, h, first, offs_t, BLOCK_T, KW, N)
    dv_ptrs, _ = feature_tile(DV, h, first, offs_t, BLOCK_T, VW, N)  # [BT, VW]
    dqc, dqs = tl.split(tl.reshape(tl.load(dq_ptrs, mask=row_ok[:, None], other=0.0), (BLOCK_T, BLOCK_D, 2)))
    dkc, dks = tl.split(tl.reshape(tl.load(dk_ptrs, mask=row_ok[:, None], other=0.0), (BLOCK_T, BLOCK_D, 2)))
    dvr, dvi = deinterleave(tl.load(dv_ptrs, mask=row_ok[:, None], other=0.0), BLOCK_T, NH_P, BLOCK_D)
    has_prev = row_ok & (pos >= 1)  # the predecessor's delay value holds z_t
    dpr, dpi = deinterleave(tl.load(dv_ptrs - VW, mask=has_prev[:, None], other=0.0), BLOCK_T, NH_P, BLOCK_D)

    # Diagonal u = t: s_tt = scale sum_d gate, value K z_t; dP_tt = sum_{n,d} Gd Im K.
    lse2, delta = _row_stats(LSE, DELTA, stat, row_ok)
    p_tt = tl.exp2(tl.load(SDIAG + stat, mask=row_ok, other=0.0) - lse2)  # [BT], A[t, t]
    dp_tt = tl.sum(gd * tl.sum(ki, 1), 1)
    ds_tt = p_tt * (dp_tt - delta)

    # Scores: dL/dq = scale dq^, dL/dk = ln2 dk^ (q^ carries scale log2 e).
    dgate = scale * (dqc * cp + dqs * sp + ds_tt[:, None])
    d_theta = scale * gate * (dqs * cp - dqc * sp) + LN2 * (dks * cp - dkc * sp)
    # Static value K z_t: gradient dv^_t plus the diagonal's P_tt dO_t, dO = i Gd z.
    g3 = gd[:, None, :] * p_tt[:, None, None]
    gsr = dvr - g3 * zi
    gsi = dvi + g3 * zr
    wr = gsr * zr + gsi * zi  # w = gS conj(z)
    wi = gsi * zr - gsr * zi
    d_theta += tl.sum(n * (kr * wi - ki * wr), 1)
    # Delay value L z_t of the predecessor t - 1.
    ur = dpr * zr + dpi * zi
    ui = dpi * zr - dpr * zi
    d_theta += tl.sum(n * (lr * ui - li * ur), 1)
    # Demodulation exp(-i n theta_t).
    order_off, order_mask = order_offsets(rows, h, H, D, NH, offs_d, in_mask, NH_P)
    r = tl.load(ORDER + order_off, mask=order_mask, other=0.0)
    d_theta -= gd * tl.sum(n * r, 1)

    tl.store(DTHETA + in_off, d_theta.to(DTHETA.dtype.element_ty), mask=in_mask)
    tl.store(DGATE + in_off, dgate.to(DGATE.dtype.element_ty), mask=in_mask)
    _store_coupling_partial(DCPL, part, h, H, D, NH, offs_d, wr, wi, NH_P, 0)
    _store_coupling_partial(DCPL, part, h, H, D, NH, offs_d, ur, ui, NH_P, 1)


def attention_bwd(grad_out, theta, gate, coupling_real, omega, out, lse, order, scale, dot=None,
                  block_m=None, block_n=None, cu_seqlens=None, max_seqlen=None):
    """Launch the fused backward.

    Args:
        grad_out: (B, T, H, D) upstream gradient of the output ``out``, contiguous.
        theta, gate, coupling_real, omega, scale, dot: as given to ``attention_fwd``.
        out, lse, order: the forward's outputs (out, lse (B, H, T), R (B, T, H, NH, D)).
        block_m, block_n: tile overrides for both flash passes.
        cu_seqlens, max_seqlen: packed sequences, as given to ``attention_fwd``.
    Returns:
        the gradients (dtheta, dgate, dcoupling_real) in theta's, gate's and coupling_real's dtypes.
    """
    B, T, H, D = theta.shape
    NH = coupling_real.shape[2]
    dtheta = torch.empty_like(theta)
    dgate = torch.empty_like(gate)
    if theta.numel() == 0:
        return dtheta, dgate, torch.zeros_like(coupling_real)
    geom = launch_geometry(theta.shape, NH, dot_mode(theta.dtype) if dot is None else dot, cu_seqlens, max_seqlen)
    feats, upstream = compute_features_and_upstream(geom, theta, gate, coupling_real, omega, scale, grad_out, out)
    dq = torch.empty(feats.q.shape, device=theta.device, dtype=torch.float32)
    dk = torch.empty_like(dq)
    dv = torch.empty(feats.v.shape, device=theta.device, dtype=torch.float32)
    flash_args = dict(Q=feats.q, K=feats.k, V=feats.v, DO=upstream.d_o, LSE=lse, DELTA=upstream.delta,
                      CU=geom.pack.cu_seqlens, N=geom.N, T=T, H=H, **geom.tile_meta())
    override = block_m is not None or block_n is not None
    kv_configs = backward_kv_configs(geom.block_d, geom.nh_p, geom.dot)
    launch(_bwd_kv_kernel, lambda bm, bn: geom.sequence_grid(bn), dict(flash_args, DK=dk, DV=dv), kv_configs,
           fixed_config(kv_configs, block_m, block_n) if override else None)
    q_configs = backward_q_configs(geom.block_d, geom.nh_p, geom.dot)
    launch(_bwd_q_kernel, lambda bm, bn: geom.sequence_grid(bm), dict(flash_args, DQ=dq), q_configs,
           fixed_config(q_configs, block_m, block_n) if override else None)
    parts = geom.token_grid()[0]
    d_cpl = torch.empty((parts, H, D, NH, 2, 2), device=theta.device, dtype=torch.float32)
    _chain_kernel[geom.token_grid()](
        THETA=theta, GATE=gate, CPL=coupling_real, OMEGA=omega, GRAD=grad_out, ORDER=order, LSE=lse,
        SDIAG=feats.s_diag, DELTA=upstream.delta, DQ=dq, DK=dk, DV=dv, POS=geom.pack.pos,
        DTHETA=dtheta, DGATE=dgate, DCPL=d_cpl,
        N=geom.N, T=T, H=H, D=D, NH=NH, scale=scale, **geom.token_meta(), enable_fp_fusion=True,
    )
    return dtheta, dgate, d_cpl.sum(dim=0).to(coupling_real.dtype)
