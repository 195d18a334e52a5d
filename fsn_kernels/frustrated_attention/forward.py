"""Flash forward over the per-token features (``features.py``), then a per-token
demodulation pass.

``_fwd_kernel``: one program per (query block, head, batch), longest rows first. Row
``t``'s online-softmax state starts in closed form at its own diagonal, where
``cos(phi_t - phi_t) = 1``: ``m = s_tt = scale * sum_d gate[t, d]``, ``l = 1`` (the
delay term never pairs ``t`` with itself, so the diagonal's value is ``K z_t`` alone).
The loop then covers the keys ``u < t`` only, first the key blocks wholly before the
query block (no mask), then the band with the strict mask ``u < t``: a row never reads a
feature of a later token, so its output is independent of the future bit for bit. It
writes ``O_partial = sum_{u<t} A[t,u] v^_u`` and the natural-log lse; no trigonometry
and no harmonics, so the loop holds only the FlashAttention state.

``_demodulate_kernel``, per token: ``O = O_partial + A[t,t] K z_t`` with
``A[t,t] = exp(s_tt - lse_t)``, ``G = exp(-i n theta_t) O``, ``out = sum_n Im G``,
``R = Re G``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .constants import LN2, LOG2E, dot_mode
from .device_math import cmul, harmonics, mm, sincos
from .features import compute_features
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
    token_rows,
    token_stats,
)
from .tile_configs import fixed_config, forward_configs


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, h, bos, offs_m, lo, hi, seq_len, N,
               BLOCK_N: tl.constexpr, KW: tl.constexpr, VW: tl.constexpr,
               MASKED: tl.constexpr, DOT: tl.constexpr):
    """Online softmax over the key blocks in [lo, hi): scores in base 2 from q^ . k^,
    ``acc += p @ v^``. MASKED keeps ``u < t`` only (and rows in the sequence); otherwise every
    key of the range is valid and before every query row."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        k, v = feature_rows(K, V, h, bos, offs_n, seq_len, N, KW, VW, MASKED)  # [BN, KW], [BN, VW]
        s = mm(q, tl.trans(k), None, DOT)  # [BM, BN], base-2 scores
        if MASKED:
            s = tl.where(offs_n[None, :] < offs_m[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])  # [BM, BN]
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = mm(p, v, acc * alpha[:, None], DOT)  # [BM, VW]
        m_i = m_new
    return acc, l_i, m_i


@triton.heuristics({"IS_VARLEN": lambda args: args["CU"] is not None})
@triton.jit(do_not_specialize=["N", "T"])
def _fwd_kernel(
    Q, K, V, SDIAG, OPART, LSE,  # features (H, N, width); s_tt (B, H, T); O partial (H, N, VW); lse (B, H, T)
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
    stat = stat_base + offs_m
    q_ptrs, m_ok = feature_tile(Q, h, bos, offs_m, seq_len, KW, N)
    q = tl.load(q_ptrs, mask=m_ok[:, None], other=0.0)  # [BM, KW]

    # Row state at the diagonal, closed form: m = s_tt (base 2), l = 1. Its value K z_t
    # is added by the demodulation pass, with weight exp(s_tt - lse).
    m_i = tl.load(SDIAG + stat, mask=m_ok, other=0.0)
    l_i = tl.full([BLOCK_M], 1.0, tl.float32)
    acc = tl.zeros([BLOCK_M, VW], tl.float32)
    band = (start_m // BLOCK_N) * BLOCK_N
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, h, bos, offs_m, 0, band, seq_len, N,
                               BLOCK_N, KW, VW, False, DOT)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, h, bos, offs_m, band, tl.minimum(start_m + BLOCK_M, seq_len),
                               seq_len, N, BLOCK_N, KW, VW, True, DOT)

    o_ptrs, _ = feature_tile(OPART, h, bos, offs_m, seq_len, VW, N)
    tl.store(o_ptrs, acc / l_i[:, None], mask=m_ok[:, None])  # sum_{u<t} A[t,u] v^_u
    tl.store(LSE + stat, (m_i + tl.log2(l_i)) * LN2, mask=m_ok)


