"""The op from stock PyTorch: per-token features and ONE causal scaled-dot-product
attention call per sequence (the ``"sdpa"`` backend; README beside this file, "How it runs").

Memory is linear in T where PyTorch's SDPA kernel is (the CPU flash kernel saves only
its inputs, output and log-sum-exp for the backward). Any float dtype: float64 inputs are
computed in float64, every other dtype in float32. An autograd Function with a written-out
backward (README, "Backward"), so the per-token work of each direction is a handful of
fused tensor operations.

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

Widths: values ``W = 2 NH D`` channels (re/im interleaved per harmonic and oscillator),
the diagonal channel ``W`` and one zero channel (an even width keeps complex views of
every row); queries and keys ``[cos phi, sin phi]`` (and the diagonal channel) padded to
the same width ``W + 2``, which the flash kernels want.

Packed sequences (``cu_seqlens``): features for all tokens at once (rotary positions
restart at each sequence; a sequence's first slot is its diagonal key, so no key or value
crosses a boundary); the attention runs once per sequence, on views.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

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


def _harmonics_complex(theta: Tensor, n_harmonics: int) -> Tensor:
    """``exp(i n theta)``, n = 1..NH: (..., D) real -> (..., NH, D) complex (one cos and
    one sin per element, written into one buffer)."""
    n = torch.arange(1, n_harmonics + 1, device=theta.device, dtype=theta.dtype)
    angle = theta.unsqueeze(-2) * n[:, None]
    buf = theta.new_empty(*angle.shape, 2)
    torch.cos(angle, out=buf[..., 0])
    torch.sin(angle, out=buf[..., 1])
    return torch.view_as_complex(buf)


# ----------------------------------------------------------------------------- SDPA
def _attention_forward(q: Tensor, k: Tensor, v: Tensor):
    """Causal SDPA, scale 1, of (N, H, T, W) views: ``(o, lse, state)``; lse is None where
    the kernel does not return it; ``state`` is what :func:`_attention_backward` needs."""
    if _CPU_FLASH is not None and q.device.type == "cpu":
        o, lse = _CPU_FLASH(q, k, v, 0.0, True, scale=1.0)
        return o, lse, (q, k, v, o, lse)
    leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]
    with torch.enable_grad():
        o = F.scaled_dot_product_attention(*leaves, is_causal=True, scale=1.0)
    return o.detach(), None, (leaves, o)


def _attention_backward(state, grad_o: Tensor):
    """(dq, dk, dv) of :func:`_attention_forward`."""
    if len(state) == 5:
        q, k, v, o, lse = state
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_o, q, k, v, o, lse, 0.0, True, scale=1.0)
    leaves, o = state
    return torch.autograd.grad(o, leaves, grad_o)


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
def _features(theta, gate, K, L, omega, scale, pos, starts):
    """Queries, shifted keys and folded values, (B, T, H, W + 2) each, and the per-token
    pieces the backward reuses. theta, gate (B, T, H, D); K, L complex (H, NH, D);
    ``starts``: (T,) bool, the first token of each sequence (its slot is the diagonal)."""
    B, T, H, D = theta.shape
    NH = K.shape[1]
    W = 2 * NH * D
    z = _harmonics_complex(theta, NH)  # (B, T, H, NH, D)
    if omega is None:
        c, s = z.real[..., 0, :], z.imag[..., 0, :]
    else:
        phi = theta + omega * pos[:, None, None]
        c, s = torch.cos(phi), torch.sin(phi)
    gs = gate * scale
    q = theta.new_zeros(B, T, H, W + 2)
    torch.mul(gs, c, out=q[..., :D])
    torch.mul(gs, s, out=q[..., D:2 * D])
    q[..., W] = gs.sum(-1)
    k = theta.new_zeros(B, T, H, W + 2)
    v = theta.new_zeros(B, T, H, W + 2)
    k[:, 1:, :, :D] = c[:, :-1]
    k[:, 1:, :, D:2 * D] = s[:, :-1]
    folded = torch.view_as_complex(v[:, 1:, :, :W].unflatten(-1, (NH, D, 2)))
    zp, zn = z[:, :-1], z[:, 1:]
    torch.add(K.expand_as(zp) * zp, L.expand_as(zn) * zn, out=folded)  # slot j: K z_{j-1} + L z_j
    k[:, starts] = 0.0
    v[:, starts] = 0.0
    k[:, starts, :, W] = 1.0
    v[:, starts, :, W] = 1.0
    return q, k, v, z, c, s, gs


def _spans(T: int, bounds: Optional[List[int]]):
    return [(0, T)] if bounds is None else [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class FoldedAttentionFunction(torch.autograd.Function):
    """The folded composition with a written-out backward. Inputs in the compute dtype:
    theta, gate (B, T, H, D); coupling complex (H, D, NH, 2); omega (H, D) or None."""

    @staticmethod
    def forward(ctx, theta, gate, coupling, omega, scale, pos, starts, bounds, need_lse):
        B, T, H, D = theta.shape
        cpl = coupling.permute(0, 2, 1, 3)  # (H, NH, D, 2)
        K, L = cpl[..., 0], cpl[..., 1]
        NH = K.shape[1]
        W = 2 * NH * D
        q, k, v, z, c, s, gs = _features(theta, gate, K, L, omega, scale, pos, starts)
        spans = _spans(T, bounds)
        o = torch.empty_like(q) if len(spans) > 1 else None
        lse = theta.new_empty(B, H, T) if len(spans) > 1 else None
        states, got_lse = [], True
        for a, b in spans:
            qs, ks, vs = (x[:, a:b].transpose(1, 2) for x in (q, k, v))
            o_s, lse_s, state = _attention_forward(qs, ks, vs)
            if lse_s is None and need_lse:
                lse_s = _causal_lse(qs, ks)
            got_lse = got_lse and lse_s is not None
            if o is None:  # one sequence: the kernel's output as it is
                o, lse = o_s.transpose(1, 2), lse_s
            else:
                o[:, a:b] = o_s.transpose(1, 2)
                if lse_s is not None:
                    lse[:, :, a:b] = lse_s
            states.append(state)
        o_c = torch.view_as_complex(o[..., :W].unflatten(-1, (NH, D, 2)))  # (B, T, H, NH, D)
        a_tt = o[..., W]  # A[t, t], (B, T, H)
        dtheta = (z.conj() * o_c).imag.sum(-2) + a_tt[..., None] * K.imag.sum(1)
        ctx.save_for_backward(z, c, s, gs, o, K, L, starts)
        ctx.states, ctx.spans, ctx.scale, ctx.dims = states, spans, scale, (NH, D, W)
        if not got_lse:
            return dtheta, None
        lse = lse.clone() if len(spans) == 1 else lse  # the output is not the tensor the backward holds
        ctx.mark_non_differentiable(lse)
        return dtheta, lse

    @staticmethod
    def backward(ctx, grad, _grad_lse):
        z, c, s, gs, o, K, L, starts = ctx.saved_tensors
        NH, D, W = ctx.dims
        o_c = torch.view_as_complex(o[..., :W].unflatten(-1, (NH, D, 2)))
        g = grad[..., None, :]  # (B, T, H, 1, D)
        # demodulation: d o = i G z; d A[t,t] = sum_{n,d} G Im K_n; d z (real pair) = -i G o
        d_o = o.new_empty(o.shape)
        d_oc = torch.view_as_complex(d_o[..., :W].unflatten(-1, (NH, D, 2)))
        torch.mul(z, g * 1j, out=d_oc)
        d_o[..., W] = (grad * K.imag.sum(1)).sum(-1)
        d_o[..., W + 1] = 0.0
        if len(ctx.spans) == 1:
            dq, dk, dv = (x.transpose(1, 2) for x in _attention_backward(ctx.states[0], d_o.transpose(1, 2)))
        else:
            dq, dk, dv = o.new_zeros(o.shape), o.new_zeros(o.shape), o.new_zeros(o.shape)
            for (a, b), state in zip(ctx.spans, ctx.states):
                grads = _attention_backward(state, d_o[:, a:b].transpose(1, 2))
                for dst, src in zip((dq, dk, dv), grads):
                    dst[:, a:b] = src.transpose(1, 2)
        if len(ctx.spans) > 1:  # the diagonal slots are constants (slot 0 is never read below)
            dk[:, starts] = 0.0
            dv[:, starts] = 0.0
        # values: slot j = K z_{j-1} + L z_j
        d_val = torch.view_as_complex(dv[:, 1:, :, :W].unflatten(-1, (NH, D, 2)))
        dz = -1j * g * o_c
        dz[:, :-1] += K.conj().expand_as(d_val) * d_val
        dz[:, 1:] += L.conj().expand_as(d_val) * d_val
        d_k = (z[:, :-1].conj() * d_val).sum((0, 1))
        d_l = (z[:, 1:].conj() * d_val).sum((0, 1))
        a_g = (o[..., W:W + 1] * grad).sum((0, 1))  # (H, D): d Im K_n of the diagonal term, every n
        d_k = d_k + 1j * a_g[:, None, :]
        # queries and keys: q = gs [cos, sin, 1], k slot j = [cos, sin] of token j - 1
        dq_c, dq_s = dq[..., :D], dq[..., D:2 * D]
        d_gate = (dq_c * c + dq_s * s + dq[..., W:W + 1]) * ctx.scale
        d_c = dq_c * gs
        d_s = dq_s * gs
        d_c[:, :-1] += dk[:, 1:, :, :D]
        d_s[:, :-1] += dk[:, 1:, :, D:2 * D]
        n = torch.arange(1, NH + 1, device=z.device, dtype=c.dtype)[:, None]
        d_theta = c * d_s - s * d_c + ((z.conj() * dz).imag * n).sum(-2)
        d_coupling = torch.stack([d_k, d_l], -1).permute(0, 2, 1, 3)  # (H, D, NH, 2)
        return d_theta, d_gate, d_coupling, None, None, None, None, None, None


def sdpa_frustrated_attention(theta: Tensor, gate: Tensor, coupling: Tensor, omega: Optional[Tensor], scale: float,
                              cu_seqlens: Optional[Tensor] = None, need_lse: bool = True):
    """The op by the folded composition (module docstring). Inputs are not validated (the
    public API does that).

    Args:
        theta, gate: (B, T, H, D) real; coupling complex (H, D, NH, 2); omega (H, D) or
            None; scale: float; cu_seqlens: int32 (S + 1,) packed sequences (B = 1) or None.
        need_lse: compute lse where the SDPA kernel does not return it for free.

    Returns:
        ``(dtheta, lse)``: dtheta (B, T, H, D) in theta's dtype; lse (B, H, T) natural log,
        float64 for float64 inputs and float32 otherwise (None where it is not free and
        not ``need_lse``).
    """
    B, T, H, D = theta.shape
    cdt = compute_dtype(theta.dtype, gate.dtype)
    if B * T == 0:
        return theta.new_zeros(theta.shape), theta.new_zeros((B, H, T), dtype=cdt)
    ccdt = torch.complex128 if cdt == torch.float64 else torch.complex64
    pos = positions(T, cu_seqlens, theta.device, cdt)
    starts = pos == 0
    bounds = None if cu_seqlens is None else cu_seqlens.tolist()
    om = None if omega is None else omega.to(cdt)
    out, lse = FoldedAttentionFunction.apply(theta.to(cdt), gate.to(cdt), coupling.to(ccdt), om, scale, pos, starts,
                                             bounds, need_lse)
    return out.to(theta.dtype), lse
