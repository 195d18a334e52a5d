"""Where a program's data lies: the per-token passes' rows and offsets, the attention
passes' sequence, feature tiles (H, N, width), the coupling, the order parameter R."""
from __future__ import annotations

import triton
import triton.language as tl


# ------------------------------------------------------------- per-token passes, grid (token blocks, H)
@triton.jit
def token_rows(N, BLOCK_T: tl.constexpr):
    """The program's token rows of (B*T) [BT] and the mask ``rows < N``."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    return rows, rows < N


@triton.jit
def token_offsets(rows, row_ok, h, H, D, BLOCK_D: tl.constexpr):
    """The oscillator offsets [BD], the offsets of the rows in (B, T, H, D) inputs of
    head h [BT, BD] and their mask."""
    offs_d = tl.arange(0, BLOCK_D)
    in_mask = row_ok[:, None] & (offs_d[None, :] < D)
    in_off = rows[:, None].to(tl.int64) * H * D + h * D + offs_d[None, :]
    return offs_d, in_off, in_mask


@triton.jit
def token_stats(rows, h, H, T):
    """Offsets [BT] of the rows' per-row statistics (diagonal score, lse, Delta) in (B, H, T)."""
    return ((rows // T) * H + h).to(tl.int64) * T + rows % T


@triton.jit
def token_positions(rows, row_ok, T, POS, IS_VARLEN: tl.constexpr):
    """Each row's position in its sequence [BT]: read from POS for packed sequences."""
    if IS_VARLEN:
        pos = tl.load(POS + rows, mask=row_ok, other=0)
    else:
        pos = rows % T
    return pos


@triton.jit
def sequence_ends(rows, pos, row_ok, T, SEQ_END, IS_VARLEN: tl.constexpr):
    """The row after each row's sequence [BT]: read from SEQ_END for packed sequences."""
    if IS_VARLEN:
        seq_end = tl.load(SEQ_END + rows, mask=row_ok, other=0)
    else:
        seq_end = rows - pos + T
    return seq_end


@triton.jit
def order_offsets(rows, h, H, D, NH, offs_d, in_mask, NH_P: tl.constexpr):
    """Offsets [BT, NH_P, BD] of the rows' order parameter R in (B, T, H, NH, D) and
    their mask (real harmonics and oscillators only)."""
    offs_h = tl.arange(0, NH_P)
    offs = (rows[:, None, None].to(tl.int64) * H + h) * NH * D + offs_h[None, :, None] * D + offs_d[None, None, :]
    return offs, in_mask[:, None, :] & (offs_h[None, :, None] < NH)


# ----------------------------------------------------- attention passes, grid (blocks, H, sequences)
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


# --------------------------------------------------------------------------- feature tiles
@triton.jit
def feature_tile(PTR, head, first_row, offs, n_rows, WIDTH: tl.constexpr, N):
    """Pointers [R, WIDTH] to rows ``first_row + offs`` of one head's features, stored
    (H, N, WIDTH), and the row mask ``offs < n_rows`` [R]. The base is 64-bit, the offsets
    within the tile's rows 32-bit (fewer registers than 64-bit offsets per element)."""
    base = PTR + (head.to(tl.int64) * N + first_row) * WIDTH
    return base + offs[:, None] * WIDTH + tl.arange(0, WIDTH)[None, :], offs < n_rows


@triton.jit
def feature_rows(A, B, head, first_row, offs, n_rows, N, A_WIDTH: tl.constexpr, B_WIDTH: tl.constexpr,
                 MASKED: tl.constexpr):
    """Rows ``first_row + offs`` of two features of one head (k^ and v^, or q^ and dO^),
    [R, A_WIDTH] and [R, B_WIDTH]. MASKED reads 0 past ``n_rows``; otherwise every row
    is in the sequence and the loads are unmasked."""
    a_ptrs, ok = feature_tile(A, head, first_row, offs, n_rows, A_WIDTH, N)
    b_ptrs, _ = feature_tile(B, head, first_row, offs, n_rows, B_WIDTH, N)
    if MASKED:
        a = tl.load(a_ptrs, mask=ok[:, None], other=0.0)
        b = tl.load(b_ptrs, mask=ok[:, None], other=0.0)
    else:
        a = tl.load(a_ptrs)
        b = tl.load(b_ptrs)
    return a, b


@triton.jit
def interleave(re, im, R: tl.constexpr, WIDTH: tl.constexpr):
    """[R, ...] re and im -> [R, WIDTH] with re/im adjacent (the feature layout)."""
    return tl.reshape(tl.join(re, im), (R, WIDTH))


@triton.jit
def deinterleave(x, R: tl.constexpr, NH_P: tl.constexpr, BD: tl.constexpr):
    """[R, NH_P * BD * 2] -> (re, im), each [R, NH_P, BD]: the inverse of interleave."""
    return tl.split(tl.reshape(x, (R, NH_P, BD, 2)))


# ------------------------------------------------------------------------------- coupling
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
