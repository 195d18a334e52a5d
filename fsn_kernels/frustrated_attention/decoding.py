"""One decode step of the op over a preallocated phase cache, split over the cache length
(flash-decoding).

For sequence ``b`` with ``t = cache_seqlens[b]`` tokens cached, the new token sits at
position ``t``; the step returns row ``t`` of the full op over ``cache[b, :t]`` followed by
the new token, and writes the new token's phases into ``cache[b, t]`` in place.

The cache holds phases only (one D-vector per token and head); everything else is
recomputed per cached token and step with ``device_math.sincos`` (FMAs only). Per row the math
of the full op (README, "The math") reads, with the new token's query
``q = scale * log2(e) * gate_t``:

* score ``s_u = sum_d q_d cos(phi_t - phi_u) = sum_d Re(a_u exp(-i theta_u))`` with the
  rotated query ``a_u = q exp(i (theta_t + omega (t - u)))``, built per block of keys from
  one sincos per oscillator and a per-program table ``exp(-i omega j)``: no trig per
  element beyond the ``exp(i theta_u)`` the values need anyway (``u = t`` is the
  diagonal, ``s_t = sum_d q_d``);
* values: static ``K z_u`` for ``u <= t`` and delay ``L z_{u+1}`` for ``u < t``. The delay
  value of row ``u - 1`` is the static value's ``z_u`` again, so each cached row ``u``
  carries ``p_u K z_u + p_{u-1} L z_u``: one ``z = exp(i n theta)`` per cached token, and
  ``p_{u-1}`` is the previous row's probability, shifted in registers (``tl.gather``).

``_decode_split_kernel``, grid (splits, H, B): rows ``u < t`` of one split, an online
softmax in base 2 with a scalar running max (one query row, rescaled only when it grows),
on [rows, 1, oscillators] tiles that keep every harmonic of an element in its thread;
per-row partial accumulators reduced over rows once at the end (wide values: reduced per
block); it writes ``(m, l, o)``, ``o = K sum p z + L sum p' z``
unnormalised. Splits past ``t`` write ``m = -inf, l = 0, o = 0``.

``_decode_combine_kernel``, grid (H, B): merges the splits in a fixed order, adds the new
token's row (static ``p_t K z_t`` and delay ``p_{t-1} L z_t``, ``p_{t-1}`` from the cache's
row ``t - 1``), demodulates (``out = sum_n Im(exp(-i n theta_t) O)``) and writes
``theta_new`` into ``cache[b, t]``. The splits never read row ``t``, and the combine runs
after them on the stream, so the in-place write races with nothing.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .constants import DOT_IEEE, LOG2E
from .device_math import cmul, harmonics, sincos
from .geometry import launch_geometry
from .layout import load_coupling
from .tile_configs import decode_combine_config, decode_split_config

MIN_SPLIT_ROWS = 256  # a split covers at least this many cache rows (on CUDA's heuristic)


# ------------------------------------------------------------------------------ kernels
@triton.jit
def _scores(theta, pos, phi_t, q, OMEGA_ROW, HAS_OMEGA: tl.constexpr):
    """Per element ``q_d cos(phi_t - phi_u)``, ``phi_u = theta_u + omega * u``, for single
    rows outside the loop (row ``lo - 1`` of a split, row ``t - 1`` in the combine)."""
    if HAS_OMEGA:
        phi = theta + OMEGA_ROW * pos
    else:
        phi = theta
    _, c = sincos(phi_t - phi)  # the sine is dead code
    return q * c


@triton.jit
def harmonics_select(c1, s1, NH_P: tl.constexpr):
    """exp(i n theta), n = 1..NH_P, from (cos theta, sin theta) [R, 1, BD] as [R, NH_P, BD]:
    powers by NH_P - 1 complex products on [R, 1, BD], placed by selects on the harmonic
    index, which is a constant per register when a thread holds all harmonics of an
    element (the broadcast of a size-1 axis): no data moves between threads, and the
    selects fold away. Returns (re, im) fp32."""
    n3 = (tl.arange(0, NH_P) + 1)[None, :, None]
    pr = c1
    pi = s1
    re = tl.where(n3 == 1, pr, 0.0)
    im = tl.where(n3 == 1, pi, 0.0)
    for k in tl.static_range(2, NH_P + 1):
        pr, pi = pr * c1 - pi * s1, pr * s1 + pi * c1
        re = tl.where(n3 == k, pr, re)
        im = tl.where(n3 == k, pi, im)
    return re, im


@triton.jit
def _new_token(THETA, GATE, OMEGA, b, h, t, H, D, offs_d, qk_scale, HAS_OMEGA: tl.constexpr):
    """The new token of sequence b, head h, at position t, each [BD]: its phases as stored
    and in fp32, the base-2 query ``scale log2(e) gate``, omega (0 without it) and the
    rotary phase ``phi_t``."""
    d_ok = offs_d < D
    tok = (b.to(tl.int64) * H + h) * D  # the new token's row in (B, 1, H, D)
    theta_raw = tl.load(THETA + tok + offs_d, mask=d_ok, other=0.0)
    theta_t = theta_raw.to(tl.float32)
    q = tl.load(GATE + tok + offs_d, mask=d_ok, other=0.0).to(tl.float32) * qk_scale
    if HAS_OMEGA:
        omega = tl.load(OMEGA + h * D + offs_d, mask=d_ok, other=0.0).to(tl.float32)
        phi_t = theta_t + omega * t.to(tl.float32)
    else:
        omega = offs_d * 0.0
        phi_t = theta_t
    return theta_raw, theta_t, q, omega, phi_t


@triton.heuristics({"HAS_OMEGA": lambda args: args["OMEGA"] is not None})
@triton.jit(do_not_specialize=["T_MAX", "SPLIT_LEN"])
def _decode_split_kernel(
    THETA, GATE, CACHE, SEQLENS, CPL, OMEGA,  # new token (B, 1, H, D); cache (B, T_MAX, H, D); (B,) int32
    M_OUT, L_OUT, ORE, OIM,  # partials: m, l (B, H, S); o (B, H, S, NH_P, BLOCK_D) re / im
    T_MAX, SPLIT_LEN, H, D, NH, qk_scale,
    HAS_OMEGA: tl.constexpr, ROW_PARTIALS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, NH_P: tl.constexpr, N_BITS: tl.constexpr,
):
    split = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2)
    n_split = tl.num_programs(0)
    t = tl.load(SEQLENS + b)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    _, theta_t, q, omega, phi_t = _new_token(THETA, GATE, OMEGA, b, h, t, H, D, offs_d, qk_scale, HAS_OMEGA)

    lo = split * SPLIT_LEN
    hi = tl.minimum(lo + SPLIT_LEN, t)
    row0 = b.to(tl.int64) * T_MAX  # first cache row of the sequence
    # score of row lo - 1: its probability weights the delay value L z_lo of this split's first row
    prev_ok = (lo >= 1) & (lo < hi)
    prev_off = ((row0 + lo - 1) * H + h) * D
    lo_d = offs_d * 0 + lo  # (a vector: the interpreter rejects a scalar mask here)
    theta_prev = tl.load(CACHE + prev_off + offs_d, mask=d_ok & (lo_d >= 1) & (lo_d < hi), other=0.0).to(tl.float32)
    s_carry = tl.sum(_scores(theta_prev, (lo - 1).to(tl.float32), phi_t, q, omega, HAS_OMEGA), 0)
    s_carry = tl.where(prev_ok, s_carry, float("-inf"))

    m_i = s_carry  # the running max also covers the carried score
    l_i = tl.full([], 0.0, tl.float32)
    if ROW_PARTIALS:
        as_re = tl.zeros([BLOCK_N, NH_P, BLOCK_D], tl.float32)  # sum p_u z_u      (static)
        as_im = tl.zeros([BLOCK_N, NH_P, BLOCK_D], tl.float32)
        ad_re = tl.zeros([BLOCK_N, NH_P, BLOCK_D], tl.float32)  # sum p_{u-1} z_u  (delay)
        ad_im = tl.zeros([BLOCK_N, NH_P, BLOCK_D], tl.float32)
    else:
        as_re = tl.zeros([NH_P, BLOCK_D], tl.float32)
        as_im = tl.zeros([NH_P, BLOCK_D], tl.float32)
        ad_re = tl.zeros([NH_P, BLOCK_D], tl.float32)
        ad_im = tl.zeros([NH_P, BLOCK_D], tl.float32)
    # The loop works on [BLOCK_N, 1, BLOCK_D] tiles (rows, harmonic, oscillator): broadcasting
    # to [BLOCK_N, NH_P, BLOCK_D] then keeps every harmonic of an element in its thread, so
    # no value crosses threads except the score's row sum, the max and the shifted p.
    offs_n2 = tl.arange(0, BLOCK_N)[:, None]  # [BN, 1]
    offs_n3 = offs_n2[:, :, None]  # [BN, 1, 1]
    d3 = offs_d[None, None, :]  # [1, 1, BD]
    d3_ok = d3 < D
    prev_idx = tl.maximum(offs_n2 - 1, 0)
    # Scores without trig per element: cos(phi_t - phi_u) = Re(a_u exp(-i theta_u)) with the
    # rotated query a_u = exp(i (phi_t - omega u)) = exp(i (theta_t + omega (t - start)))
    # exp(-i omega j), u = start + j: one sincos per block [BD] and a table [BN, BD] per program.
    theta_t3 = theta_t[None, None, :]
    q3 = q[None, None, :]
    omega3 = omega[None, None, :]
    if HAS_OMEGA:
        rot_s, rot_c = sincos(omega3 * offs_n3.to(tl.float32))  # exp(i omega j), [BN, 1, BD]
    else:
        st_t, ct_t = sincos(theta_t3)
        q_re = q3 * ct_t
        q_im = q3 * st_t
    for start in range(lo, hi, BLOCK_N):
        n_ok = start + offs_n2 < hi  # [BN, 1]
        off = ((row0 + start + offs_n3) * H + h) * D + d3
        theta = tl.load(CACHE + off, mask=n_ok[:, :, None] & d3_ok, other=0.0).to(tl.float32)  # [BN, 1, BD]
        st, ct = sincos(theta)
        if HAS_OMEGA:
            sb, cb = sincos(theta_t3 + omega3 * (t - start).to(tl.float32))  # [1, 1, BD]
            qbr = q3 * cb
            qbi = q3 * sb
            q_re = qbr * rot_c + qbi * rot_s  # a_u = q exp(i (phi_t - omega start)) exp(-i omega j)
            q_im = qbi * rot_c - qbr * rot_s
        s = tl.sum(q_re * ct + q_im * st, 2)  # [BN, 1]
        s = tl.where(n_ok, s, float("-inf"))
        m_blk = tl.max(tl.max(s, 1), 0)
        if m_blk > m_i:  # scalar: rescale only when the running max grows
            alpha = tl.exp2(m_i - m_blk)
            l_i = l_i * alpha
            as_re = as_re * alpha
            as_im = as_im * alpha
            ad_re = ad_re * alpha
            ad_im = ad_im * alpha
            m_i = m_blk
        p = tl.exp2(s - m_i)  # [BN, 1]; 0 past hi
        p_carry = tl.exp2(s_carry - m_i)
        p_prev = tl.where(offs_n2 == 0, p_carry, tl.gather(p, prev_idx, 0))
        p_prev = tl.where(n_ok, p_prev, 0.0)
        l_i += tl.sum(tl.sum(p, 1), 0)
        s_carry = tl.max(tl.max(tl.where(offs_n2 == BLOCK_N - 1, s, float("-inf")), 1), 0)

        zr, zi = harmonics_select(ct, st, NH_P)  # [BN, NH_P, BD]
        p3 = p[:, :, None]
        pp3 = p_prev[:, :, None]
        if ROW_PARTIALS:
            as_re += p3 * zr
            as_im += p3 * zi
            ad_re += pp3 * zr
            ad_im += pp3 * zi
        else:
            as_re += tl.sum(p3 * zr, 0)
            as_im += tl.sum(p3 * zi, 0)
            ad_re += tl.sum(pp3 * zr, 0)
            ad_im += tl.sum(pp3 * zi, 0)

    if ROW_PARTIALS:
        sr, si = tl.sum(as_re, 0), tl.sum(as_im, 0)
        dr, di = tl.sum(ad_re, 0), tl.sum(ad_im, 0)
    else:
        sr, si, dr, di = as_re, as_im, ad_re, ad_im
    kr, ki = load_coupling(CPL, h, D, NH, offs_d, NH_P, 0)
    lr, li = load_coupling(CPL, h, D, NH, offs_d, NH_P, 1)
    ore, oim = cmul(kr, ki, sr[None], si[None])
    o2r, o2i = cmul(lr, li, dr[None], di[None])
    ore += o2r
    oim += o2i
    stat = (b.to(tl.int64) * H + h) * n_split + split
    tl.store(M_OUT + stat, m_i)
    tl.store(L_OUT + stat, l_i)
    offs_h = tl.arange(0, NH_P)
    o_off = stat * NH_P * BLOCK_D + offs_h[:, None] * BLOCK_D + offs_d[None, :]
    tl.store(ORE + o_off, tl.reshape(ore, (NH_P, BLOCK_D)))
    tl.store(OIM + o_off, tl.reshape(oim, (NH_P, BLOCK_D)))


@triton.heuristics({"HAS_OMEGA": lambda args: args["OMEGA"] is not None})
@triton.jit(do_not_specialize=["T_MAX", "N_SPLIT"])
def _decode_combine_kernel(
    THETA, GATE, CACHE, SEQLENS, CPL, OMEGA, M_IN, L_IN, ORE, OIM, OUT,
    T_MAX, N_SPLIT, H, D, NH, qk_scale,
    HAS_OMEGA: tl.constexpr, BLOCK_D: tl.constexpr, NH_P: tl.constexpr, N_BITS: tl.constexpr,
):
    h = tl.program_id(0)
    b = tl.program_id(1)
    t = tl.load(SEQLENS + b)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    theta_raw, theta_t, q, omega, phi_t = _new_token(THETA, GATE, OMEGA, b, h, t, H, D, offs_d, qk_scale,
                                                     HAS_OMEGA)
    tok = (b.to(tl.int64) * H + h) * D  # the new token's row in (B, 1, H, D), for out
    s_tt = tl.sum(q, 0)  # the diagonal: cos 0 = 1
    row0 = b.to(tl.int64) * T_MAX
    has_prev = t >= 1
    theta_prev = tl.load(CACHE + ((row0 + t - 1) * H + h) * D + offs_d, mask=d_ok & (offs_d * 0 + t >= 1),
                         other=0.0).to(tl.float32)
    s_prev = tl.sum(_scores(theta_prev, (t - 1).to(tl.float32), phi_t, q, omega, HAS_OMEGA), 0)
    s_prev = tl.where(has_prev, s_prev, float("-inf"))

    stat0 = (b.to(tl.int64) * H + h) * N_SPLIT
    m = s_tt
    for j in range(0, N_SPLIT):
        m = tl.maximum(m, tl.load(M_IN + stat0 + j))
    m = tl.maximum(m, s_prev)
    offs_h = tl.arange(0, NH_P)
    o_rel = offs_h[:, None] * BLOCK_D + offs_d[None, :]
    o_re = tl.zeros([NH_P, BLOCK_D], tl.float32)
    o_im = tl.zeros([NH_P, BLOCK_D], tl.float32)
    l_sum = tl.full([], 0.0, tl.float32)
    for j in range(0, N_SPLIT):  # fixed order: deterministic
        w = tl.exp2(tl.load(M_IN + stat0 + j) - m)
        l_sum += w * tl.load(L_IN + stat0 + j)
        o_off = (stat0 + j) * NH_P * BLOCK_D + o_rel
        o_re += w * tl.load(ORE + o_off)
        o_im += w * tl.load(OIM + o_off)

    st, ct = sincos(theta_t)
    zr, zi = harmonics(ct[None, :], st[None, :], NH_P, N_BITS)  # [1, NH_P, BD]
    kr, ki = load_coupling(CPL, h, D, NH, offs_d, NH_P, 0)
    lr, li = load_coupling(CPL, h, D, NH, offs_d, NH_P, 1)
    p_tt = tl.exp2(s_tt - m)
    p_prev = tl.exp2(s_prev - m)  # 0 at t = 0
    l_sum += p_tt
    wr = p_tt * kr + p_prev * lr
    wi = p_tt * ki + p_prev * li
    vr, vi = cmul(wr, wi, zr, zi)
    o_re = (o_re[None] + vr) / l_sum
    o_im = (o_im[None] + vi) / l_sum
    g_im = zr * o_im - zi * o_re  # Im(exp(-i n theta_t) O)
    tl.store(OUT + tok + offs_d, tl.sum(tl.reshape(g_im, (NH_P, BLOCK_D)), 0).to(OUT.dtype.element_ty), mask=d_ok)
    tl.store(CACHE + ((row0 + t) * H + h) * D + offs_d, theta_raw, mask=d_ok)


# ----------------------------------------------------------------------------- launchers
def default_num_splits(batch_heads: int, t_max: int, block_n: int, device: torch.device) -> int:
    """Splits so that the grid holds about 4 programs per SM (flash-decoding), each split
    at least MIN_SPLIT_ROWS cache rows; 1 off CUDA."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = triton.cdiv(4 * sms, batch_heads)
    return max(1, min(want, triton.cdiv(t_max, max(MIN_SPLIT_ROWS, block_n))))


