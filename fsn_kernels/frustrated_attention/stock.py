"""The op from stock PyTorch, its math: per-token features and ONE causal scaled-dot-product
attention (SDPA) call per sequence (the ``"stock"`` backend; README beside this file, "How it
runs"). The custom ops and the autograd Function over these functions are in
``stock_function.py``.

Memory is linear in T where PyTorch's SDPA kernel is (the CPU flash kernel saves only
its inputs, output and log-sum-exp for the backward). Computed in
``precision.compute_dtype`` of the inputs (float64 for float64, else float32).

**The folded composition.** For row ``t`` the pair ``u = t`` is special (the delay must not
pair ``t`` with ``t + 1``) but its score is known in closed form, ``s_tt = scale sum_d
gate_t`` (``cos 0 = 1``). Keys are shifted one slot right and slot 0 of each sequence
holds a "diagonal" key whose score for query ``t`` is ``s_tt`` (a query channel
``scale sum_d gate_t`` meets a key channel 1). Under a plain causal mask query ``t`` then
sees the diagonal key and keys ``u = j - 1 < t``, with exactly the op's softmax
normaliser, so SDPA's log-sum-exp is the op's. Slot ``j`` carries the folded value
``K z_u + L z_{u+1}`` (``u = j - 1``; ``z_{u+1}`` is at most token ``t``: causal) and the
diagonal key the value ``e_W`` (one channel 1), so output channel ``W`` is ``A[t,t]``.
With ``o`` the other output channels (complex, ``(NH, D)``) the op's ``O = o + A[t,t] K z_t``
and, since ``|z| = 1``,

    dtheta = sum_n Im(exp(-i n theta_t) O_n) = sum_n Im(conj(z_n) o_n) + A[t,t] sum_n Im K_n.

Widths: values ``W = 2 NH D`` channels (the NH D real parts, then the NH D imaginary parts:
real arithmetic on contiguous rows, no complex tensors), the diagonal channel ``W`` and one
zero channel; queries and keys ``[cos phi, sin phi]`` (and the diagonal channel) padded to
the same width ``W + 2``: PyTorch's CPU flash kernel refuses different query/key and value
head sizes (its other kernels take them but keep a T x T matrix).

**Per-token work in few passes.** ``cos n theta, sin n theta`` for ``n >= 2`` come from
``cos theta, sin theta`` by the angle-addition recurrence, and the rotary ``cos phi, sin
phi`` (``phi = theta + omega t``) from the same pair and a (T, H, D) table of ``cos omega t,
sin omega t``: two transcendental functions per oscillator and token (exact to the compute
dtype's rounding; the tests compare against float64). Each direction's per-token work is a
pure function (:func:`features`, :func:`demodulate`, :func:`grad_output`,
:func:`input_grads`) of a few inputs and outputs, which ``stock_function.py`` runs fused by
``torch.compile`` where that pays (``STOCK_COMPILE``) and eagerly otherwise.

Packed sequences (``cu_seqlens``): features for all tokens at once (rotary positions
restart at each sequence; a sequence's first slot is its diagonal key, so no key or value
crosses a boundary); the attention runs once per sequence, on views.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LSE_CHUNK = 256  # query rows per chunk of the log-sum-exp recomputation (devices without the CPU kernel)
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def positions(T: int, cu_seqlens: Optional[Tensor], device, dtype) -> Tensor:
    """(T,) position of each token in its sequence (restarting at every ``cu_seqlens`` bound)."""
    rows = torch.arange(T, device=device)
    if cu_seqlens is None:
        return rows.to(dtype)
    starts = cu_seqlens[:-1].long()
    seq = torch.searchsorted(cu_seqlens[1:].long(), rows, right=True).clamp_max(starts.numel() - 1)
    return (rows - starts[seq]).to(dtype)


def spans(T: int, cu_seqlens: Optional[Tensor]) -> List[Tuple[int, int]]:
    """The (start, end) token ranges of the sequences (one range without packing)."""
    if cu_seqlens is None:
        return [(0, T)]
    bounds = cu_seqlens.tolist()
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def coefficients(coupling_real: Tensor) -> Tensor:
    """(4, H, NH, D): Kr, Ki, Lr, Li of the real coupling view (H, D, NH, 2 = K/L, 2 = re/im)."""
    return coupling_real.permute(3, 4, 0, 2, 1).flatten(0, 1)


# ----------------------------------------------------------------------- per-token math
def harmonics(c1: Tensor, s1: Tensor, n_harmonics: int) -> Tuple[Tensor, Tensor]:
    """``cos n theta, sin n theta`` for ``n = 1..NH`` from ``c1 = cos theta, s1 = sin theta``
    by angle addition: (..., D) -> two (..., NH, D)."""
    cs, ss = [c1], [s1]
    for _ in range(n_harmonics - 1):
        c, s = cs[-1], ss[-1]
        cs.append(c * c1 - s * s1)
        ss.append(s * c1 + c * s1)
    return torch.stack(cs, -2), torch.stack(ss, -2)


def rotary(c1: Tensor, s1: Tensor, omega: Optional[Tensor], pos: Tensor) -> Tuple[Tensor, Tensor]:
    """``cos phi, sin phi`` of ``phi = theta + omega * pos`` by angle addition: (B, T, H, D)
    each; omega (H, D) or None; pos (T,)."""
    if omega is None:
        return c1, s1
    angle = omega * pos[:, None, None]  # (T, H, D): a small table
    cr, sr = torch.cos(angle), torch.sin(angle)
    return c1 * cr - s1 * sr, s1 * cr + c1 * sr


def _shift(x: Tensor) -> Tensor:
    """Rows shifted one slot later along dim 1, slot 0 zero."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)


