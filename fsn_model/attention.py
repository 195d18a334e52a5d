"""FrustratedAttention: the FSN attention layer on phases (fsn_model/README.md, "The model"), plus its decode step.

A layer maps phases ``theta`` (B, T, dim) to phase increments (B, T, dim), dim = H * D.
Any real tensor is a valid phase, so the layer drops into an existing residual stream.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsn_kernels import frustrated_attention, frustrated_attention_decode
from fsn_kernels.frustrated_attention.validation import check_backend

from .checks import check_number
from .config import check_attention_options

GATE_BIAS_INIT = math.log(math.e - 1.0)  # softplus(GATE_BIAS_INIT) == 1


def rope_frequencies(n_heads: int, head_dim: int, base: float = 10000.0) -> Tensor:
    """RoPE frequencies ``base ** (-d / D)`` for each oscillator d, shared by all heads.

    Returns:
        omega (n_heads, head_dim) float32.

    Raises:
        ValueError: ``base`` not a finite number > 0.
    """
    check_number("rope_base", base, low=0.0, low_ok=False)
    freqs = base ** (-torch.arange(head_dim, dtype=torch.float32) / head_dim)
    return freqs.expand(n_heads, head_dim).contiguous()


def phase_features(theta: Tensor) -> Tensor:
    """``[cos theta, sin theta]`` along the last dim: (..., C) -> (..., 2C)."""
    return torch.cat([torch.cos(theta), torch.sin(theta)], dim=-1)


def init_coupling(param: Tensor, k1: float, std: float) -> None:
    """Kuramoto-like init of a real coupling view (H, D, NH, S, 2 = re/im): small noise
    everywhere, and K_1 = k1 (a positive real) on top."""
    with torch.no_grad():
        param.normal_(0.0, std)
        param[:, :, 0, 0, 0] += k1


class PhaseProjection(nn.Module):
    """Learned phases from phases, the attention's input projection:
    ``theta_p = atan2(W_s f + b_s, W_c f + b_c)`` with ``f = [cos theta, sin theta]``.

    Each output phase is the angle of a learned 2D vector read from every oscillator's
    features, so the phases the attention matches and moves need not be the residual
    stream's own. ``n_out`` (default ``dim``) phases come out, one for each of the first
    ``n_out`` oscillators. Init ``W_c = [I, 0]``, ``W_s = [0, I]`` on those oscillators,
    biases 0: ``theta_p = theta[..., :n_out]`` (mod 2 pi), so a fresh layer computes what the
    layer without projections does.

    Shapes: (..., dim) -> (..., n_out), theta's dtype; 4 dim n_out + 2 n_out parameters.
    """

    def __init__(self, dim: int, n_out: Optional[int] = None):
        super().__init__()
        self.dim, self.n_out = dim, dim if n_out is None else n_out
        self.proj = nn.Linear(2 * dim, 2 * self.n_out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            eye = torch.eye(self.n_out, self.dim)
            self.proj.weight.zero_()
            self.proj.weight[: self.n_out, : self.dim].copy_(eye)  # cos part reads cos theta
            self.proj.weight[self.n_out:, self.dim:].copy_(eye)  # sin part reads sin theta
            self.proj.bias.zero_()

    def forward(self, theta: Tensor) -> Tensor:
        v = self.proj(phase_features(theta))
        cos_part, sin_part = v.to(torch.promote_types(v.dtype, torch.float32)).chunk(2, dim=-1)
        return torch.atan2(sin_part, cos_part).to(theta.dtype)  # the angle in >= fp32 (under autocast too)


class FrustratedAttention(nn.Module):
    """Frustrated-synchronization attention layer (the op: fsn_kernels/frustrated_attention/README.md).

    gate = softplus(W_g [cos theta, sin theta] + b), one gate per head and oscillator;
    learned complex coupling over NH harmonics and a one-step delay, stored as a REAL
    parameter (H, D, NH, 2, 2) (last dim re/im; viewed as complex at use); fixed RoPE
    drift omega (H, D) as a non-persistent buffer.

    Init: K_1 = ``k1_init`` (positive real), everything else N(0, ``coupling_std``), gate
    weights N(0, ``gate_std``) with bias softplus^-1(1): a fresh layer is close to Kuramoto
    attention ``k1 * sum_u A sin(theta_u - theta_t)`` with unit gates.

    Args:
        dim: channels C = n_heads * head_dim (an int >= 1).
        n_heads: H (an int >= 1 dividing dim).
        n_harmonics: NH (1..8, what the op takes).
        rope_base: base of the RoPE frequencies (a finite number > 0).
        backend: passed to :func:`fsn_kernels.frustrated_attention` ("auto": the Triton
            kernels on CUDA, the stock-PyTorch "stock" path elsewhere; "triton", "stock",
            "reference"), checked here.
        delay: (a bool) False removes the one-step delay term (the ablation): L_n is zeroed at
            init and masked out at use, so it takes no gradient and stays 0.
        projections: learned projections around the op (default off): the op runs on
            ``theta_p = in_proj(theta)`` (:class:`PhaseProjection`) and its increments pass
            through ``out_proj`` (dim x dim, no bias); both start as the identity, so a
            fresh layer equals the layer without them. The gate still reads theta, and a
            phase cache then holds theta_p instead of theta (same size).
        projected_heads: with projections, how many heads (the first ones) run on projected
            phases; the others run on theta itself, as without projections. None: all; 0:
            none (no ``in_proj``, only ``out_proj``).
        project_output: with projections, the output map ``out_proj`` (default True); False:
            the increments go straight to the oscillators they were computed for, as without
            projections.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_harmonics: int = 2,
        *,
        rope_base: float = 10000.0,
        k1_init: float = 0.5,
        coupling_std: float = 0.02,
        gate_std: float = 0.02,
        backend: str = "auto",
        delay: bool = True,
        projections: bool = False,
        projected_heads: Optional[int] = None,
        project_output: bool = True,
    ):
        super().__init__()
        check_attention_options(dim, n_heads, n_harmonics, k1_init=k1_init, coupling_std=coupling_std,
                                gate_std=gate_std, delay=delay, projections=projections,
                                projected_heads=projected_heads, project_output=project_output, rope_base=rope_base)
        backend = check_backend(backend)  # the current name ("sdpa" warns once, here)
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.n_harmonics, self.backend, self.delay = n_harmonics, backend, delay
        self.projections = projections
        self.projected_heads = (n_heads if projected_heads is None else projected_heads) if projections else 0
        self.in_proj = PhaseProjection(dim, self.projected_heads * self.head_dim) if self.projected_heads else None
        self.out_proj = nn.Linear(dim, dim, bias=False) if projections and project_output else None
        self.scale = self.head_dim ** -0.5
        self.gate_proj = nn.Linear(2 * dim, dim)
        self.coupling_real = nn.Parameter(torch.empty(n_heads, self.head_dim, n_harmonics, 2, 2))
        self.register_buffer("omega", rope_frequencies(n_heads, self.head_dim, rope_base), persistent=False)
        self._k1, self._cstd, self._gstd = k1_init, coupling_std, gate_std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.gate_proj.weight, 0.0, self._gstd)
        nn.init.constant_(self.gate_proj.bias, GATE_BIAS_INIT)
        init_coupling(self.coupling_real, self._k1, self._cstd)
        if self.in_proj is not None:
            self.in_proj.reset_parameters()
        if self.out_proj is not None:
            with torch.no_grad():
                self.out_proj.weight.copy_(torch.eye(self.dim))
        if not self.delay:
            with torch.no_grad():
                self.coupling_real[..., 1, :].zero_()

    @property
    def coupling(self) -> Tensor:
        """Complex coupling (H, D, NH, 2): ``[..., n-1, 0]`` = K_n, ``[..., n-1, 1]`` = L_n."""
        real = self.coupling_real.float()
        if not self.delay:
            real = torch.stack([real[..., 0, :], torch.zeros_like(real[..., 1, :])], dim=-2)
        return torch.view_as_complex(real)

    def gate(self, theta: Tensor) -> Tensor:
        """(B, T, dim) phases -> (B, T, H, D) positive gates."""
        g = F.softplus(self.gate_proj(phase_features(theta)))
        return g.view(*theta.shape[:-1], self.n_heads, self.head_dim)

    def cached_phases(self, theta: Tensor) -> Tensor:
        """The phases the op reads, which a phase cache holds: theta, or ``in_proj(theta)``
        with projections (on the first ``projected_heads`` heads; the others keep theta).
        (B, T, dim) -> (B, T, dim), theta's dtype."""
        if self.in_proj is None:
            return theta
        projected, kept = self.in_proj(theta), self.in_proj.n_out
        return projected if kept == self.dim else torch.cat([projected, theta[..., kept:]], dim=-1)

    def _output(self, out: Tensor) -> Tensor:
        if self.out_proj is None:
            return out
        return self.out_proj(out).to(out.dtype)  # out's dtype under autocast too

    def forward(self, theta: Tensor, cu_seqlens: Optional[Tensor] = None,
                phases: Optional[Tensor] = None) -> Tensor:
        """(B, T, dim) phases -> (B, T, dim) increments dtheta, in theta's dtype.

        ``cu_seqlens`` (int32 (S + 1,), with B = 1): packed sequences that attend only
        within themselves (see ``fsn_kernels.frustrated_attention``). ``phases``: the
        already computed ``cached_phases(theta)`` (a prefill caches them; they are not
        recomputed)."""
        B, T, _ = theta.shape
        th = (self.cached_phases(theta) if phases is None else phases).reshape(B, T, self.n_heads, self.head_dim)
        gate = self.gate(theta).to(theta.dtype)
        if T == 0:  # the op's empty output has no graph; an empty result that keeps one (zero gradients)
            return self._output((th * gate * self.coupling_real.sum().to(theta.dtype)).reshape(B, 0, self.dim))
        out = frustrated_attention(th, gate, self.coupling, self.omega, self.scale, cu_seqlens=cu_seqlens,
                                   backend=self.backend)
        return self._output(out.reshape(B, T, self.dim))

    def decode(self, theta_new: Tensor, phase_cache: Tensor, cache_seqlens: Tensor,
               check_seqlens: bool = True) -> Tensor:
        """One incremental step over a preallocated phase cache: equal to the last row of
        :meth:`forward` over the ``t = cache_seqlens[b]`` cached tokens followed by
        ``theta_new[b]``; writes ``cached_phases(theta_new)`` into ``phase_cache[:, t]`` in
        place (no copy of the cache). cache_seqlens is not advanced. Not differentiable.

        Args:
            theta_new: (B, 1, dim) phases of the new token.
            phase_cache: (B, T_max, dim) contiguous, theta_new's dtype: this layer's
                :meth:`cached_phases` of earlier tokens in rows ``< cache_seqlens[b]``.
            cache_seqlens: (B,) int32, tokens cached per sequence (ragged allowed).
            check_seqlens: check ``0 <= cache_seqlens < T_max`` (one device sync).

        Returns:
            dtheta (B, 1, dim) in theta_new's dtype.
        """
        B, _, C = phase_cache.shape
        gate_t = self.gate(theta_new).to(theta_new.dtype)  # (B, 1, H, D)
        th = self.cached_phases(theta_new).reshape(B, 1, self.n_heads, self.head_dim)
        cache = phase_cache.view(B, phase_cache.shape[1], self.n_heads, self.head_dim)
        out = frustrated_attention_decode(th, gate_t, self.coupling, self.omega, self.scale, phase_cache=cache,
                                          cache_seqlens=cache_seqlens, backend=self.backend,
                                          check_seqlens=check_seqlens)
        return self._output(out.reshape(B, 1, self.dim))
