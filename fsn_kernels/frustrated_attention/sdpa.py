"""The op from stock PyTorch: per-token features and ONE causal scaled-dot-product
attention call per sequence (the ``"sdpa"`` backend; README beside this file, "How it runs").

Memory is linear in T where PyTorch's SDPA kernel is (the CPU flash kernel saves only
its inputs, output and log-sum-exp for the backward), and it is differentiable by torch
autograd. Any float dtype: float64 inputs are computed in float64, every other dtype in
float32.

**The folded composition.** For row ``t`` the pair ``u = t`` is special (the delay must not
pair ``t`` with ``t + 1``) but its score is known in closed form, ``s_tt = scale sum_d
gate_t`` (``cos 0 = 1``). Keys are shifted one slot right and slot 0 holds a "diagonal"
key whose score for query ``t`` is ``s_tt`` (an extra query channel ``scale sum_d gate_t``
meets a key channel 1). Under a plain causal mask query ``t`` then sees the diagonal key
and keys ``u = j - 1 < t``, with exactly the op's softmax normaliser, so SDPA's
log-sum-exp is the op's. Slot ``j`` carries the folded value ``K z_u + L z_{u+1}``
(``u = j - 1``; the successor ``z_{u+1}`` is at most token ``t``: causal) as ``2 NH D``
real channels and a last channel 0; the diagonal key carries ``[0, ..., 0, 1]``, so the
last output channel is ``A[t,t]`` and the static diagonal term ``A[t,t] K z_t`` is added
after the call. Then demodulation, ``dtheta = sum_n Im(exp(-i n theta_t) O_n)``.

Widths: queries and keys ``2 D + 1`` used channels, values ``2 NH D + 1``; the flash
kernels want one head width, so queries and keys are zero-padded to the value width.

Packed sequences (``cu_seqlens``): the features are computed once for all tokens (rotary
positions restart at each sequence); the attention runs per sequence, sequences of equal
length batched into one call. The last token of a sequence has no key slot (its folded
value would hold the next sequence's first token), so nothing crosses a boundary.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

LSE_CHUNK = 256  # query rows per chunk of the log-sum-exp recomputation (non-CPU devices)


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


def features(theta, gate, coupling, omega, scale, pos):
    """Per-token queries, keys and folded values, in (B, H, T, width) layout.

    Args:
        theta, gate: (B, T, H, D) in the compute dtype.
        coupling: complex (H, D, NH, 2) of the compute dtype's complex type.
        omega: (H, D) or None. scale: float. pos: (T,) positions in the compute dtype.

    Returns:
        ``(q, k, v, z_re, z_im, K)``: q and k (B, H, T, W + 1) with ``W = 2 NH D``
        (channels ``[cos, sin, diag, 0...]``; k's diag channel is 0: only the shifted-in
        diagonal key has it), v (B, H, T, W + 1) the folded value ``K z_u + L z_{u+1}`` of
        token u as ``[re, im, 0]`` (the last token's successor is taken as 0), the
        harmonics ``z`` (B, H, T, NH, D) and ``K`` (H, 1, NH, D) complex.
    """
    B, T, H, D = theta.shape
    NH = coupling.shape[2]
    th = theta.transpose(1, 2)  # (B, H, T, D)
    gs = gate.transpose(1, 2) * scale
    z_re, z_im = harmonics(th, NH)  # (B, H, T, NH, D)
    if omega is None:
        c, s = z_re[..., 0, :], z_im[..., 0, :]
    else:
        phi = th + omega[None, :, None, :] * pos[:, None]
        c, s = torch.cos(phi), torch.sin(phi)
    width = 2 * NH * D + 1
    q = torch.cat([gs * c, gs * s, gs.sum(-1, keepdim=True)], -1)
    k = torch.cat([c, s], -1)
    q, k = F.pad(q, (0, width - q.shape[-1])), F.pad(k, (0, width - k.shape[-1]))

    cpl = coupling.permute(0, 2, 1, 3)  # (H, NH, D, 2)
    K, L = cpl[:, None, ..., 0], cpl[:, None, ..., 1]  # (H, 1, NH, D): broadcast over tokens
    k_re, k_im, l_re, l_im = K.real, K.imag, L.real, L.imag
    nz_re, nz_im = F.pad(z_re[:, :, 1:], (0, 0, 0, 0, 0, 1)), F.pad(z_im[:, :, 1:], (0, 0, 0, 0, 0, 1))
    v_re = k_re * z_re - k_im * z_im + l_re * nz_re - l_im * nz_im
    v_im = k_re * z_im + k_im * z_re + l_re * nz_im + l_im * nz_re
    v = torch.cat([v_re.flatten(-2), v_im.flatten(-2), v_re.new_zeros(B, H, T, 1)], -1)
    return q, k, v, z_re, z_im, K


def attend(q: Tensor, k: Tensor, v: Tensor, diag_channel: int) -> Tuple[Tensor, Optional[Tensor]]:
    """Causal attention of queries (N, H, T, W) over the diagonal key and the shifted
    token keys: ``(o, lse)``, o (N, H, T, W), lse (N, H, T) natural log (None where the
    SDPA kernel does not return it)."""
    N, H, T, W = q.shape
    one_k = q.new_zeros(N, H, 1, W)
    one_k[..., diag_channel] = 1.0
    one_v = q.new_zeros(N, H, 1, W)
    one_v[..., -1] = 1.0
    k = torch.cat([one_k, k[:, :, : T - 1]], 2)
    v = torch.cat([one_v, v[:, :, : T - 1]], 2)
    if q.device.type == "cpu":
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=1.0)
        return o, lse
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0), None


@torch.no_grad()
def causal_lse(q: Tensor, k: Tensor, diag_channel: int) -> Tensor:
    """The log-sum-exp of :func:`attend`'s scores, ``LSE_CHUNK`` query rows at a time
    (memory ``LSE_CHUNK x T``): for devices whose SDPA does not return it."""
    N, H, T, W = q.shape
    one_k = q.new_zeros(N, H, 1, W)
    one_k[..., diag_channel] = 1.0
    k = torch.cat([one_k, k[:, :, : T - 1]], 2)
    out = []
    for a in range(0, T, LSE_CHUNK):
        b = min(a + LSE_CHUNK, T)
        s = q[:, :, a:b] @ k[:, :, :b].transpose(-1, -2)
        later = torch.arange(b, device=q.device)[None, :] > torch.arange(a, b, device=q.device)[:, None]
        out.append(torch.logsumexp(s.masked_fill(later, float("-inf")), -1))
    return torch.cat(out, -1)


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
        float64 for float64 inputs and float32 otherwise (None if not ``need_lse`` and not
        free).
    """
    B, T, H, D = theta.shape
    cdt = compute_dtype(theta.dtype, gate.dtype)
    if B * T == 0:
        return theta.new_zeros(theta.shape), theta.new_zeros((B, H, T), dtype=cdt)
    NH = coupling.shape[2]
    ccdt = torch.complex128 if cdt == torch.float64 else torch.complex64
    th, g = theta.to(cdt), gate.to(cdt)
    om = None if omega is None else omega.to(cdt)
    pos = positions(T, cu_seqlens, theta.device, cdt)
    q, k, v, z_re, z_im, K = features(th, g, coupling.to(ccdt), om, scale, pos)
    diag = 2 * D
    if cu_seqlens is None:
        o, lse = attend(q, k, v, diag)
        if lse is None and need_lse:
            lse = causal_lse(q, k, diag)
    else:
        o, lse = _attend_packed(q, k, v, diag, cu_seqlens, need_lse)
    W = 2 * NH * D
    a = o[..., W:W + 1].unsqueeze(-1)  # A[t, t], (B, H, T, 1, 1)
    o_re = o[..., : NH * D].unflatten(-1, (NH, D)) + a * (K.real * z_re - K.imag * z_im)
    o_im = o[..., NH * D: W].unflatten(-1, (NH, D)) + a * (K.real * z_im + K.imag * z_re)
    dtheta = (z_re * o_im - z_im * o_re).sum(-2)  # Im(exp(-i n theta) O), summed over n
    return dtheta.transpose(1, 2).to(theta.dtype), lse


def _attend_packed(q, k, v, diag, cu_seqlens, need_lse):
    """:func:`attend` per packed sequence (B = 1), equal lengths batched: (o, lse)."""
    bounds = cu_seqlens.tolist()
    spans = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    by_len = {}
    for a, b in spans:
        by_len.setdefault(b - a, []).append(a)
    o = q.new_zeros(q.shape)
    lse = q.new_zeros(q.shape[:3])
    got_lse = True
    for n, starts in by_len.items():
        idx = (torch.tensor(starts, device=q.device)[:, None] + torch.arange(n, device=q.device)).flatten()

        def gather(x):  # (1, H, N, W) -> (S_n, H, n, W)
            return x[0, :, idx].unflatten(1, (len(starts), n)).transpose(0, 1)

        qs, ks, vs = gather(q), gather(k), gather(v)
        o_s, lse_s = attend(qs, ks, vs, diag)
        if lse_s is None and need_lse:
            lse_s = causal_lse(qs, ks, diag)
        o = o.index_copy(2, idx, o_s.transpose(0, 1).flatten(1, 2)[None])
        if lse_s is None:
            got_lse = False
        else:
            lse = lse.index_copy(2, idx, lse_s.transpose(0, 1).flatten(1, 2)[None].to(lse.dtype))
    return o, (lse if got_lse else None)
