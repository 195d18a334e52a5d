"""Pieces shared by the kernels: named constants, matmul operand modes, padding, the
harmonic powers by complex multiplication, coupling loads and launch configurations."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Module-level tl.constexpr globals: readable inside kernels, in the interpreter and when
# compiling for a GPU alike.
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)
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

# Matmul operand precision (accumulation is always fp32):
#   DOT_IEEE: fp32 operands with IEEE products (float32 / float64 inputs; no TF32)
#   DOT_BF16: bf16 operands (bfloat16 inputs, or bf16 autocast)
#   DOT_FP16: fp16 operands (float16 inputs, or fp16 autocast)
DOT_IEEE: tl.constexpr = tl.constexpr(0)
DOT_BF16: tl.constexpr = tl.constexpr(1)
DOT_FP16: tl.constexpr = tl.constexpr(2)
DOT_NAMES = {0: "ieee", 1: "bf16", 2: "fp16"}
FEATURE_DTYPES = {0: torch.float32, 1: torch.bfloat16, 2: torch.float16}


def dot_mode(dtype: torch.dtype) -> int:
    """The matmul operand mode of a tensor dtype."""
    if dtype == torch.bfloat16:
        return DOT_BF16.value
    if dtype == torch.float16:
        return DOT_FP16.value
    return DOT_IEEE.value


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def autotuning() -> bool:
    """Autotune on CUDA unless FSN_AUTOTUNE=0 (the interpreter cannot autotune)."""
    return not interpreting() and os.environ.get("FSN_AUTOTUNE", "1") not in ("", "0")


def padded_head_dim(d: int) -> int:
    """D padded to a power of two >= 16 (a tile side of the GPU matmuls)."""
    return max(16, triton.next_power_of_2(d))


def padded_harmonics(nh: int):
    """(NH_P, N_BITS): harmonics padded to a power of two, and the bits binary powering needs."""
    nh_p = triton.next_power_of_2(nh)
    return nh_p, nh_p.bit_length()


# ------------------------------------------------------------------------ packed sequences
@dataclass(frozen=True)
class Packing:
    """Where the sequences are in the token rows (B*T) of the kernels' inputs.

    Without cu_seqlens: B sequences of length T (``cu_seqlens``, ``pos``, ``seq_end``
    None). With cu_seqlens (int32 (S + 1,)): S sequences packed in one row of B*T = N
    tokens; ``pos`` (N,) int32 is each token's position in its sequence and ``seq_end``
    (N,) int32 the row after its sequence's last token, computed on the device."""

    num_seqs: int
    max_len: int
    cu_seqlens: torch.Tensor | None = None
    pos: torch.Tensor | None = None
    seq_end: torch.Tensor | None = None


def packing(B: int, T: int, cu_seqlens=None, max_seqlen=None) -> Packing:
    if cu_seqlens is None:
        return Packing(B, T)
    n = B * T
    rows = torch.arange(n, device=cu_seqlens.device, dtype=torch.int32)
    seq = torch.searchsorted(cu_seqlens[1:], rows, right=True)
    seq = seq.clamp_max(cu_seqlens.numel() - 2)  # only rows past the last end (none, once validated)
    return Packing(cu_seqlens.numel() - 1, max_seqlen, cu_seqlens, (rows - cu_seqlens[seq]).to(torch.int32),
                   cu_seqlens[seq + 1].to(torch.int32))


# ------------------------------------------------------------------------ launch configs
@dataclass(frozen=True)
class TileConfig:
    block_m: int  # query rows per tile
    block_n: int  # key rows per tile
    num_warps: int
    num_stages: int

    def kwargs(self):
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, num_warps=self.num_warps,
                    num_stages=self.num_stages)


def _check_blocks(block_m: int, block_n: int) -> None:
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {b}")


def forward_configs(block_d: int, nh_p: int, dot: int):
    """Candidate tiles of the flash forward, best first (the first is the fixed config).

    Its accumulator is (BLOCK_M, 2 * NH_P * BLOCK_D) fp32 in registers, so the value
    width decides the tile; every candidate compiles for sm_90 with 0 stack bytes
    (``aot_check``; PERF_LOG.md)."""
    width = 2 * nh_p * block_d
    if dot == DOT_IEEE.value:  # fp32 operands: no wgmma, tiles staged in fp32
        return [TileConfig(64, 32, 4, 1)] if width <= 256 else [TileConfig(32, 16, 4, 1)]
    if width <= 128:
        return [TileConfig(128, 64, 8, 2), TileConfig(128, 32, 8, 3), TileConfig(64, 64, 4, 2)]
    if width <= 256:
        return [TileConfig(128, 32, 8, 2), TileConfig(128, 64, 8, 2), TileConfig(64, 32, 4, 2)]
    if width <= 512:
        return [TileConfig(64, 32, 8, 2), TileConfig(64, 64, 8, 2)]
    return [TileConfig(32, 16, 4, 1)]


