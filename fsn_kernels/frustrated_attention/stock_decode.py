"""One decode step from stock PyTorch over the phase cache (the ``"stock"`` decode
backend): O(cache length) work and memory per new token.

For sequence ``b`` with ``t = cache_seqlens[b]`` cached tokens the new token sits at
position ``t``. With ``p_u`` the softmax over ``u <= t`` of the scores
``s_u = scale sum_d gate_t cos(phi_t - phi_u)`` (``s_t = scale sum_d gate_t`` in closed
form) and ``z_u = exp(i n theta_u)``, row ``t`` of the op is

    O = K sum_{u <= t} p_u z_u + L sum_{1 <= u <= t} p_{u-1} z_u,
    dtheta = sum_n Im(exp(-i n theta_t) O_n):

each cached token enters once, through its ``z_u`` and its rotary ``cos / sin phi_u``,
computed on the fly from the cached phases. Ragged batches are padded to the longest
sequence and masked.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .precision import compute_dtype

_ROTARY: Dict[Tuple, Tensor] = {}  # exp(i omega u) tables, keyed by omega's values
_ROTARY_KEEP = 8


def rotary_table(omega: Tensor, n: int) -> Tensor:
    """``exp(i omega u)`` for ``u < n``: (n, H, D) complex, each entry computed directly
    (no error accumulates along u). Kept per omega value (at most a few tables), grown by
    doubling, so a decode step computes no rotary trigonometry."""
    key = (omega.device, omega.dtype, tuple(omega.shape), omega.detach().cpu().numpy().tobytes())
    table = _ROTARY.get(key)
    if table is None or table.shape[0] < n:
        cap = max(n, 2 * table.shape[0] if table is not None else 256)
        u = torch.arange(cap, device=omega.device, dtype=omega.dtype)
        angle = omega.detach() * u[:, None, None]
        table = torch.complex(torch.cos(angle), torch.sin(angle))
        if len(_ROTARY) >= _ROTARY_KEEP:
            _ROTARY.pop(next(iter(_ROTARY)))
        _ROTARY[key] = table
    return table[:n]


def decode_stock(theta_new: Tensor, gate_new: Tensor, coupling: Tensor, omega: Optional[Tensor], scale: float,
                 phase_cache: Tensor, cache_seqlens: Tensor) -> Tensor:
    """The step (module docstring); writes ``theta_new[b, 0]`` into ``phase_cache[b, t]``.

    Per cached token one ``exp(i theta_u)`` (one cos and one sin per oscillator); the
    rotary phase by a product with :func:`rotary_table`, the harmonics by complex
    products, the score and the value sums as contractions.

    Args:
        theta_new, gate_new: (B, 1, H, D); coupling complex (H, D, NH, 2); omega (H, D) or
            None; scale: float; phase_cache (B, T_max, H, D) contiguous; cache_seqlens (B,)
            int32 in ``[0, T_max - 1]`` (checked by the caller).

    Returns:
        dtheta (B, 1, H, D) in theta_new's dtype. Computed in float64 for float64 inputs,
        float32 otherwise, autocast or not (autocast is off inside).
    """
    with torch.autocast(phase_cache.device.type, enabled=False):
        return _decode_stock(theta_new, gate_new, coupling, omega, scale, phase_cache, cache_seqlens)


def _decode_stock(theta_new: Tensor, gate_new: Tensor, coupling: Tensor, omega: Optional[Tensor], scale: float,
                  phase_cache: Tensor, cache_seqlens: Tensor) -> Tensor:
    B, _, H, D = theta_new.shape
    NH = coupling.shape[2]
    cdt = compute_dtype(theta_new.dtype, gate_new.dtype)
    rows = torch.arange(B, device=phase_cache.device)
    t = cache_seqlens.long()
    phase_cache[rows, t] = theta_new[:, 0]
    if B == 0:
        return torch.empty_like(theta_new)
    lo, hi = int(t.min()), int(t.max())
    n_rows = hi + 1  # the longest sequence, new token included
    th = phase_cache[:, :n_rows].to(cdt).transpose(1, 2).contiguous()  # (B, H, U, D), rows u <= t valid
    valid = None
    if lo != hi:  # ragged: rows past a sequence's t hold anything; keep them finite and weightless
        valid = torch.arange(n_rows, device=th.device)[None, :] <= t[:, None]  # (B, U)
        th = th.masked_fill(~valid[:, None, :, None], 0.0)
    z1 = torch.complex(torch.cos(th), torch.sin(th))  # exp(i theta_u), (B, H, U, D)
    w = z1 if omega is None else z1 * rotary_table(omega.to(cdt), n_rows).transpose(0, 1)  # exp(i phi_u)
    q = gate_new[:, 0].to(cdt) * scale  # (B, H, D)
    qa = q * w[rows, :, t]  # q exp(i phi_t), (B, H, D)
    # s_u = sum_d q_d cos(phi_t - phi_u) = sum_d Re(q exp(i phi_t) conj(exp(i phi_u))): one matmul
    scores = (torch.view_as_real(w).flatten(-2) @ torch.view_as_real(qa).flatten(-2)[..., None])[..., 0]  # (B, H, U)
    scores[rows, :, t] = q.sum(-1)  # the diagonal in closed form
    if valid is not None:
        scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    p_prev = torch.nn.functional.pad(p[..., :-1], (1, 0))  # p_{u-1} weighs z_u, 1 <= u <= t
    if valid is not None:
        p_prev = p_prev.masked_fill(~valid[:, None, :], 0.0)
    weights = torch.stack([p, p_prev], -2)  # (B, H, 2, U)
    cpl = coupling.to(z1.dtype).permute(0, 2, 1, 3)  # (H, NH, D, 2)
    zt = z1[rows, :, t]  # (B, H, D)
    zn, ztn = z1, zt
    dtheta = torch.zeros_like(q)
    for n in range(NH):
        if n:
            zn, ztn = zn * z1, ztn * zt
        sums = torch.view_as_complex((weights @ torch.view_as_real(zn).flatten(-2)).unflatten(-1, (-1, 2)))
        o = cpl[:, n, :, 0] * sums[:, :, 0] + cpl[:, n, :, 1] * sums[:, :, 1]  # (B, H, D)
        dtheta += (torch.conj_physical(ztn) * o).imag
    return dtheta[:, None].to(theta_new.dtype)