@triton.jit(do_not_specialize=["N", "T"])
def _demodulate_kernel(
    THETA, CPL, SDIAG, OPART, LSE, OUT, ORDER,
    N, T, H, D, NH,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, NH_P: tl.constexpr, N_BITS: tl.constexpr,
):
    """Per token: O = O_partial + A[t,t] K z_t, G = exp(-i n theta_t) O,
    out = sum_n Im G, R = Re G."""
    VW: tl.constexpr = 2 * NH_P * BLOCK_D
    h = tl.program_id(1)
    rows, row_ok = token_rows(N, BLOCK_T)
    offs_d, in_off, in_mask = token_offsets(rows, row_ok, h, H, D, BLOCK_D)
    stat = token_stats(rows, h, H, T)
    theta = tl.load(THETA + in_off, mask=in_mask, other=0.0).to(tl.float32)
    st, ct = sincos(theta)
    zr, zi = harmonics(ct, st, NH_P, N_BITS)  # [BT, NH_P, BD]
    kr, ki = load_coupling(CPL, h, D, NH, offs_d, NH_P, 0)
    lse2 = tl.load(LSE + stat, mask=row_ok, other=0.0) * LOG2E
    p_tt = tl.exp2(tl.load(SDIAG + stat, mask=row_ok, other=0.0) - lse2)[:, None, None]  # A[t, t]
    o_ptrs, _ = feature_tile(OPART, h, tl.program_id(0).to(tl.int64) * BLOCK_T, tl.arange(0, BLOCK_T), BLOCK_T, VW,
                             N)  # [BT, VW]
    o_re, o_im = deinterleave(tl.load(o_ptrs, mask=row_ok[:, None], other=0.0), BLOCK_T, NH_P, BLOCK_D)
    w_re, w_im = cmul(kr, ki, zr, zi)
    o_re += p_tt * w_re
    o_im += p_tt * w_im
    g_re = zr * o_re + zi * o_im  # [BT, NH_P, BD]
    g_im = zr * o_im - zi * o_re
    tl.store(OUT + in_off, tl.sum(g_im, 1).to(OUT.dtype.element_ty), mask=in_mask)
    order_off, order_mask = order_offsets(rows, h, H, D, NH, offs_d, in_mask, NH_P)
    tl.store(ORDER + order_off, g_re, mask=order_mask)


def attention_fwd(theta, gate, coupling_real, omega, scale, dot=None, block_m=None, block_n=None,
                  cu_seqlens=None, max_seqlen=None):
    """Launch the feature pass, the flash forward and the demodulation.

    Args:
        theta, gate: (B, T, H, D) contiguous, fp32/bf16/fp16.
        coupling_real: (H, D, NH, 2, 2) fp32 contiguous (``torch.view_as_real`` of coupling).
        omega: (H, D) fp32 contiguous, or None.
        scale: float, the score scale.
        dot: matmul operand mode (``constants.DOT_*`` value); default from theta's dtype.
        block_m, block_n: tile overrides (powers of two >= 16); default: the configs.
        cu_seqlens, max_seqlen: packed sequences (validated by the caller): int32
            (S + 1,) boundaries in the T axis of a B = 1 batch, and the longest length.
    Returns:
        out (B, T, H, D) in theta's dtype, lse (B, H, T) fp32 natural log,
        order R (B, T, H, NH, D) fp32.
    """
    B, T, H, D = theta.shape
    NH = coupling_real.shape[2]
    out = torch.empty_like(theta)
    lse = torch.empty((B, H, T), device=theta.device, dtype=torch.float32)
    order = torch.empty((B, T, H, NH, D), device=theta.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, lse, order
    geom = launch_geometry(theta.shape, NH, dot_mode(theta.dtype) if dot is None else dot, cu_seqlens, max_seqlen)
    feats = compute_features(geom, theta, gate, coupling_real, omega, scale)
    o_partial = torch.empty(feats.v.shape, device=theta.device, dtype=torch.float32)
    configs = forward_configs(geom.block_d, geom.nh_p, geom.dot)
    cfg = None if block_m is None and block_n is None else fixed_config(configs, block_m, block_n)
    launch(_fwd_kernel, lambda bm, bn: geom.sequence_grid(bm),
           dict(Q=feats.q, K=feats.k, V=feats.v, SDIAG=feats.s_diag, OPART=o_partial, LSE=lse,
                CU=geom.pack.cu_seqlens, N=geom.N, T=T, H=H, **geom.tile_meta()),
           configs, cfg)
    _demodulate_kernel[geom.token_grid()](
        THETA=theta, CPL=coupling_real, SDIAG=feats.s_diag, OPART=o_partial, LSE=lse, OUT=out, ORDER=order,
        N=geom.N, T=T, H=H, D=D, NH=NH, **geom.token_meta(), enable_fp_fusion=True,
    )
    return out, lse, order