def backward_kv_configs(block_d: int, nh_p: int, dot: int):
    """Tiles of the key-major backward: BLOCK_N keys own (BLOCK_N, 2W) dv and (BLOCK_N,
    2 BLOCK_D) dk accumulators; BLOCK_M query rows stream past them. Wide values leave
    room only for small key tiles (PERF_LOG.md)."""
    width = 2 * nh_p * block_d
    if dot == DOT_IEEE.value:
        return [TileConfig(16, 32, 4, 1)] if width <= 256 else [TileConfig(16, 16, 4, 1)]
    if width <= 128:
        return [TileConfig(32, 128, 8, 2), TileConfig(32, 64, 4, 2)]
    if width <= 256:
        return [TileConfig(16, 32, 4, 1)]
    if width <= 512:
        return [TileConfig(16, 32, 8, 1), TileConfig(16, 16, 4, 1)]
    return [TileConfig(16, 16, 4, 1)]


def backward_q_configs(block_d: int, nh_p: int, dot: int):
    """Tiles of the query-major backward: BLOCK_M queries own a (BLOCK_M, 2 BLOCK_D) dq
    accumulator and a (BLOCK_M, 2W) upstream-gradient tile; BLOCK_N keys stream past."""
    width = 2 * nh_p * block_d
    if dot == DOT_IEEE.value:
        return [TileConfig(32, 16, 4, 1)] if width <= 256 else [TileConfig(16, 16, 4, 1)]
    if width <= 128:
        return [TileConfig(128, 32, 8, 2), TileConfig(64, 32, 4, 2), TileConfig(128, 64, 8, 2)]
    if width <= 256:
        return [TileConfig(64, 32, 4, 2), TileConfig(64, 32, 8, 2), TileConfig(128, 32, 8, 2)]
    if width <= 512:
        return [TileConfig(64, 16, 8, 2), TileConfig(64, 32, 8, 2)]
    return [TileConfig(16, 16, 4, 1)]


def token_block(block_d: int, nh_p: int):
    """(tokens, warps) per program of the per-token passes (features, demodulation, chain
    rule): about 8 elements of each [tokens, NH_P, BLOCK_D] tile per thread, which keeps
    their many live tiles in registers (sm_90 compile report, PERF_LOG.md)."""
    width = nh_p * block_d
    warps = 8 if width >= 256 else 4
    return max(16, min(64, 8 * 32 * warps // width)), warps


def fixed_config(configs, block_m=None, block_n=None) -> TileConfig:
    """The first candidate, with optional tile overrides (tests cross block boundaries)."""
    cfg = configs[0]
    if block_m is None and block_n is None:
        return cfg
    bm, bn = block_m or cfg.block_m, block_n or cfg.block_n
    _check_blocks(bm, bn)
    return TileConfig(bm, bn, 4 if bm * bn <= 64 * 64 else cfg.num_warps, 1)


_AUTOTUNED = {}


def launch(kernel, grid, args, consts, configs, cfg=None):
    """Launch an attention kernel with tiles (BLOCK_M, BLOCK_N).

    ``grid(block_m, block_n)`` gives the launch grid. With ``cfg`` (a test's override) or
    without autotuning (the interpreter, FSN_AUTOTUNE=0) the fixed config runs; on CUDA
    ``triton.autotune`` picks among ``configs``, keyed on (BLOCK_D, NH_P, DOT). fp fusion
    (FMA contraction) is set explicitly: Triton's default changes in 3.10."""
    if cfg is None and autotuning():
        tuned = _AUTOTUNED.get((kernel, tuple(configs)))
        if tuned is None:
            tuned = triton.autotune(
                [triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n}, num_warps=c.num_warps,
                               num_stages=c.num_stages) for c in configs],
                key=["BLOCK_D", "NH_P", "DOT"],
            )(kernel)
            _AUTOTUNED[(kernel, tuple(configs))] = tuned
        tuned[lambda meta: grid(meta["BLOCK_M"], meta["BLOCK_N"])](*args, **consts, enable_fp_fusion=True)
    else:
        cfg = cfg or configs[0]
        kernel[grid(cfg.block_m, cfg.block_n)](*args, **consts, **cfg.kwargs(), enable_fp_fusion=True)


