"""The op from stock PyTorch: per-token features and ONE causal scaled-dot-product
attention call per sequence (the ``"sdpa"`` backend; README beside this file, "How it runs").

Memory is linear in T where PyTorch's SDPA kernel is (the CPU flash kernel saves only
its inputs, output and log-sum-exp for the backward). Any float dtype: float64 inputs are
computed in float64, every other dtype in float32. An autograd Function with a written-out
backward (README, "Backward") over two custom ops (``fsn::sdpa_attention_fwd`` and
``_bwd``: ``torch.compile`` sees no graph break), so the per-token work of each
direction is a handful of tensor operations; the forward saves the SDPA inputs, output
and lse (four buffers of width ``W + 2`` per token) and the backward recomputes only the
harmonics and the gate scale (one pass per token).

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
the per-token work is real products of contiguous rows, no complex tensors),
the diagonal channel ``W`` and one zero channel (an even width keeps complex views of
every row); queries and keys ``[cos phi, sin phi]`` (and the diagonal channel) padded to
the same width ``W + 2``, which the flash kernels want.

Packed sequences (``cu_seqlens``): features for all tokens at once (rotary positions
restart at each sequence; a sequence's first slot is its diagonal key, so no key or value
crosses a boundary); the attention runs once per sequence, on views.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LSE_CHUNK = 256  # query rows per chunk of the log-sum-exp recomputation (devices without the CPU kernel)
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def positions(T: int, cu_seqlens: Optional[Tensor], device, dtype) -> Tensor:
    """(T,) position of each token in its sequence (restarting at every ``cu_seqlens`` bound)."""
    rows = torch.arange(T, device=device)
    if cu_seqlens is None:
        return rows.to(dtype)
    starts = cu_seqlens[:-1].long()
    seq = torch.searchsorted(cu_seqlens[1:].long(), rows, right=True).clamp_max(starts.numel() - 1)
    return (rows - starts[seq]).to(dtype)


def harmonics(theta: Tensor, n_harmonics: int) -> Tuple[Tensor, Tensor]:
    """``(cos n theta, sin n theta)`` for ``n = 1..NH``: (..., D) -> two (..., NH, D)."""
    n = torch.arange(1, n_harmonics + 1, device=theta.device, dtype=theta.dtype)
    angle = theta.unsqueeze(-2) * n[:, None]
    return torch.cos(angle), torch.sin(angle)


# ----------------------------------------------------------------------------- SDPA
def _attention_forward(q: Tensor, k: Tensor, v: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """Causal SDPA, scale 1, of (N, H, T, W) views: ``(o, lse)``; lse is None where the
    kernel does not return it."""
    if _CPU_FLASH is not None and q.device.type == "cpu":
        return _CPU_FLASH(q, k, v, 0.0, True, scale=1.0)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0), None


def _attention_backward(q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, grad_o: Tensor):
    """(dq, dk, dv) of :func:`_attention_forward`: PyTorch's CPU kernel, or elsewhere the
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


# ----------------------------------------------------------------------- features
def _harmonic_rows(theta: Tensor, n_harmonics: int) -> Tensor:
    """``[cos n theta, sin n theta, cos n theta]`` for ``n = 1..NH``: (..., D) -> (..., 3, NH, D),
    one buffer. Rows 0:2 are the pair ``(cos, sin)``, rows 1:3 the swapped pair ``(sin, cos)``:
    both views, so a complex product is two real products of contiguous (NH, D) blocks."""
    n = torch.arange(1, n_harmonics + 1, device=theta.device, dtype=theta.dtype)
    angle = theta.unsqueeze(-2) * n[:, None]
    rows = theta.new_empty((*angle.shape[:-2], 3, *angle.shape[-2:]))
    torch.cos(angle, out=rows[..., 0, :, :])
    torch.sin(angle, out=rows[..., 1, :, :])
    rows[..., 2, :, :] = rows[..., 0, :, :]
    return rows


def _query_rows(theta: Tensor, omega: Optional[Tensor], pos: Tensor, z: Tensor) -> Tensor:
    """``[cos phi, sin phi, cos phi]`` (B, T, H, 3, D) of the rotary phase ``phi``: the first
    harmonic's rows of ``z`` (a view) without omega."""
    if omega is None:
        return z[..., 0, :]
    return _harmonic_rows(theta + omega * pos[:, None, None], 1)[..., 0, :]


def _coefficients(coupling_real: Tensor):
    """Real coefficient rows (H, 2, NH, D) of the couplings for the (2, NH, D) value layout:
    ``K z = Kr (c, s) + (-Ki, Ki) (s, c)`` and likewise L, and the (H, NH, D) parts Kr, Ki, Lr, Li."""
    cr = coupling_real.permute(0, 2, 1, 3, 4)  # (H, NH, D, k/l, re/im)
    kr, ki, lr, li = cr[..., 0, 0], cr[..., 0, 1], cr[..., 1, 0], cr[..., 1, 1]
    return (torch.stack((kr, kr), -3), torch.stack((-ki, ki), -3), torch.stack((lr, lr), -3),
            torch.stack((-li, li), -3), kr, ki, lr, li)