def decode_fwd(theta_new, gate_new, coupling_real, omega, scale, phase_cache, cache_seqlens, num_splits=None):
    """Launch the split and combine kernels.

    Args:
        theta_new, gate_new: (B, 1, H, D) contiguous, fp32/bf16/fp16 (checked by the caller).
        coupling_real: (H, D, NH, 2, 2) fp32 contiguous; omega (H, D) fp32 or None.
        scale: float, the score scale.
        phase_cache: (B, T_max, H, D) contiguous, theta_new's dtype; row ``cache_seqlens[b]``
            of sequence b is written in place.
        cache_seqlens: (B,) int32 in [0, T_max - 1].
        num_splits: splits of the cache length, or None for :func:`default_num_splits`.
    Returns:
        out (B, 1, H, D) in theta_new's dtype.
    """
    geom = launch_geometry(theta_new.shape, coupling_real.shape[2], DOT_IEEE.value)  # no matmuls: fp32
    B, H = geom.B, geom.H
    T_MAX = phase_cache.shape[1]
    split_tile = decode_split_config(geom.block_d, geom.nh_p)
    block_n = split_tile.block_n
    if num_splits is None:
        num_splits = default_num_splits(B * H, T_MAX, block_n, theta_new.device)
    split_len = triton.cdiv(triton.cdiv(T_MAX, num_splits), block_n) * block_n
    num_splits = triton.cdiv(T_MAX, split_len)
    dev = theta_new.device
    m = torch.empty((B, H, num_splits), device=dev, dtype=torch.float32)
    l_part = torch.empty_like(m)
    o_re = torch.empty((B, H, num_splits, geom.nh_p, geom.block_d), device=dev, dtype=torch.float32)
    o_im = torch.empty_like(o_re)
    out = torch.empty_like(theta_new)
    token = dict(THETA=theta_new, GATE=gate_new, CACHE=phase_cache, SEQLENS=cache_seqlens, CPL=coupling_real,
                 OMEGA=omega, T_MAX=T_MAX, H=H, D=geom.D, NH=geom.NH, qk_scale=scale * LOG2E.value,
                 BLOCK_D=geom.block_d, NH_P=geom.nh_p, N_BITS=geom.n_bits, enable_fp_fusion=True)
    _decode_split_kernel[(num_splits, H, B)](
        **token, M_OUT=m, L_OUT=l_part, ORE=o_re, OIM=o_im, SPLIT_LEN=split_len,
        ROW_PARTIALS=split_tile.row_partials, BLOCK_N=block_n, **split_tile.options(),
    )
    _decode_combine_kernel[(H, B)](
        **token, M_IN=m, L_IN=l_part, ORE=o_re, OIM=o_im, OUT=out, N_SPLIT=num_splits,
        **decode_combine_config(geom.block_d, geom.nh_p).options(),
    )
    return out