def features(theta: Tensor, gate: Tensor, omega: Optional[Tensor], pos: Tensor, coeffs: Tensor,
             scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Queries, shifted keys and folded values, (B, T, H, W + 2) each, for one sequence per
    batch row (slot 0 the diagonal key; packed inputs fix their sequence starts after).
    theta, gate (B, T, H, D); omega (H, D) or None; pos (T,); coeffs (4, H, NH, D).

    Channel layout of values (and of the output): re/im, then harmonic n, then oscillator
    d (``(2, NH, D)``), then the diagonal channel W and one zero channel."""
    B, T, H, D = theta.shape
    NH = coeffs.shape[2]
    W = 2 * NH * D
    c1, s1 = torch.cos(theta), torch.sin(theta)
    zc, zs = harmonics(c1, s1, NH)  # (B, T, H, NH, D)
    cp, sp = rotary(c1, s1, omega, pos)
    gs = gate * scale
    q = torch.cat([gs * cp, gs * sp, gs.new_zeros((B, T, H, W - 2 * D)), gs.sum(-1, keepdim=True),
                   gs.new_zeros((B, T, H, 1))], -1)
    one = torch.ones_like(gs[:, :1, :, :1])
    diag = torch.cat([gs.new_zeros((B, 1, H, W)), one, torch.zeros_like(one)], -1)  # the diagonal key and value
    k_body = torch.cat([cp, sp, cp.new_zeros((B, T, H, W - 2 * D + 2))], -1)
    k = torch.cat([diag, k_body[:, :-1]], 1)
    kr, ki, lr, li = coeffs
    zcp, zsp = _shift(zc), _shift(zs)  # slot j: token j - 1
    re = kr * zcp - ki * zsp + lr * zc - li * zs  # K z_{j-1} + L z_j
    im = kr * zsp + ki * zcp + lr * zs + li * zc
    v_body = torch.cat([re.flatten(-2), im.flatten(-2), gs.new_zeros((B, T, H, 2))], -1)
    v = torch.cat([diag, v_body[:, 1:]], 1)
    return q, k, v


def demodulate(theta: Tensor, o: Tensor, ki_sum: Tensor) -> Tensor:
    """dtheta (B, T, H, D) from the SDPA output o (B, T, H, W + 2) (module docstring);
    ki_sum (H, D) = sum_n Im K_n."""
    NH = (o.shape[-1] - 2) // (2 * theta.shape[-1])
    zc, zs = harmonics(torch.cos(theta), torch.sin(theta), NH)
    W = 2 * NH * theta.shape[-1]
    o_re = o[..., :W // 2].unflatten(-1, (NH, -1))
    o_im = o[..., W // 2:W].unflatten(-1, (NH, -1))
    return (zc * o_im - zs * o_re).sum(-2) + o[..., W:W + 1] * ki_sum


def grad_output(grad: Tensor, theta: Tensor, ki_sum: Tensor, NH: int) -> Tensor:
    """The SDPA output's gradient (B, T, H, W + 2) from dtheta's: ``d o = i G z`` (re: ``-G
    sin n theta``, im: ``G cos n theta``), ``d A[t,t] = sum_d G sum_n Im K_n``."""
    zc, zs = harmonics(torch.cos(theta), torch.sin(theta), NH)
    g = grad.unsqueeze(-2)
    return torch.cat([(-g * zs).flatten(-2), (g * zc).flatten(-2), (grad * ki_sum).sum(-1, keepdim=True),
                      torch.zeros_like(grad[..., :1])], -1)


def input_grads(grad: Tensor, theta: Tensor, gate: Tensor, omega: Optional[Tensor], pos: Tensor, coeffs: Tensor,
                scale: float, o: Tensor, dq: Tensor, dk: Tensor, dv: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(d theta, d gate, d coeffs (4, H, NH, D)) from the SDPA gradients dq, dk, dv and the
    forward's o, all (B, T, H, W + 2) (one sequence per batch row; packed inputs zero dk and
    dv at their sequence starts first).

    Real arithmetic on (c, s) pairs: with ``Y = conj(z_t) dv = P + iQ`` of the value slot of
    token t under K (slot t + 1) and under L (slot t), ``d K = sum Y``, ``d L = sum Y`` and
    ``Im(conj z_t dz_t) = -G Re(conj z o) + Kr Q - Ki P + Lr Q - Li P``."""
    B, T, H, D = theta.shape
    NH = coeffs.shape[2]
    W = 2 * NH * D
    c1, s1 = torch.cos(theta), torch.sin(theta)
    zc, zs = harmonics(c1, s1, NH)
    cp, sp = rotary(c1, s1, omega, pos)
    kr, ki, lr, li = coeffs
    g = grad.unsqueeze(-2)
    o_re, o_im = o[..., :W // 2].unflatten(-1, (NH, D)), o[..., W // 2:W].unflatten(-1, (NH, D))
    x = -g * (zc * o_re + zs * o_im)  # -G Re(conj z o): (B, T, H, NH, D)
    dvr, dvi = dv[..., :W // 2].unflatten(-1, (NH, D)), dv[..., W // 2:W].unflatten(-1, (NH, D))
    # token t's value under L is slot t (slot 0 a constant), under K slot t + 1 (none for the last)
    dvr_k = torch.cat([dvr[:, 1:], torch.zeros_like(dvr[:, :1])], 1)
    dvi_k = torch.cat([dvi[:, 1:], torch.zeros_like(dvi[:, :1])], 1)
    dvr_l = torch.cat([torch.zeros_like(dvr[:, :1]), dvr[:, 1:]], 1)
    dvi_l = torch.cat([torch.zeros_like(dvi[:, :1]), dvi[:, 1:]], 1)
    pk, qk = zc * dvr_k + zs * dvi_k, zc * dvi_k - zs * dvr_k
    pl, ql = zc * dvr_l + zs * dvi_l, zc * dvi_l - zs * dvr_l
    x = x + kr * qk - ki * pk + lr * ql - li * pl
    a_g = (o[..., W:W + 1] * grad).sum((0, 1))  # (H, D): d Im K_n of the diagonal term, every n
    d_coeffs = torch.stack([pk.sum((0, 1)), qk.sum((0, 1)) + a_g.unsqueeze(-2), pl.sum((0, 1)), ql.sum((0, 1))])
    # queries and keys: q = gs [cos, sin, 1], k slot j = [cos, sin] of token j - 1
    dqc, dqs = dq[..., :D], dq[..., D:2 * D]
    d_gate = (dqc * cp + dqs * sp + dq[..., W:W + 1]) * scale
    gs = gate * scale
    dkc = torch.cat([dk[:, 1:, :, :D], torch.zeros_like(dk[:, :1, :, :D])], 1)
    dks = torch.cat([dk[:, 1:, :, D:2 * D], torch.zeros_like(dk[:, :1, :, :D])], 1)
    d_c, d_s = dqc * gs + dkc, dqs * gs + dks
    n = torch.arange(1, NH + 1, device=theta.device, dtype=theta.dtype)[:, None]
    d_theta = cp * d_s - sp * d_c + (x * n).sum(-2)
    return d_theta, d_gate, d_coeffs


# ----------------------------------------------------------------------------- SDPA
def attention_forward(q: Tensor, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
    """Causal SDPA, scale 1, of (N, H, T, W) views: ``(o, lse)``; where PyTorch's CPU flash
    kernel is not available the log-sum-exp is recomputed in chunks."""
    if _CPU_FLASH is not None and q.device.type == "cpu":
        return _CPU_FLASH(q, k, v, 0.0, True, scale=1.0)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
    return o, _causal_lse(q, k)


def attention_backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, grad_o: Tensor):
    """(dq, dk, dv) of :func:`attention_forward`: PyTorch's CPU kernel, or elsewhere the
    FlashAttention-2 backward written out ``LSE_CHUNK`` query rows at a time (memory
    ``LSE_CHUNK x T``)."""
    if _CPU_FLASH is not None and q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_o, q, k, v, o, lse, 0.0, True, scale=1.0)
    T = q.shape[2]
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = (grad_o * o).sum(-1, keepdim=True)  # (N, H, T, 1)
    for a in range(0, T, LSE_CHUNK):
        b = min(a + LSE_CHUNK, T)
        later = torch.arange(b, device=q.device)[None, :] > torch.arange(a, b, device=q.device)[:, None]
        scores = q[:, :, a:b] @ k[:, :, :b].transpose(-1, -2) - lse[:, :, a:b, None]
        p = torch.exp(scores.masked_fill(later, -math.inf))
        dv[:, :, :b] += p.transpose(-1, -2) @ grad_o[:, :, a:b]
        ds = p * (grad_o[:, :, a:b] @ v[:, :, :b].transpose(-1, -2) - delta[:, :, a:b])
        dq[:, :, a:b] = ds @ k[:, :, :b]
        dk[:, :, :b] += ds.transpose(-1, -2) @ q[:, :, a:b]
    return dq, dk, dv


@torch.no_grad()
def _causal_lse(q: Tensor, k: Tensor) -> Tensor:
    """Log-sum-exp of the causal scores ``q k^T`` of (N, H, T, W), ``LSE_CHUNK`` query rows
    at a time (memory ``LSE_CHUNK x T``): for devices whose SDPA does not return it."""
    T = q.shape[2]
    out = []
    for a in range(0, T, LSE_CHUNK):
        b = min(a + LSE_CHUNK, T)
        s = q[:, :, a:b] @ k[:, :, :b].transpose(-1, -2)
        later = torch.arange(b, device=q.device)[None, :] > torch.arange(a, b, device=q.device)[:, None]
        out.append(torch.logsumexp(s.masked_fill(later, float("-inf")), -1))
    return torch.cat(out, -1)


def views(x: Tensor, a: int, b: int) -> Tensor:
    """Rows a..b of a (B, T, H, W) buffer as the (B, H, n, W) view SDPA takes."""
    return x[:, a:b].transpose(1, 2)


# ------------------------------------------------------------------------ one direction
def forward(theta: Tensor, gate: Tensor, coeffs: Tensor, omega: Optional[Tensor], scale: float) -> Tuple[Tensor, ...]:
    """One sequence per batch row: (dtheta (B, T, H, D), lse (B, H, T), o, q, k, v (B, T, H, W + 2))."""
    pos = torch.arange(theta.shape[1], device=theta.device, dtype=theta.dtype)
    q, k, v = features(theta, gate, omega, pos, coeffs, scale)
    o, lse = attention_forward(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    o = o.transpose(1, 2)
    return demodulate(theta, o, coeffs[1].sum(1)), lse, o, q, k, v


def backward(grad: Tensor, theta: Tensor, gate: Tensor, coeffs: Tensor, omega: Optional[Tensor], scale: float,
             o: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """One sequence per batch row: (d theta, d gate, d coeffs) of :func:`forward`."""
    NH = coeffs.shape[2]
    pos = torch.arange(theta.shape[1], device=theta.device, dtype=theta.dtype)
    d_o = grad_output(grad, theta, coeffs[1].sum(1), NH)
    dq, dk, dv = attention_backward(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), o.transpose(1, 2),
                                    lse, d_o.transpose(1, 2))
    return input_grads(grad, theta, gate, omega, pos, coeffs, scale, o, dq.transpose(1, 2), dk.transpose(1, 2),
                       dv.transpose(1, 2))


def forward_packed(theta, gate, coeffs, omega, scale, cu_seqlens: Tensor) -> Tuple[Tensor, ...]:
    """:func:`forward` of packed sequences (B = 1): features at once, SDPA per sequence."""
    B, T, H, D = theta.shape
    pos = positions(T, cu_seqlens, theta.device, theta.dtype)
    starts = (pos == 0).nonzero().flatten()
    q, k, v = features(theta, gate, omega, pos, coeffs, scale)
    W = v.shape[-1] - 2
    for x in (k, v):  # each sequence's first slot is its diagonal key
        x.index_fill_(1, starts, 0.0)
        x[:, starts, :, W] = 1.0
    o = torch.zeros_like(q)
    lse = theta.new_zeros((B, H, T))
    for a, b in spans(T, cu_seqlens):
        o_s, lse[:, :, a:b] = attention_forward(views(q, a, b), views(k, a, b), views(v, a, b))
        o[:, a:b] = o_s.transpose(1, 2)
    return demodulate(theta, o, coeffs[1].sum(1)), lse, o, q, k, v


def backward_packed(grad, theta, gate, coeffs, omega, scale, cu_seqlens: Tensor, o, lse, q, k, v):
    """:func:`backward` of :func:`forward_packed`."""
    T = theta.shape[1]
    NH = coeffs.shape[2]
    pos = positions(T, cu_seqlens, theta.device, theta.dtype)
    starts = (pos == 0).nonzero().flatten()
    d_o = grad_output(grad, theta, coeffs[1].sum(1), NH)
    dq, dk, dv = torch.zeros_like(o), torch.zeros_like(o), torch.zeros_like(o)
    for a, b in spans(T, cu_seqlens):
        grads = attention_backward(views(q, a, b), views(k, a, b), views(v, a, b), views(o, a, b),
                                   lse[:, :, a:b].contiguous(), views(d_o, a, b))
        for dst, src in zip((dq, dk, dv), grads):
            dst[:, a:b] = src.transpose(1, 2)
    dk.index_fill_(1, starts, 0.0)  # the diagonal slots are constants
    dv.index_fill_(1, starts, 0.0)
    return input_grads(grad, theta, gate, omega, pos, coeffs, scale, o, dq, dk, dv)
