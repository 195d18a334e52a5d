"""One decode step from stock PyTorch over the phase cache (the ``"sdpa"`` decode
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

from typing import Optional

import torch
from torch import Tensor

from .sdpa import compute_dtype, harmonics


def decode_stock(theta_new: Tensor, gate_new: Tensor, coupling: Tensor, omega: Optional[Tensor], scale: float,
                 phase_cache: Tensor, cache_seqlens: Tensor) -> Tensor:
    """The step (module docstring); writes ``theta_new[b, 0]`` into ``phase_cache[b, t]``.

    Args:
        theta_new, gate_new: (B, 1, H, D); coupling complex (H, D, NH, 2); omega (H, D) or
            None; scale: float; phase_cache (B, T_max, H, D) contiguous; cache_seqlens (B,)
            int32 in ``[0, T_max - 1]`` (checked by the caller).

    Returns:
        dtheta (B, 1, H, D) in theta_new's dtype. Computed in float64 for float64 inputs,
        float32 otherwise.
    """
    B, _, H, D = theta_new.shape
    NH = coupling.shape[2]
    cdt = compute_dtype(theta_new.dtype, gate_new.dtype)
    rows = torch.arange(B, device=phase_cache.device)
    t = cache_seqlens.long()
    phase_cache[rows, t] = theta_new[:, 0]
    if B == 0:
        return torch.empty_like(theta_new)
    n_rows = int(t.max()) + 1  # the longest sequence, new token included
    th = phase_cache[:, :n_rows].to(cdt)  # (B, U, H, D), rows u <= t valid
    u = torch.arange(n_rows, device=th.device)
    valid = u[None, :] <= t[:, None]  # (B, U)
    th = th.masked_fill(~valid[:, :, None, None], 0.0)  # rows past t hold anything: keep them finite

    z_re, z_im = harmonics(th, NH)  # (B, U, H, NH, D)
    if omega is None:
        c, s = z_re[..., 0, :], z_im[..., 0, :]
    else:
        phi = th + omega.to(cdt) * u.to(cdt)[:, None, None]
        c, s = torch.cos(phi), torch.sin(phi)
    c_t, s_t = c[rows, t][:, None], s[rows, t][:, None]  # (B, 1, H, D)
    q = gate_new.to(cdt) * scale
    scores = (q * c_t * c + q * s_t * s).sum(-1)  # (B, U, H)
    scores[rows, t] = q[:, 0].sum(-1)  # the diagonal in closed form
    scores = scores.masked_fill(~valid[:, :, None], float("-inf"))
    p = torch.softmax(scores, dim=1)
    p_prev = torch.nn.functional.pad(p[:, :-1], (0, 0, 1, 0))  # p_{u-1}; row t + 1 is masked by valid below
    p_prev = p_prev.masked_fill(~valid[:, :, None], 0.0)
    s_re = torch.einsum("buh,buhnd->bhnd", p, z_re)
    s_im = torch.einsum("buh,buhnd->bhnd", p, z_im)
    d_re = torch.einsum("buh,buhnd->bhnd", p_prev, z_re)
    d_im = torch.einsum("buh,buhnd->bhnd", p_prev, z_im)
    cpl = coupling.to(torch.complex128 if cdt == torch.float64 else torch.complex64).permute(0, 2, 1, 3)
    K, L = cpl[..., 0], cpl[..., 1]  # (H, NH, D)
    o_re = K.real * s_re - K.imag * s_im + L.real * d_re - L.imag * d_im
    o_im = K.real * s_im + K.imag * s_re + L.real * d_im + L.imag * d_re
    zt_re, zt_im = z_re[rows, t], z_im[rows, t]  # (B, H, NH, D)
    dtheta = (zt_re * o_im - zt_im * o_re).sum(-2)  # (B, H, D)
    return dtheta[:, None].to(theta_new.dtype)
