"""Device math shared by the kernels: matmuls in an operand mode, sin/cos without
libdevice, the harmonic powers by complex multiplication, complex products."""
from __future__ import annotations

import triton
import triton.language as tl

from .constants import DOT_BF16, DOT_FP16

TWO_OVER_PI: tl.constexpr = tl.constexpr(0.6366197723675814)
# pi/2 in three fp32 parts (Cody-Waite): HI and MID have 8 significant bits, so k * PIO2_HI
# and k * PIO2_MID are exact for |k| < 2**16 (|x| < 1.03e5) with or without FMA contraction.
PIO2_HI: tl.constexpr = tl.constexpr(1.5703125)
PIO2_MID: tl.constexpr = tl.constexpr(4.84466552734375e-4)
PIO2_LO: tl.constexpr = tl.constexpr(-6.397578431460715e-7)
# 1.5 * 2**23: x * 2/pi + SHIFTER rounds to the nearest integer k, whose low bits are then
# the low bits of the sum's significand, for |x * 2/pi| < 2**22.
SHIFTER: tl.constexpr = tl.constexpr(12582912.0)
# sincos saturates its argument to [-TRIG_LIMIT, TRIG_LIMIT]: |x * 2/pi| < 2**22 there, and an
# fp32 phase that large is already quantised to 0.5 rad.
TRIG_LIMIT: tl.constexpr = tl.constexpr(6.5e6)
SIGN_BIT: tl.constexpr = tl.constexpr(-2**31)  # 0x80000000 as an int32


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
    slow path costs code, registers and a local-memory array). Every finite x (and +-inf)
    gives a point of the unit circle, within [-1, 1] and never NaN (x saturates at
    +-TRIG_LIMIT); NaN gives NaN. Error vs float64 per decade of |x|: README, "Trigonometry"."""
    x = tl.clamp(x, -TRIG_LIMIT, TRIG_LIMIT, propagate_nan=tl.PropagateNan.ALL)  # NaN stays NaN
    t = x * TWO_OVER_PI + SHIFTER
    k = t - SHIFTER  # the integer nearest x * 2/pi, exactly
    r = x - k * PIO2_HI
    r = r - k * PIO2_MID
    r = r - k * PIO2_LO
    z = r * r
    s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r
    c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0
    # Quadrant k mod 4 = the two low bits of t's significand, moved to bits 30 (swap sin and
    # cos) and 31 (the sign of sin); cos is negative where bits 30 and 31 differ.
    q = t.to(tl.int32, bitcast=True) << 30
    swap = (q & 0x40000000) != 0
    sin_x = tl.where(swap, c, s).to(tl.int32, bitcast=True) ^ (q & SIGN_BIT)
    cos_x = tl.where(swap, s, c).to(tl.int32, bitcast=True) ^ ((q + 0x40000000) & SIGN_BIT)
    return sin_x.to(tl.float32, bitcast=True), cos_x.to(tl.float32, bitcast=True)


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