def _token_rows(theta, gate, n_harmonics, omega, scale, pos):
    """Harmonic rows z (B, T, H, 3, NH, D), query rows (B, T, H, 3, D), scaled gate (B, T, H, D)."""
    z = _harmonic_rows(theta, n_harmonics)
    return z, _query_rows(theta, omega, pos, z), gate * scale


def _features(theta, gate, coeffs, omega, scale, pos, start_rows):
    """Queries, shifted keys and folded values, (B, T, H, W + 2) each, and the per-token
    pieces the backward reuses. theta, gate (B, T, H, D); ``coeffs`` from :func:`_coefficients`;
    ``start_rows``: (S,) long, the first token of each sequence (its slot is the diagonal).

    Channel layout of values (and of the output): re/im, then harmonic n, then oscillator
    d (``(2, NH, D)``), then the diagonal channel W and one zero channel."""
    B, T, H, D = theta.shape
    krr, kii, lrr, lii = coeffs[:4]
    NH = krr.shape[2]
    W = 2 * NH * D
    z, qz, gs = _token_rows(theta, gate, NH, omega, scale, pos)
    q = theta.new_empty((B, T, H, W + 2))
    torch.mul(qz[..., 0:2, :], gs[..., None, :], out=q[..., :2 * D].unflatten(-1, (2, D)))
    q[..., 2 * D:].zero_()
    torch.sum(gs, -1, out=q[..., W])
    k = theta.new_empty((B, T, H, W + 2))
    k[:, 1:, :, :2 * D].unflatten(-1, (2, D)).copy_(qz[:, :-1, :, 0:2, :])
    k[:, 0, :, :2 * D].zero_()
    k[..., 2 * D:].zero_()
    v = theta.new_empty((B, T, H, W + 2))
    if T > 1:
        body = v[:, 1:, :, :W].unflatten(-1, (2, NH, D))
        zp, zn = z[:, :-1], z[:, 1:]
        torch.mul(zp[..., 0:2, :, :], krr, out=body)  # slot j: K z_{j-1} + L z_j
        body.addcmul_(zp[..., 1:3, :, :], kii)
        body.addcmul_(zn[..., 0:2, :, :], lrr)
        body.addcmul_(zn[..., 1:3, :, :], lii)
    v[:, 0, :, :W].zero_()
    v[..., W:].zero_()
    k.index_fill_(1, start_rows, 0.0)
    v.index_fill_(1, start_rows, 0.0)
    k[:, start_rows, :, W] = 1.0
    v[:, start_rows, :, W] = 1.0
    return q, k, v, z, qz, gs


def _spans(T: int, cu_seqlens: Optional[Tensor]):
    if cu_seqlens is None:
        return [(0, T)]
    bounds = cu_seqlens.tolist()
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _setup(theta, coupling_real, cu_seqlens):
    """Coupling coefficients (:func:`_coefficients`), positions (T,), the sequence starts
    (S,) long, spans."""
    T = theta.shape[1]
    pos = positions(T, cu_seqlens, theta.device, theta.dtype)
    start_rows = (pos == 0).nonzero().flatten() if cu_seqlens is not None else \
        torch.zeros(1, dtype=torch.long, device=theta.device)
    return _coefficients(coupling_real), pos, start_rows, _spans(T, cu_seqlens)


def _views(x: Tensor, a: int, b: int) -> Tensor:
    """Rows a..b of a (B, T, H, W) buffer as the (B, H, n, W) view SDPA takes."""
    return x[:, a:b].transpose(1, 2)


def _pair_dot_swapped(z: Tensor, x: Tensor, dim: int) -> Tensor:
    """``Im(conj(z) x) = c x_im - s x_re`` of z rows (3 along ``dim``) and pairs x (2 along
    ``dim``); ``dim`` is reduced."""
    prod = z.narrow(dim, 1, 2) * x  # (s x_re, c x_im)
    return prod.select(dim, 1) - prod.select(dim, 0)


