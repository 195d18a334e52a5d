"""Pieces shared by the forward and backward kernels: per-token phase features, harmonic
powers by complex multiplication, the matmul in the chosen precision, and launch configs."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Host-side only: Triton kernels may read module globals only if they are tl.constexpr,
# so the kernels spell log2(e) and ln(2) as literals.
LOG2E = 1.4426950408889634

# Matmul operand precision per input dtype (accumulation is always fp32):
#   float32 / float64 inputs -> fp32 operands, IEEE products ("ieee", no TF32)
#   bfloat16 inputs          -> bf16 operands
#   float16 inputs           -> fp16 operands
DOT_IEEE, DOT_BF16, DOT_FP16 = 0, 1, 2


def dot_mode(dtype: torch.dtype) -> int:
    if dtype == torch.bfloat16:
        return DOT_BF16
    if dtype == torch.float16:
        return DOT_FP16
    return DOT_IEEE


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class LaunchConfig:
    block: int  # BLOCK_M == BLOCK_N: query and key tile length
    num_warps: int
    num_stages: int


def pick_config(block_d: int, nh_pow2: int, dot: int, block: int | None = None) -> LaunchConfig:
    """Fixed launch configuration (no autotuning: it cannot run under the interpreter).

    The value tile is (BLOCK, NH_P * BLOCK_D) per real/imaginary part, and every dot
    operand is staged in shared memory, so the tile length shrinks as that width and the
    operand size grow. The limits come from compiling the kernels for sm_90 on a machine
    without a GPU (``aot_check``; PERF_LOG.md, entry 2): fp32 operands at BLOCK 64 needed
    up to 256 KiB of shared memory (an H100 block gets 227 KiB) and every BLOCK-64 build of
    a value tile wider than 64 spilled registers. ``block`` overrides the tile length
    (tests use 16 to cross many block boundaries).
    """
    width = nh_pow2 * block_d
    if block is None:
        if dot == DOT_IEEE:
            block = 32 if width <= 64 else 16
        else:
            block = 64 if width <= 64 else 32 if width <= 128 else 16
    if block < 16 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 16, got {block}")
    stages = 1 if interpreting() or dot == DOT_IEEE or width > 256 else 2
    return LaunchConfig(block=block, num_warps=8 if block >= 64 else 4, num_stages=stages)


@triton.jit
def mm(a, b, DOT: tl.constexpr):
    """a @ b with fp32 accumulation; operands cast per DOT (see module docs)."""
    if DOT == 1:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
    elif DOT == 2:
        return tl.dot(a.to(tl.float16), b.to(tl.float16), out_dtype=tl.float32)
    else:
        return tl.dot(a, b, input_precision="ieee", out_dtype=tl.float32)


@triton.jit
def harmonics(c1, s1, NH_P: tl.constexpr, N_BITS: tl.constexpr):
    """exp(i n theta) for n = 1..NH_P from (cos theta, sin theta) of shape (R, BD).

    Binary powering by complex multiplication (no trig per harmonic): exp(i 2^k theta) by
    repeated squaring, multiplied in where bit k of n is set. Returns (re, im), each
    (R, NH_P, BD) fp32.
    """
    n = (tl.arange(0, NH_P) + 1)[None, :, None]
    pc = c1[:, None, :]
    ps = s1[:, None, :]
    re = pc * 0.0 + 1.0
    im = pc * 0.0
    for k in tl.static_range(N_BITS):
        bit = ((n >> k) & 1) == 1
        new_re = tl.where(bit, re * pc - im * ps, re)
        new_im = tl.where(bit, re * ps + im * pc, im)
        re = new_re
        im = new_im
        pc, ps = pc * pc - ps * ps, 2.0 * pc * ps
    return re, im


@triton.jit
def load_coupling(CPL, h, D, NH, offs_d, NH_P: tl.constexpr, WHICH: tl.constexpr):
    """K (WHICH=0) or L (WHICH=1) of head h from the real view (H, D, NH, 2, 2) of the
    coupling, as (re, im) of shape (1, NH_P, BD); padded harmonics and oscillators are 0."""
    offs_n = tl.arange(0, NH_P)
    mask = (offs_n[:, None] < NH) & (offs_d[None, :] < D)
    ptr = CPL + h.to(tl.int64) * D * NH * 4 + offs_d[None, :] * NH * 4 + offs_n[:, None] * 4 + WHICH * 2
    re = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    im = tl.load(ptr + 1, mask=mask, other=0.0).to(tl.float32)
    return re[None, :, :], im[None, :, :]


@triton.jit
def cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


@triton.jit
def phase_features(THETA, GATE, OMEGA, base, offs_t, offs_d, T, D, row_stride, HAS_OMEGA: tl.constexpr, HAS_GATE: tl.constexpr):
    """Load theta (and gate) rows ``offs_t`` of one (batch, head); return
    (cos theta, sin theta, cos phi, sin phi, gate), each (R, BD) fp32, zero-gated padding."""
    mask = (offs_t[:, None] < T) & (offs_d[None, :] < D)
    ptrs = base + offs_t[:, None].to(tl.int64) * row_stride + offs_d[None, :]
    theta = tl.load(THETA + ptrs, mask=mask, other=0.0).to(tl.float32)
    ct = tl.cos(theta)
    st = tl.sin(theta)
    if HAS_OMEGA:
        omega = tl.load(OMEGA + offs_d, mask=offs_d < D, other=0.0).to(tl.float32)
        phi = theta + omega[None, :] * offs_t[:, None].to(tl.float32)
        cp = tl.cos(phi)
        sp = tl.sin(phi)
    else:
        cp = ct
        sp = st
    if HAS_GATE:
        gate = tl.load(GATE + ptrs, mask=mask, other=0.0).to(tl.float32)
    else:
        gate = ct * 0.0
    return ct, st, cp, sp, gate


@triton.jit
def value_tiles(THETA, GATE, OMEGA, base, offs_n, offs_d, T, D, row_stride, kr, ki, lr, li,
                 HAS_OMEGA: tl.constexpr, NH_P: tl.constexpr, N_BITS: tl.constexpr):
    """Key features of rows offs_n: (cos phi, sin phi) (BN, BD); exp(i n theta_u) and
    exp(i n theta_{u+1}) (BN, NH_P, BD) as (re, im); static value K z and delay value L y."""
    ct_k, st_k, cp_k, sp_k, _ = phase_features(THETA, GATE, OMEGA, base, offs_n, offs_d, T, D, row_stride, HAS_OMEGA, False)
    ct_s, st_s, _, _, _ = phase_features(THETA, GATE, OMEGA, base, offs_n + 1, offs_d, T, D, row_stride, False, False)
    zr, zi = harmonics(ct_k, st_k, NH_P, N_BITS)
    yr, yi = harmonics(ct_s, st_s, NH_P, N_BITS)
    vsr, vsi = cmul(kr, ki, zr, zi)
    vdr, vdi = cmul(lr, li, yr, yi)
    return cp_k, sp_k, zr, zi, yr, yi, vsr, vsi, vdr, vdi


@triton.jit
def scores_log2(qc, qs, cp_k, sp_k, scale_log2, DOT: tl.constexpr):
    """Scores in base 2, ``scale * log2(e) * (q . k)`` with q = gate [cos phi, sin phi] and
    k = [cos phi, sin phi] as two matmuls: (BM, BD) x (BN, BD) -> (BM, BN)."""
    return (mm(qc, tl.trans(cp_k), DOT) + mm(qs, tl.trans(sp_k), DOT)) * scale_log2


def harmonic_constants(nh: int):
    """(NH_P, N_BITS): harmonics padded to a power of two, and the bits binary powering needs."""
    nh_p = triton.next_power_of_2(nh)
    return nh_p, nh_p.bit_length()


def block_d_for(d: int) -> int:
    return max(16, triton.next_power_of_2(d))
