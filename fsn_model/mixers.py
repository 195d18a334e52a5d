"""Phase mixers, the second half of an FSN block: (B, T, dim) phases -> (B, T, dim)
increments, acting on each token independently, or (``shift=True``) on each token and the
one before it (:func:`shift_mix`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import GATE_BIAS_INIT, init_coupling, phase_features


def shift_weights(n_features: int) -> nn.Parameter:
    """Per-feature weights ``mu`` of :func:`shift_mix`, initialised as a ramp from 1 (this
    token only) down to 0 (the previous token only) across the ``n_features`` features."""
    return nn.Parameter(torch.linspace(1.0, 0.0, n_features))


def shift_mix(features: Tensor, prev_features: Optional[Tensor], mu: Tensor) -> Tensor:
    """Token shift: ``mu * features + (1 - mu) * prev_features`` (all (..., F); ``mu`` (F,)).
    ``prev_features`` are the previous token's features, zero for a sequence's first token.
    Raises ValueError when they are missing or of another shape."""
    if prev_features is None or prev_features.shape != features.shape:
        got = None if prev_features is None else tuple(prev_features.shape)
        raise ValueError(f"prev_features: a token-shift mixer needs the previous token's features of shape "
                         f"{tuple(features.shape)}, got {got}")
    return prev_features + mu * (features - prev_features)


def swiglu(x: Tensor, w13: nn.Linear, w2: nn.Linear, shift_a: Optional[Tensor] = None,
           shift_b: Optional[Tensor] = None, prev: Optional[Tensor] = None) -> Tensor:
    """``W_2 (silu(W_1 x) * W_3 x)`` with ``W_1; W_3`` stacked in ``w13``; with the token-shift
    weights ``shift_a``, ``shift_b``, W_1 and W_3 read their own :func:`shift_mix` of ``x``
    and ``prev`` (the previous token's input, same shape as ``x``). The SwiGLU of FSN's
    :class:`PhaseSwiGLU` and of the baseline transformer."""
    if shift_a is None:
        a, b = w13(x).chunk(2, dim=-1)
    else:
        w1, w3 = w13.weight.chunk(2, dim=0)
        a = F.linear(shift_mix(x, prev, shift_a), w1)
        b = F.linear(shift_mix(x, prev, shift_b), w3)
    return w2(F.silu(a) * b)


class PhaseSwiGLU(nn.Module):
    """SwiGLU on the features ``[cos theta, sin theta]``: W_2 (silu(W_1 f) * W_3 f).

    With ``shift``, W_1 and W_3 each read their own :func:`shift_mix` of this token's
    features and the previous token's (``prev_features``), so ``silu(a) * b`` can pair the
    two tokens (4 * dim more parameters).

    Args:
        dim: phase channels C (input features 2C, output C increments).
        hidden: SwiGLU hidden width. The output projection is initialised small
            (std ``out_std``) so a fresh block is close to its attention alone.
        shift: token shift (above).
    """

    def __init__(self, dim: int, hidden: int, out_std: float = 0.02, shift: bool = False):
        super().__init__()
        self.w13 = nn.Linear(2 * dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.out_std = out_std
        nn.init.normal_(self.w2.weight, 0.0, out_std)
        self.shift_a = shift_weights(2 * dim) if shift else None
        self.shift_b = shift_weights(2 * dim) if shift else None

    def reset_parameters(self) -> None:
        """The init of ``__init__`` again, in place (W_1, W_3: nn.Linear's; W_2 small; shift ramps)."""
        self.w13.reset_parameters()
        with torch.no_grad():
            self.w2.weight.normal_(0.0, self.out_std)
            for mu in (self.shift_a, self.shift_b):
                if mu is not None:
                    mu.copy_(torch.linspace(1.0, 0.0, mu.numel()))

    def forward(self, theta: Tensor, prev_features: Optional[Tensor] = None) -> Tensor:
        """(B, T, dim) -> (B, T, dim); ``prev_features`` (B, T, 2 dim): the previous token's
        features, required with ``shift`` and ignored without it."""
        return swiglu(phase_features(theta), self.w13, self.w2, self.shift_a, self.shift_b, prev_features)


class MeanFieldCoupling(nn.Module):
    """MLP-free mixer: each token couples to M learned collective modes psi[h, m, d].

    Same gated-cosine softmax and harmonic kernel as the attention (README "The model"), but the
    "keys/values" are the modes, not tokens: no causal mask (modes are not in time), no
    rotary drift, no delay. Per head h, token t:

        s[t, m]   = scale * sum_d g[t, d] cos(theta[t, d] - psi[m, d]);  A = softmax_m(s)
        dtheta[t, d] = Im sum_n exp(-i n theta[t, d]) K_n[d] sum_m A[t, m] exp(i n psi[m, d])

    Args:
        dim: C = n_heads * head_dim.
        n_heads: H.
        n_modes: M collective modes per head.
        n_harmonics: NH. Coupling stored real (H, D, NH, 2) = re/im of K_n; K_1 = ``k1_init``.
        shift: the gate reads a :func:`shift_mix` of this token's features and the previous
            token's (2 * dim more parameters).
    """

    def __init__(self, dim: int, n_heads: int, n_modes: int, n_harmonics: int = 2, *,
                 k1_init: float = 0.5, coupling_std: float = 0.02, gate_std: float = 0.02,
                 shift: bool = False):
        super().__init__()
        self.n_heads, self.head_dim, self.n_modes = n_heads, dim // n_heads, n_modes
        self.scale = self.head_dim ** -0.5
        self.gate_proj = nn.Linear(2 * dim, dim)
        self.psi = nn.Parameter(torch.empty(n_heads, n_modes, self.head_dim))
        self.coupling_real = nn.Parameter(torch.empty(n_heads, self.head_dim, n_harmonics, 2))
        self._k1, self._cstd, self._gstd = k1_init, coupling_std, gate_std
        self.reset_parameters()
        self.shift_g = shift_weights(2 * dim) if shift else None

    def reset_parameters(self) -> None:
        """The init (class docstring), in place: gate N(0, gate_std) with bias softplus^-1(1),
        modes uniform on [-pi, pi), K_1 = k1_init plus N(0, coupling_std) noise, shift ramp."""
        with torch.no_grad():
            self.gate_proj.weight.normal_(0.0, self._gstd)
            self.gate_proj.bias.fill_(GATE_BIAS_INIT)
            self.psi.uniform_(-torch.pi, torch.pi)
        init_coupling(self.coupling_real[:, :, :, None], self._k1, self._cstd)
        if getattr(self, "shift_g", None) is not None:
            with torch.no_grad():
                self.shift_g.copy_(torch.linspace(1.0, 0.0, self.shift_g.numel()))

    def forward(self, theta: Tensor, prev_features: Optional[Tensor] = None) -> Tensor:
        """(B, T, dim) -> (B, T, dim), computed in float32; ``prev_features`` (B, T, 2 dim):
        the previous token's features, required with ``shift`` and ignored without it."""
        B, T, C = theta.shape
        H, D = self.n_heads, self.head_dim
        f = phase_features(theta)
        if self.shift_g is not None:
            f = shift_mix(f, prev_features, self.shift_g)
        g = F.softplus(self.gate_proj(f)).float().view(B, T, H, D)
        th = theta.float().view(B, T, H, D)
        psi = self.psi.float()
        scores = self.scale * (torch.einsum("bthd,hmd->bthm", g * torch.cos(th), torch.cos(psi))
                               + torch.einsum("bthd,hmd->bthm", g * torch.sin(th), torch.sin(psi)))
        attn = torch.softmax(scores, dim=-1)  # (B, T, H, M)
        n = torch.arange(1, self.coupling_real.shape[2] + 1, device=theta.device, dtype=torch.float32)
        ang = psi[:, :, None, :] * n[:, None]  # (H, M, NH, D)
        o_re = torch.einsum("bthm,hmnd->bthnd", attn, torch.cos(ang))
        o_im = torch.einsum("bthm,hmnd->bthnd", attn, torch.sin(ang))
        k = self.coupling_real.float().permute(0, 2, 1, 3)  # (H, NH, D, 2)
        z_re, z_im = o_re * k[..., 0] - o_im * k[..., 1], o_re * k[..., 1] + o_im * k[..., 0]
        tn = th[:, :, :, None, :] * n[:, None]  # (B, T, H, NH, D)
        # Im(exp(-i n theta) * z) = z_im cos(n theta) - z_re sin(n theta)
        out = (z_im * torch.cos(tn) - z_re * torch.sin(tn)).sum(3)
        return out.reshape(B, T, C).to(theta.dtype)
