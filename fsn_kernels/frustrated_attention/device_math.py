"""Device math shared by the kernels: matmuls in an operand mode, sin/cos without
libdevice, the harmonic powers by complex multiplication, complex products."""
from __future__ import annotations

import triton
import triton.language as tl

from .constants import DOT_BF16, DOT_FP16

TWO_OVER_PI: tl.constexpr = tl.constexpr(0.6366197723675814)
# pi/2 in three fp32 parts (Cody-Waite): k * PIO2_HI is exact for |k| < 2**16.
PIO2_HI: tl.constexpr = tl.constexpr(1.5703125)
PIO2_MID: tl.constexpr = tl.constexpr(4.837512969970703125e-4)
PIO2_LO: tl.constexpr = tl.constexpr(7.549789954891882e-8)


@triton.jit
def mm(a, b, acc, DOT: tl.constexpr):
    """acc + a @ b with fp32 accumulation; operands cast to the DOT mode's dtype."""
    if DOT == DOT_BF16:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc, out_dtype=tl.float32)
    elif DOT == DOT_FP16:
        return tl.dot(a.to(tl.float16), b.to(tl.float16), acc, out_dtype=tl.float32)
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee", out_dtype=tl.float32)


@triton.jit
def sincos(x):
    """(sin x, cos x) of fp32 x by Cody-Waite reduction to r in [-pi/4, pi/4] and
    single-precision minimax polynomials: FMAs only, no libdevice call (whose Payne-Hanek
    slow path costs code, registers and a local-memory array), identical in the
    interpreter and on the GPU. Error vs float64: README, "Trigonometry"."""
    k = tl.floor(x * TWO_OVER_PI + 0.5)
    r = x - k * PIO2_HI
    r = r - k * PIO2_MID
    r = r - k * PIO2_LO
    z = r * r
    s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r
    c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0
    quadrant = k.to(tl.int32) & 3
    sin_x = tl.where(quadrant == 0, s, tl.where(quadrant == 1, c, tl.where(quadrant == 2, -s, -c)))
    cos_x = tl.where(quadrant == 0, c, tl.where(quadrant == 1, -s, tl.where(quadrant == 2, -c, s)))
    return sin_x, cos_x


@triton.jit
def phase_trig(theta, OMEGA, h, D, offs_d, pos, HAS_OMEGA: tl.constexpr):
    """(cos theta, sin theta, cos phi, sin phi), each [R, BD] fp32, of theta [R, BD] and
    the rotary phase ``phi = theta + omega[h] * pos`` (phi = theta without omega)."""
    st, ct = sincos(theta)
    if HAS_OMEGA:
        omega = tl.load(OMEGA + h * D + offs_d, mask=offs_d < D, other=0.0).to(tl.float32)
        sp, cp = sincos(theta + omega[None, :] * pos[:, None].to(tl.float32))
    else:
        cp = ct
        sp = st
    return ct, st, cp, sp


@triton.jit
def harmonics(c1, s1, NH_P: tl.constexpr, N_BITS: tl.constexpr):
    """exp(i n theta) for n = 1..NH_P from (cos theta, sin theta), each [R, BD].

    Binary powering by complex multiplication (no trig per harmonic): exp(i 2^k theta) by
    repeated squaring, multiplied in where bit k of n is set. Returns (re, im), each
    [R, NH_P, BD] fp32."""
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
def cmul(ar, ai, br, bi):
    """(ar + i ai) (br + i bi) as (re, im)."""
    return ar * br - ai * bi, ar * bi + ai * br
