"""Plain-PyTorch reference of the frustrated-synchronization attention op (README, "The math").

It materialises the (T, T) score matrix, works in any float dtype (float64 included;
bf16/fp16 inputs are computed in float32) and is differentiable by torch autograd.
It is the ground truth that every kernel test compares against.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .precision import compute_dtype as _compute_dtype


def naive_frustrated_attention(
    theta: torch.Tensor,
    gate: torch.Tensor,
    coupling: torch.Tensor,
    omega: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    compute_dtype: Optional[torch.dtype] = None,
):
    """Reference forward. Inputs are not validated (the public API does that).

    Args:
        theta: (B, T, H, D) real phases.
        gate: (B, T, H, D) real query gate.
        coupling: complex (H, D, NH, 2); ``[..., n-1, 0]`` is K_n, ``[..., n-1, 1]`` is L_n.
        omega: (H, D) real rotary drift per position, or None.
        scale: score scale, default ``D ** -0.5``.
        compute_dtype: dtype of every operation; default ``precision.compute_dtype`` of
            theta's and gate's (float64 if either is float64, else float32). bf16/fp16
            give the "plain PyTorch in low precision" yardstick
            of the GPU tolerance rule.

    Returns:
        ``(out, lse, order)``: out (B, T, H, D) in the compute dtype, lse (B, H, T)
        natural-log log-sum-exp of the scores, order R (B, T, H, NH, D), ``Re G``.
    """
    B, T, H, D = theta.shape
    NH = coupling.shape[2]
    cdt = compute_dtype or _compute_dtype(theta.dtype, gate.dtype)
    if scale is None:
        scale = D ** -0.5
    th = theta.to(cdt).permute(0, 2, 1, 3)  # (B, H, T, D)
    g = gate.to(cdt).permute(0, 2, 1, 3)
    pos = torch.arange(T, device=theta.device, dtype=cdt)
    phi = th if omega is None else th + omega.to(cdt)[None, :, None, :] * pos[None, None, :, None]

    cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
    scores = scale * (
        torch.einsum("bhtd,bhud->bhtu", g * cos_phi, cos_phi)
        + torch.einsum("bhtd,bhud->bhtu", g * sin_phi, sin_phi)
    )
    causal = torch.ones(T, T, dtype=torch.bool, device=theta.device).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, T)
    attn = torch.softmax(scores, dim=-1)
    attn_strict = attn.masked_fill(~causal.tril(-1), 0.0)[..., : max(T - 1, 0)]

    n = torch.arange(1, NH + 1, device=theta.device, dtype=cdt)
    angle = th[:, :, :, None, :] * n[:, None]  # (B, H, T, NH, D)
    z_re, z_im = torch.cos(angle), torch.sin(angle)
    cpl = torch.view_as_real(coupling.resolve_conj()).to(cdt).permute(0, 2, 1, 3, 4)  # (H, NH, D, 2, 2)
    k_re, k_im = cpl[None, :, None, :, :, 0, 0], cpl[None, :, None, :, :, 0, 1]  # (1, H, 1, NH, D)
    l_re, l_im = cpl[None, :, None, :, :, 1, 0], cpl[None, :, None, :, :, 1, 1]

    def mix(a, v):
        return torch.einsum("bhtu,bhund->bhtnd", a, v)

    s_re, s_im = mix(attn, z_re), mix(attn, z_im)
    d_re, d_im = mix(attn_strict, z_re[:, :, 1:]), mix(attn_strict, z_im[:, :, 1:])
    o_re = k_re * s_re - k_im * s_im + l_re * d_re - l_im * d_im  # O[t, n, d]
    o_im = k_re * s_im + k_im * s_re + l_re * d_im + l_im * d_re
    g_re = z_re * o_re + z_im * o_im  # G = exp(-i n theta_t) O
    g_im = z_re * o_im - z_im * o_re
    out = g_im.sum(dim=3).permute(0, 2, 1, 3)  # (B, T, H, D)
    order = g_re.permute(0, 2, 1, 3, 4)  # (B, T, H, NH, D)
    return out, lse, order


def kuramoto_closed_form(theta, gate, omega=None, scale=None, alpha=0.0):
    """``sum_u A[t,u] sin(theta_u - theta_t - alpha)`` with A the gated-cosine softmax.

    The closed form of the Kuramoto (alpha = 0) and Kuramoto-Sakaguchi special cases.
    Shapes as in :func:`naive_frustrated_attention`; returns (B, T, H, D).
    """
    attn = _attention_weights(theta, gate, omega, scale)
    th = theta.to(attn.dtype).permute(0, 2, 1, 3)
    diff = th[:, :, None, :, :] - th[:, :, :, None, :] - alpha  # [b,h,t,u,d] = th_u - th_t
    return torch.einsum("bhtu,bhtud->bhtd", attn, torch.sin(diff)).permute(0, 2, 1, 3)


def _attention_weights(theta, gate, omega=None, scale=None):
    B, T, H, D = theta.shape
    cdt = _compute_dtype(theta.dtype, gate.dtype)
    scale = D ** -0.5 if scale is None else scale
    th = theta.to(cdt).permute(0, 2, 1, 3)
    pos = torch.arange(T, device=theta.device, dtype=cdt)
    phi = th if omega is None else th + omega.to(cdt)[None, :, None, :] * pos[None, None, :, None]
    diff = phi[:, :, :, None, :] - phi[:, :, None, :, :]  # [t, u] = phi_t - phi_u
    g = gate.to(cdt).permute(0, 2, 1, 3)[:, :, :, None, :]
    scores = scale * (g * torch.cos(diff)).sum(-1)
    causal = torch.ones(T, T, dtype=torch.bool, device=theta.device).tril()
    return torch.softmax(scores.masked_fill(~causal, -math.inf), dim=-1)


def decode_reference(theta_new, gate_new, coupling, omega, scale, phase_cache, cache_seqlens):
    """Reference decode step: per sequence, the LAST row of
    :func:`naive_frustrated_attention` over ``cache[b, :t]`` plus the new token (earlier
    rows' gates do not enter the last row); then ``cache[b, t] = theta_new[b, 0]``.
    Shapes as in :func:`frustrated_attention_decode`; returns out (B, 1, H, D) in
    theta_new's dtype. Reads cache_seqlens on the host."""
    B = theta_new.shape[0]
    out = torch.empty_like(theta_new)
    for b, t in enumerate(cache_seqlens.tolist()):
        th = torch.cat([phase_cache[b:b + 1, :t], theta_new[b:b + 1]], 1)
        g = torch.cat([torch.ones_like(phase_cache[b:b + 1, :t], dtype=gate_new.dtype), gate_new[b:b + 1]], 1)
        out[b:b + 1] = naive_frustrated_attention(th, g, coupling, omega, scale)[0][:, -1:].to(out.dtype)
    phase_cache[torch.arange(B, device=phase_cache.device), cache_seqlens.long()] = theta_new[:, 0]
    return out
