"""Fused Triton backward of the frustrated-synchronization attention op.

Three steps, no atomics, no T x T tensor:

1. Row term ``Delta[t] = sum_d Gd[t,d] dtheta[t,d]`` (SPEC: equals
   ``sum Re(conj(dO) O)``), one fused torch reduction.
2. ``_bwd_kv_kernel``, one program per key block, walking the query blocks from the
   diagonal to the end: recomputes scores from the saved lse, forms
   ``dO = i Gd exp(i n theta_t)``, the softmax gradient ``dS = P (dA - Delta)``, and
   accumulates the key-side score gradient, the static value gradient (to ``theta_u`` and
   K) and the delay value gradient (to ``theta_{u+1}`` and L). Per-block coupling partials
   are written out and summed in a fixed order, so the result is deterministic.
3. ``_bwd_q_kernel``, one program per query block, walking the key blocks up to the
   diagonal: the query-side score gradient and the gate gradient; its epilogue adds the
   demodulation term ``-sum_n n Gd R`` and the key-side and successor parts from step 2,
   and writes dtheta and dgate in their input dtypes.

The diagonal block keeps the static and delay paths apart with the strict mask on the
delay path, so no gradient of ``dtheta[t]`` reaches a position after t.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    LOG2E,
    block_d_for,
    cmul,
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


@triton.jit
def _query_tiles(THETA, GATE, OMEGA, GRAD, LSE, DELTA, base, lse_base, offs_m, offs_d, T, D, row_stride,
                 HAS_OMEGA: tl.constexpr, NH_P: tl.constexpr, N_BITS: tl.constexpr, BLOCK: tl.constexpr, W: tl.constexpr):
    """Query features of rows offs_m: gated (cos phi, sin phi), the complex upstream
    gradient ``dO = i Gd exp(i n theta_t)`` flattened to (BM, NH_P * BD), lse in base 2
    and Delta."""
    ct_q, st_q, cp_q, sp_q, g_q = phase_features(THETA, GATE, OMEGA, base, offs_m, offs_d, T, D, row_stride, HAS_OMEGA, True)
    mask = (offs_m[:, None] < T) & (offs_d[None, :] < D)
    ptrs = base + offs_m[:, None].to(tl.int64) * row_stride + offs_d[None, :]
    gd = tl.load(GRAD + ptrs, mask=mask, other=0.0).to(tl.float32)
    er, ei = harmonics(ct_q, st_q, NH_P, N_BITS)
    do_re = tl.reshape(-gd[:, None, :] * ei, (BLOCK, W))
    do_im = tl.reshape(gd[:, None, :] * er, (BLOCK, W))
    row_ok = offs_m < T
    lse2 = tl.load(LSE + lse_base + offs_m, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + lse_base + offs_m, mask=row_ok, other=0.0)
    return cp_q, sp_q, g_q, gd, g_q * cp_q, g_q * sp_q, do_re, do_im, lse2, delta


@triton.jit
def _score_grads(qc, qs, cp_k, sp_k, lse2, delta, do_re, do_im, v_re, v_im, vd_re, vd_im,
                 offs_m, offs_n, T, scale_log2, DIAG: tl.constexpr, DOT: tl.constexpr):
    """Probabilities P (BM, BN) and the score gradient dS = P (dA - Delta).

    Off the diagonal (v_re, v_im) is the combined value and vd is unused; on it, v is the
    static value, vd the delay value, and dA's delay part is kept to u < t exactly."""
    s = scores_log2(qc, qs, cp_k, sp_k, scale_log2, DOT)
    valid = (offs_m < T)[:, None]
    if DIAG:
        valid = valid & (offs_n[None, :] <= offs_m[:, None])
    p = tl.where(valid, tl.exp2(s - lse2[:, None]), 0.0)
    da = mm(do_re, tl.trans(v_re), DOT) + mm(do_im, tl.trans(v_im), DOT)
    if DIAG:
        da_delay = mm(do_re, tl.trans(vd_re), DOT) + mm(do_im, tl.trans(vd_im), DOT)
        da = da + tl.where(offs_n[None, :] < offs_m[:, None], da_delay, 0.0)
    ds = p * (da - delta[:, None])
    return p, ds


