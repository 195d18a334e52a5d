"""The per-token feature pass: everything trigonometric, once per token and head.

For token ``t`` of head ``h`` (phases in fp32, precise trig):

* ``q^ = scale * log2(e) * gate * [cos phi, sin phi]``   [2 * BLOCK_D]
* ``k^ = [cos phi, sin phi]``                              [2 * BLOCK_D]
* ``v^ = [Re, Im] of K_n z_t + L_n z_{t+1}``, ``z = exp(i n theta)``, the delay half 0
  at the last position of a sequence                      [2 * NH_P * BLOCK_D]
* ``s_tt = scale * log2(e) * sum_d gate``, the diagonal score in base 2 (``cos 0 = 1``),
  fp32, (B, H, T)

and, for the backward, the complex upstream gradient ``dO^ = [Re, Im] of i Gd z_t`` and
the softmax row term ``Delta = sum_d Gd out``. Re/im (and cos/sin) are interleaved.
Features are stored (H, B*T, width) in the matmul operand dtype, so the flash passes read
each key tile as one contiguous block and contain no trigonometry.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .constants import LOG2E
from .device_math import cmul, harmonics, phase_trig, sincos
from .geometry import LaunchGeometry
from .layout import (
    feature_tile,
    interleave,
    load_coupling,
    sequence_ends,
    token_offsets,
    token_positions,
    token_rows,
    token_stats,
)


@dataclass(frozen=True)
class Features:
    """The per-token features: q^, k^ (H, B*T, 2*D_P) and v^ (H, B*T, 2*NH_P*D_P) in the
    operand dtype, and the diagonal score s_tt (B, H, T) fp32 in base 2."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    s_diag: torch.Tensor


@dataclass(frozen=True)
class Upstream:
    """The backward's view of the upstream gradient: dO^ (H, B*T, 2*NH_P*D_P) in the
    operand dtype and the softmax row term Delta (B, H, T) fp32."""

    d_o: torch.Tensor
    delta: torch.Tensor


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
    h = tl.program_id(1)
    rows, row_ok = token_rows(N, BLOCK_T)
    offs_d, in_off, in_mask = token_offsets(rows, row_ok, h, H, D, BLOCK_D)
    pos = token_positions(rows, row_ok, T, POS, IS_VARLEN)
    seq_end = sequence_ends(rows, pos, row_ok, T, SEQ_END, IS_VARLEN)
    stat = token_stats(rows, h, H, T)

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


def _launch_features(geom: LaunchGeometry, theta, gate, coupling_real, omega, scale, grad_out, out, upstream):
    N, width_k, width_v = geom.N, geom.key_width, geom.value_width
    dev, dtype = theta.device, geom.feature_dtype
    feats = Features(q=torch.empty((geom.H, N, width_k), device=dev, dtype=dtype),
                     k=torch.empty((geom.H, N, width_k), device=dev, dtype=dtype),
                     v=torch.empty((geom.H, N, width_v), device=dev, dtype=dtype),
                     s_diag=torch.empty((geom.B, geom.H, geom.T), device=dev, dtype=torch.float32))
    _features_kernel[geom.token_grid()](
        THETA=theta, GATE=gate, CPL=coupling_real, OMEGA=omega, GRAD=grad_out, OUT=out,
        Q=feats.q, K=feats.k, V=feats.v, SDIAG=feats.s_diag,
        DO=None if upstream is None else upstream.d_o, DELTA=None if upstream is None else upstream.delta,
        POS=geom.pack.pos, SEQ_END=geom.pack.seq_end,
        N=N, T=geom.T, H=geom.H, D=geom.D, NH=geom.NH, qk_scale=scale * LOG2E.value,
        **geom.token_meta(), enable_fp_fusion=True,
    )
    return feats


def compute_features(geom: LaunchGeometry, theta, gate, coupling_real, omega, scale) -> Features:
    """Launch the feature pass of the forward.

    Args:
        geom: the call's launch geometry (``geometry.launch_geometry``); its operand mode
            is the features' dtype and its packing restarts the rotary positions and
            stops the delay at each sequence.
        theta, gate: (B, T, H, D) contiguous, fp32/bf16/fp16.
        coupling_real: (H, D, NH, 2, 2) fp32 contiguous.
        omega: (H, D) fp32 contiguous, or None.
        scale: score scale (natural units).
    """
    return _launch_features(geom, theta, gate, coupling_real, omega, scale, None, None, None)


def compute_features_and_upstream(geom: LaunchGeometry, theta, gate, coupling_real, omega, scale, grad_out, out):
    """Launch the feature pass of the backward: :func:`compute_features`'s features and,
    from the upstream gradient ``grad_out`` and the forward's output ``out`` (both
    (B, T, H, D)), the :class:`Upstream` dO^ and Delta. Returns (Features, Upstream)."""
    upstream = Upstream(d_o=torch.empty((geom.H, geom.N, geom.value_width), device=theta.device,
                                        dtype=geom.feature_dtype),
                        delta=torch.empty((geom.B, geom.H, geom.T), device=theta.device, dtype=torch.float32))
    return _launch_features(geom, theta, gate, coupling_real, omega, scale, grad_out, out, upstream), upstream