@torch.library.custom_op("fsn::sdpa_attention_fwd", mutates_args=())
def _fwd_op(theta: Tensor, gate: Tensor, coupling_real: Tensor, omega: Optional[Tensor], scale: float,
            cu_seqlens: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dtheta (B, T, H, D), lse (B, H, T), then o, q, k, v (B, T, H, W + 2) each)."""
    B, T, H, D = theta.shape
    coeffs, pos, start_rows, spans = _setup(theta, coupling_real, cu_seqlens)
    NH = coeffs[0].shape[2]
    W = 2 * NH * D
    q, k, v, z, _, _ = _features(theta, gate, coeffs, omega, scale, pos, start_rows)
    if len(spans) == 1 and spans[0] == (0, T):
        o_s, lse = _attention_forward(_views(q, 0, T), _views(k, 0, T), _views(v, 0, T))
        if lse is None:  # the backward needs it too
            lse = _causal_lse(_views(q, 0, T), _views(k, 0, T))
        o, lse = o_s.transpose(1, 2).contiguous(), lse.contiguous()
    else:
        o = torch.zeros_like(q)
        lse = theta.new_zeros((B, H, T))
        for a, b in spans:
            qs, ks, vs = _views(q, a, b), _views(k, a, b), _views(v, a, b)
            o_s, lse_s = _attention_forward(qs, ks, vs)
            if lse_s is None:
                lse_s = _causal_lse(qs, ks)
            o[:, a:b] = o_s.transpose(1, 2)
            lse[:, :, a:b] = lse_s
    o_pairs = o[..., :W].unflatten(-1, (2, NH, D))
    dtheta = _pair_dot_swapped(z, o_pairs, -3).sum(-2)
    dtheta.addcmul_(o[..., W:W + 1], coeffs[5].sum(1))
    return dtheta, lse, o, q, k, v


@_fwd_op.register_fake
def _(theta, gate, coupling_real, omega, scale, cu_seqlens):
    B, T, H, D = theta.shape
    wide = [theta.new_empty((B, T, H, 2 * coupling_real.shape[2] * D + 2)) for _ in range(4)]
    return (torch.empty_like(theta), theta.new_empty((B, H, T)), *wide)


@torch.library.custom_op("fsn::sdpa_attention_bwd", mutates_args=())
def _bwd_op(grad: Tensor, theta: Tensor, gate: Tensor, coupling_real: Tensor, omega: Optional[Tensor], scale: float,
            cu_seqlens: Optional[Tensor], o: Tensor, lse: Tensor, q: Tensor, k: Tensor,
            v: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(d theta, d gate, d coupling_real) from the forward's o, lse, q, k, v; the harmonics
    are recomputed (one pass per token).

    Real arithmetic on (c, s) pairs: with ``Y = conj(z_t) dv`` (P + iQ) for the value slot
    of token t under K (slot t + 1) and under L (slot t), ``d K = sum Y``, ``d L = sum Y`` and
    ``Im(conj z_t dz_t) = -G Re(conj z o) + Kr Q - Ki P + Lr Q - Li P``."""
    B, T, H, D = theta.shape
    coeffs, pos, start_rows, spans = _setup(theta, coupling_real, cu_seqlens)
    kr, ki, lr, li = coeffs[4:]
    NH = kr.shape[1]
    W = 2 * NH * D
    z, qz, gs = _token_rows(theta, gate, NH, omega, scale, pos)
    o_pairs = o[..., :W].unflatten(-1, (2, NH, D))
    # demodulation: d o = i G z = (-G s, G c); d A[t,t] = sum_{n,d} G Im K_n
    d_o = theta.new_empty((B, T, H, W + 2))
    g_pm = torch.stack((-grad, grad), -2).unsqueeze(-2)  # (B, T, H, 2, 1, D)
    torch.mul(z[..., 1:3, :, :], g_pm, out=d_o[..., :W].unflatten(-1, (2, NH, D)))
    torch.sum(grad * ki.sum(1), -1, out=d_o[..., W])
    d_o[..., W + 1].zero_()
    if len(spans) == 1 and spans[0] == (0, T):
        grads = _attention_backward(_views(q, 0, T), _views(k, 0, T), _views(v, 0, T), _views(o, 0, T),
                                    lse, _views(d_o, 0, T))
        dq, dk, dv = (x.transpose(1, 2) for x in grads)
    else:
        dq, dk, dv = torch.zeros_like(o), torch.zeros_like(o), torch.zeros_like(o)
        for a, b in spans:
            grads = _attention_backward(_views(q, a, b), _views(k, a, b), _views(v, a, b), _views(o, a, b),
                                        lse[:, :, a:b].contiguous(), _views(d_o, a, b))
            for dst, src in zip((dq, dk, dv), grads):
                dst[:, a:b] = src.transpose(1, 2)
        dk.index_fill_(1, start_rows, 0.0)  # the diagonal slots are constants
        dv.index_fill_(1, start_rows, 0.0)
    # values: slot j = K z_{j-1} + L z_j; Y = conj(z) dv = c (dvr, dvi) + s (dvi, -dvr)
    x = (z[..., 0:2, :, :] * o_pairs).sum(-3).mul_(-grad[..., None, :])  # -G Re(conj z o): (B, T, H, NH, D)
    d_kl = theta.new_zeros((2, H, 2, NH, D))
    if T > 1:
        dvb = dv[:, 1:, :, :W].unflatten(-1, (2, NH, D))
        dv_j = torch.stack((dvb[..., 1, :, :], -dvb[..., 0, :, :]), -3)
        for rows, tokens, (cr, ci), out in ((slice(None, -1), z[:, :-1], (kr, ki), d_kl[0]),
                                            (slice(1, None), z[:, 1:], (lr, li), d_kl[1])):
            y = tokens[..., 0:1, :, :] * dvb
            y.addcmul_(tokens[..., 1:2, :, :], dv_j)  # (P, Q)
            torch.sum(y, (0, 1), out=out)
            x[:, rows].addcmul_(y[..., 1, :, :], cr).addcmul_(y[..., 0, :, :], ci, value=-1.0)
    a_g = (o[..., W:W + 1] * grad).sum((0, 1))  # (H, D): d Im K_n of the diagonal term, every n
    d_kl[0, :, 1] += a_g[:, None, :]
    # queries and keys: q = gs [cos, sin, 1], k slot j = [cos, sin] of token j - 1
    dq2 = dq[..., :2 * D].unflatten(-1, (2, D))
    d_gate = (dq2 * qz[..., 0:2, :]).sum(-2).add_(dq[..., W:W + 1]).mul_(scale)
    d_qk = dq2 * gs[..., None, :]
    d_qk[:, :-1] += dk[:, 1:, :, :2 * D].unflatten(-1, (2, D))
    n = torch.arange(1, NH + 1, device=theta.device, dtype=theta.dtype)[:, None]
    d_theta = _pair_dot_swapped(qz, d_qk, -2).add_((x * n).sum(-2))
    d_coupling = d_kl.permute(1, 4, 3, 0, 2)  # (H, D, NH, k/l, re/im)
    return d_theta, d_gate, d_coupling.contiguous()