@triton.jit
def _store_coupling_partial(DCPL, part_base, offs_d, D, NH, wr, wi, NH_P: tl.constexpr, WHICH: tl.constexpr):
    """Store sum_u w (NH_P, BD) into the (D, NH, 2, 2) slab at part_base."""
    offs_n = tl.arange(0, NH_P)
    mask = (offs_n[:, None] < NH) & (offs_d[None, :] < D)
    ptr = DCPL + part_base + offs_d[None, :] * NH * 4 + offs_n[:, None] * 4 + WHICH * 2
    tl.store(ptr, tl.sum(wr, 0), mask=mask)
    tl.store(ptr + 1, tl.sum(wi, 0), mask=mask)


@triton.jit(do_not_specialize=["T"])
def _bwd_kv_kernel(
    THETA, GATE, CPL, OMEGA, GRAD, LSE, DELTA, DKEY, DSUCC, DCPL,
    T, H, D, NH, scale, scale_log2,
    HAS_OMEGA: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
    NH_P: tl.constexpr, N_BITS: tl.constexpr, DOT: tl.constexpr,
):
    pid_n = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    row_stride = H * D
    base = b * T * row_stride + h * D
    lse_base = (b * H + h) * T
    omega_ptr = OMEGA + h * D
    W: tl.constexpr = NH_P * BLOCK_D
    start_n = pid_n * BLOCK
    offs_n = start_n + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    kr, ki = load_coupling(CPL, h, D, NH, offs_d, NH_P, 0)
    lr, li = load_coupling(CPL, h, D, NH, offs_d, NH_P, 1)
    cp_k, sp_k, zr, zi, yr, yi, vsr, vsi, vdr, vdi = value_tiles(
        THETA, GATE, omega_ptr, base, offs_n, offs_d, T, D, row_stride, kr, ki, lr, li, HAS_OMEGA, NH_P, N_BITS)
    vs_re = tl.reshape(vsr, (BLOCK, W))
    vs_im = tl.reshape(vsi, (BLOCK, W))
    vd_re = tl.reshape(vdr, (BLOCK, W))
    vd_im = tl.reshape(vdi, (BLOCK, W))

    # Diagonal query block: static and delay paths apart.
    offs_m = start_n + tl.arange(0, BLOCK)
    _, _, _, _, qc, qs, do_re, do_im, lse2, delta = _query_tiles(
        THETA, GATE, omega_ptr, GRAD, LSE, DELTA, base, lse_base, offs_m, offs_d, T, D, row_stride,
        HAS_OMEGA, NH_P, N_BITS, BLOCK, W)
    p, ds = _score_grads(qc, qs, cp_k, sp_k, lse2, delta, do_re, do_im, vs_re, vs_im, vd_re, vd_im,
                         offs_m, offs_n, T, scale_log2, True, DOT)
    p_strict = tl.where(offs_n[None, :] < offs_m[:, None], p, 0.0)
    pt = tl.trans(p)
    gs_re = mm(pt, do_re, DOT)
    gs_im = mm(pt, do_im, DOT)
    pt_strict = tl.trans(p_strict)
    gd_re = mm(pt_strict, do_re, DOT)
    gd_im = mm(pt_strict, do_im, DOT)
    dst = tl.trans(ds)
    dkc = mm(dst, qc, DOT)
    dks = mm(dst, qs, DOT)

    # Later query blocks: every pair unmasked on both paths, one combined value.
    v_re = vs_re + vd_re
    v_im = vs_im + vd_im
    for start_m in range(start_n + BLOCK, T, BLOCK):
        offs_m = start_m + tl.arange(0, BLOCK)
        _, _, _, _, qc, qs, do_re, do_im, lse2, delta = _query_tiles(
            THETA, GATE, omega_ptr, GRAD, LSE, DELTA, base, lse_base, offs_m, offs_d, T, D, row_stride,
            HAS_OMEGA, NH_P, N_BITS, BLOCK, W)
        p, ds = _score_grads(qc, qs, cp_k, sp_k, lse2, delta, do_re, do_im, v_re, v_im, v_re, v_im,
                             offs_m, offs_n, T, scale_log2, False, DOT)
        pt = tl.trans(p)
        g_re = mm(pt, do_re, DOT)
        g_im = mm(pt, do_im, DOT)
        gs_re += g_re
        gs_im += g_im
        gd_re += g_re
        gd_im += g_im
        dst = tl.trans(ds)
        dkc += mm(dst, qc, DOT)
        dks += mm(dst, qs, DOT)

    # Epilogue. Static: w = gS conj(z), dK = sum_u w, dtheta_u += sum_n n Im(conj(K) w).
    # Delay: the same with L and the successor, landing on theta_{u+1}.
    n = (tl.arange(0, NH_P) + 1).to(tl.float32)[None, :, None]
    wr, wi = cmul(tl.reshape(gs_re, (BLOCK, NH_P, BLOCK_D)), tl.reshape(gs_im, (BLOCK, NH_P, BLOCK_D)), zr, -zi)
    ur, ui = cmul(tl.reshape(gd_re, (BLOCK, NH_P, BLOCK_D)), tl.reshape(gd_im, (BLOCK, NH_P, BLOCK_D)), yr, -yi)
    d_key = scale * (cp_k * dks - sp_k * dkc) + tl.sum(n * (kr * wi - ki * wr), 1)
    d_succ = tl.sum(n * (lr * ui - li * ur), 1)
    col_ok = offs_d[None, :] < D
    ptrs = base + offs_n[:, None].to(tl.int64) * row_stride + offs_d[None, :]
    tl.store(DKEY + ptrs, d_key, mask=(offs_n[:, None] < T) & col_ok)
    tl.store(DSUCC + ptrs + row_stride, d_succ, mask=(offs_n[:, None] + 1 < T) & col_ok)
    part_base = ((b * tl.num_programs(0) + pid_n) * H + h) * D * NH * 4
    _store_coupling_partial(DCPL, part_base, offs_d, D, NH, wr, wi, NH_P, 0)
    _store_coupling_partial(DCPL, part_base, offs_d, D, NH, ur, ui, NH_P, 1)