# ------------------------------------------------------------------------ device helpers
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


@triton.jit
def load_coupling(CPL, h, D, NH, offs_d, NH_P: tl.constexpr, WHICH: tl.constexpr):
    """K (WHICH=0) or L (WHICH=1) of head h from the real view (H, D, NH, 2, 2) of the
    coupling, as (re, im) each [1, NH_P, BD]; padded harmonics and oscillators are 0."""
    offs_n = tl.arange(0, NH_P)
    mask = (offs_n[:, None] < NH) & (offs_d[None, :] < D)
    ptr = CPL + h.to(tl.int64) * D * NH * 4 + offs_d[None, :] * NH * 4 + offs_n[:, None] * 4 + WHICH * 2
    re = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    im = tl.load(ptr + 1, mask=mask, other=0.0).to(tl.float32)
    return re[None, :, :], im[None, :, :]


@triton.jit
def interleave(re, im, R: tl.constexpr, WIDTH: tl.constexpr):
    """[R, ...] re and im -> [R, WIDTH] with re/im adjacent (the feature layout)."""
    return tl.reshape(tl.join(re, im), (R, WIDTH))


@triton.jit
def deinterleave(x, R: tl.constexpr, NH_P: tl.constexpr, BD: tl.constexpr):
    """[R, NH_P * BD * 2] -> (re, im), each [R, NH_P, BD]: the inverse of interleave."""
    return tl.split(tl.reshape(x, (R, NH_P, BD, 2)))


@triton.jit
def feature_tile(PTR, head, first_row, offs, n_rows, WIDTH: tl.constexpr, N):
    """Pointers [R, WIDTH] to rows ``first_row + offs`` of one head's features, stored
    (H, N, WIDTH), and the row mask ``offs < n_rows`` [R]. The base is 64-bit, the offsets
    within the tile's rows 32-bit (fewer registers than 64-bit offsets per element)."""
    base = PTR + (head.to(tl.int64) * N + first_row) * WIDTH
    return base + offs[:, None] * WIDTH + tl.arange(0, WIDTH)[None, :], offs < n_rows


@triton.jit
def token_program(N, T, H, D, POS, SEQ_END, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                  IS_VARLEN: tl.constexpr):
    """Per-program setup of the per-token passes, grid (token blocks, H). Returns the
    head; the token rows of (B*T) [BT]; each row's position in its sequence, the row
    after its sequence's end [BT] (read from POS, SEQ_END for packed sequences, else
    from T) and the row mask; the oscillator offsets [BD]; offsets into (B, T, H, D)
    inputs [BT, BD] and their mask; offsets of the per-row statistics in (B, H, T) [BT]."""
    h = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < N
    if IS_VARLEN:
        pos = tl.load(POS + rows, mask=row_ok, other=0)
        seq_end = tl.load(SEQ_END + rows, mask=row_ok, other=0)
    else:
        pos = rows % T
        seq_end = rows - pos + T
    in_mask = row_ok[:, None] & (offs_d[None, :] < D)
    in_off = rows[:, None].to(tl.int64) * H * D + h * D + offs_d[None, :]
    stat = ((rows // T) * H + h).to(tl.int64) * T + rows % T
    return h, rows, pos, seq_end, row_ok, offs_d, in_off, in_mask, stat


@triton.jit
def program_sequence(T, H, CU, REVERSED: tl.constexpr, IS_VARLEN: tl.constexpr, BLOCK: tl.constexpr):
    """Per-program setup of the attention kernels, grid (blocks, H, sequences): the block
    start (longest rows first when REVERSED), the head, the sequence's first token row,
    its length, and the offset of its per-row statistics in (B, H, T). Packed sequences
    (IS_VARLEN) read their bounds from CU (cu_seqlens); otherwise sequence b is batch b."""
    pid = tl.program_id(0)
    if REVERSED:
        pid = tl.num_programs(0) - 1 - pid
    head = tl.program_id(1)
    seq = tl.program_id(2)
    if IS_VARLEN:
        bos = tl.load(CU + seq).to(tl.int64)
        seq_len = (tl.load(CU + seq + 1) - tl.load(CU + seq)).to(tl.int32)
        stat_base = head.to(tl.int64) * T + bos
    else:
        bos = seq.to(tl.int64) * T
        seq_len = T
        stat_base = (seq * H + head).to(tl.int64) * T
    return pid * BLOCK, head, bos, seq_len, stat_base