@_bwd_op.register_fake
def _(grad, theta, gate, coupling_real, omega, scale, cu_seqlens, o, lse, q, k, v):
    return torch.empty_like(theta), torch.empty_like(gate), torch.empty_like(coupling_real)


class SdpaAttentionFunction(torch.autograd.Function):
    """Autograd Function over the two custom ops (opaque to ``torch.compile``: no graph
    break, eager numerics). Inputs in the compute dtype: theta, gate (B, T, H, D);
    coupling_real (H, D, NH, 2, 2); omega (H, D) or None. Saves the SDPA inputs, o and lse."""

    @staticmethod
    def forward(ctx, theta, gate, coupling_real, omega, scale, cu_seqlens):
        dtheta, lse, o, q, k, v = _fwd_op(theta, gate, coupling_real, omega, scale, cu_seqlens)
        ctx.save_for_backward(theta, gate, coupling_real, omega, cu_seqlens, o, lse, q, k, v)
        ctx.scale = scale
        ctx.mark_non_differentiable(lse)
        return dtheta, lse

    @staticmethod
    def backward(ctx, grad, _grad_lse):
        theta, gate, coupling_real, omega, cu_seqlens, o, lse, q, k, v = ctx.saved_tensors
        d_theta, d_gate, d_coupling = _bwd_op(grad.contiguous(), theta, gate, coupling_real, omega, ctx.scale,
                                              cu_seqlens, o, lse, q, k, v)
        return d_theta, d_gate, d_coupling, None, None, None


def sdpa_frustrated_attention(theta: Tensor, gate: Tensor, coupling: Tensor, omega: Optional[Tensor], scale: float,
                              cu_seqlens: Optional[Tensor] = None):
    """The op by the folded composition (module docstring). Inputs are not validated (the
    public API does that).

    Args:
        theta, gate: (B, T, H, D) real; coupling complex (H, D, NH, 2); omega (H, D) or
            None; scale: float; cu_seqlens: int32 (S + 1,) packed sequences (B = 1) or None.

    Returns:
        ``(dtheta, lse)``: dtheta (B, T, H, D) in theta's dtype; lse (B, H, T) natural log,
        float64 for float64 inputs and float32 otherwise.
    """
    B, T, H, D = theta.shape
    cdt = compute_dtype(theta.dtype, gate.dtype)
    if B * T == 0:
        return theta.new_zeros(theta.shape), theta.new_zeros((B, H, T), dtype=cdt)
    om = None if omega is None else omega.to(cdt)
    coupling_real = torch.view_as_real(coupling.resolve_conj()).to(cdt)
    out, lse = SdpaAttentionFunction.apply(theta.to(cdt).contiguous(), gate.to(cdt).contiguous(), coupling_real, om,
                                           float(scale), cu_seqlens)
    return out.to(theta.dtype), lse