@triton.jit(do_not_specialize=["T"])
def _bwd_q_kernel(
    THETA, GATE, CPL, OMEGA, GRAD, LSE, DELTA, ORDER, DKEY, DSUCC, DTHETA, DGATE,
    T, H, D, NH, scale, scale_log2,
    HAS_OMEGA: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
    NH_P: tl.constexpr, N_BITS: tl.constexpr, DOT: tl.constexpr,
):
    num_m = tl.cdiv(T, BLOCK)
    pid_m = num_m - 1 - tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    row_stride = H * D
    base = b * T * row_stride + h * D
    lse_base = (b * H + h) * T
    omega_ptr = OMEGA + h * D
    W: tl.constexpr = NH_P * BLOCK_D
    start_m = pid_m * BLOCK
    offs_m = start_m + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    kr, ki = load_coupling(CPL, h, D, NH, offs_d, NH_P, 0)
    lr, li = load_coupling(CPL, h, D, NH, offs_d, NH_P, 1)
    cp_q, sp_q, g_q, gd, qc, qs, do_re, do_im, lse2, delta = _query_tiles(
        THETA, GATE, omega_ptr, GRAD, LSE, DELTA, base, lse_base, offs_m, offs_d, T, D, row_stride,
        HAS_OMEGA, NH_P, N_BITS, BLOCK, W)
    acc_c = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    acc_s = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    for start_n in range(0, start_m, BLOCK):
        offs_n = start_n + tl.arange(0, BLOCK)
        cp_k, sp_k, _, _, _, _, vsr, vsi, vdr, vdi = value_tiles(
            THETA, GATE, omega_ptr, base, offs_n, offs_d, T, D, row_stride, kr, ki, lr, li, HAS_OMEGA, NH_P, N_BITS)
        v_re = tl.reshape(vsr + vdr, (BLOCK, W))
        v_im = tl.reshape(vsi + vdi, (BLOCK, W))
        _, ds = _score_grads(qc, qs, cp_k, sp_k, lse2, delta, do_re, do_im, v_re, v_im, v_re, v_im,
                             offs_m, offs_n, T, scale_log2, False, DOT)
        acc_c += mm(ds, cp_k, DOT)
        acc_s += mm(ds, sp_k, DOT)
    offs_n = start_m + tl.arange(0, BLOCK)
    cp_k, sp_k, _, _, _, _, vsr, vsi, vdr, vdi = value_tiles(
        THETA, GATE, omega_ptr, base, offs_n, offs_d, T, D, row_stride, kr, ki, lr, li, HAS_OMEGA, NH_P, N_BITS)
    _, ds = _score_grads(qc, qs, cp_k, sp_k, lse2, delta, do_re, do_im,
                         tl.reshape(vsr, (BLOCK, W)), tl.reshape(vsi, (BLOCK, W)),
                         tl.reshape(vdr, (BLOCK, W)), tl.reshape(vdi, (BLOCK, W)),
                         offs_m, offs_n, T, scale_log2, True, DOT)
    acc_c += mm(ds, cp_k, DOT)
    acc_s += mm(ds, sp_k, DOT)

    # Epilogue: gate and query-side score gradients, demodulation, key-side and successor parts.
    row_ok = offs_m[:, None] < T
    col_ok = offs_d[None, :] < D
    ptrs = base + offs_m[:, None].to(tl.int64) * row_stride + offs_d[None, :]
    dgate = scale * (cp_q * acc_c + sp_q * acc_s)
    d_theta = -scale * g_q * (sp_q * acc_c - cp_q * acc_s)
    offs_h = tl.arange(0, NH_P)
    order_ptrs = (
        ((b * T + offs_m[:, None, None].to(tl.int64)) * H + h) * NH * D
        + offs_h[None, :, None] * D
        + offs_d[None, None, :]
    )
    order_mask = row_ok[:, :, None] & (offs_h[None, :, None] < NH) & col_ok[:, None, :]
    r = tl.load(ORDER + order_ptrs, mask=order_mask, other=0.0)
    n = (offs_h + 1).to(tl.float32)[None, :, None]
    d_theta -= gd * tl.sum(n * r, 1)
    d_theta += tl.load(DKEY + ptrs, mask=row_ok & col_ok, other=0.0)
    d_theta += tl.load(DSUCC + ptrs, mask=row_ok & col_ok & (offs_m[:, None] >= 1), other=0.0)
    tl.store(DTHETA + ptrs, d_theta.to(DTHETA.dtype.element_ty), mask=row_ok & col_ok)
    tl.store(DGATE + ptrs, dgate.to(DGATE.dtype.element_ty), mask=row_ok & col_ok)


def backward(grad_out, theta, gate, coupling_real, omega, out, lse, order, scale, dot=None, block=None):
    """Launch the fused backward.

    Args:
        grad_out: (B, T, H, D) upstream gradient of dtheta, contiguous.
        theta, gate, coupling_real, omega, scale: as given to :func:`forward.forward`.
        out, lse, order: the forward's outputs (dtheta, lse (B, H, T), R (B, T, H, NH, D)).
    Returns:
        (dtheta, dgate, dcoupling_real) in theta's, gate's and coupling_real's dtypes.
    """
    B, T, H, D = theta.shape
    NH = coupling_real.shape[2]
    dtheta = torch.empty_like(theta)
    dgate = torch.empty_like(gate)
    if theta.numel() == 0:
        return dtheta, dgate, torch.zeros_like(coupling_real)
    nh_p, n_bits = harmonic_constants(NH)
    block_d = block_d_for(D)
    dot = dot_mode(theta.dtype) if dot is None else dot
    cfg = pick_config(block_d, nh_p, dot, block)
    num_blocks = triton.cdiv(T, cfg.block)
    delta = (grad_out.float() * out.float()).sum(-1).transpose(1, 2).contiguous()  # (B, H, T)
    d_key = torch.empty(theta.shape, device=theta.device, dtype=torch.float32)
    d_succ = torch.empty_like(d_key)
    d_cpl = torch.empty((B, num_blocks, H, D, NH, 2, 2), device=theta.device, dtype=torch.float32)
    omega_arg = omega if omega is not None else theta
    consts = dict(
        HAS_OMEGA=omega is not None, BLOCK=cfg.block, BLOCK_D=block_d, NH_P=nh_p, N_BITS=n_bits,
        DOT=dot, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    grid = (num_blocks, H, B)
    _bwd_kv_kernel[grid](
        theta, gate, coupling_real, omega_arg, grad_out, lse, delta, d_key, d_succ, d_cpl,
        T, H, D, NH, scale, scale * LOG2E, **consts,
    )
    _bwd_q_kernel[grid](
        theta, gate, coupling_real, omega_arg, grad_out, lse, delta, order, d_key, d_succ, dtheta, dgate,
        T, H, D, NH, scale, scale * LOG2E, **consts,
    )
    d_coupling = d_cpl.sum(dim=(0, 1)).to(coupling_real.dtype)
    return dtheta, dgate, d_coupling
