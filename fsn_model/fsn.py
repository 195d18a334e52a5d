"""The FSN language model (SPEC §3): phase embedding, blocks on the torus, readout."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .attention import FrustratedAttention, phase_features
from .mixers import MeanFieldCoupling, PhaseSwiGLU


class FSNBlock(nn.Module):
    """``theta += attn(theta); theta += mix(theta)`` (residual on the torus, no norms).

    Args:
        dim, n_heads, n_harmonics: attention shape.
        mixer: "swiglu" (``hidden`` wide) or "meanfield" (``n_modes`` collective modes).
    """

    def __init__(self, dim: int, n_heads: int, n_harmonics: int = 2, mixer: str = "swiglu",
                 hidden: int = 0, n_modes: int = 0, backend: str = "auto", delay: bool = True,
                 k1_init: float = 0.5, coupling_std: float = 0.02, gate_std: float = 0.02):
        super().__init__()
        self.attn = FrustratedAttention(dim, n_heads, n_harmonics, backend=backend, delay=delay, k1_init=k1_init,
                                        coupling_std=coupling_std, gate_std=gate_std)
        if mixer == "swiglu":
            self.mix = PhaseSwiGLU(dim, hidden)
        elif mixer == "meanfield":
            self.mix = MeanFieldCoupling(dim, n_heads, n_modes, n_harmonics)
        else:
            raise ValueError(f"mixer must be 'swiglu' or 'meanfield', got {mixer!r}")

    def forward(self, theta: Tensor) -> Tensor:
        """(B, T, dim) -> (B, T, dim)."""
        theta = theta + self.attn(theta)
        return theta + self.mix(theta)

    def decode(self, theta: Tensor, cache: Optional[Tensor]) -> Tensor:
        """One new token (B, 1, dim) given this layer's cached attention inputs (B, t, dim)."""
        theta = theta + self.attn.decode(theta, cache)
        return theta + self.mix(theta)


class FSNLM(nn.Module):
    """Byte/token LM on phases. idx (B, T) int64 -> logits (B, T, vocab) float32.

    Embedding: learned phases theta_0 = E[idx] (init uniform on [-pi, pi)); L FSN blocks;
    readout logits = W [cos theta_L, sin theta_L] + b (``readout_norm=True``: a LayerNorm on
    those features first, the normalised readout of the tuning study; default norm-free).
    ``k1_init``, ``coupling_std``, ``gate_std`` go to every attention layer. ``embed_scale`` s:
    theta_0 = s * E[idx] with E uniform on [-pi/s, pi/s), the same phases at init; under Adam
    (whose steps do not depend on a weight's scale) the embedding phases then move s times
    faster than the other weights.

    Generation keeps a phase cache: a list with, per layer, the attention inputs
    (B, t, dim), i.e. C = dim floats per token per layer (see :meth:`prefill`, :meth:`decode`).
    """

    def __init__(self, vocab_size: int = 256, dim: int = 64, n_layers: int = 4, n_heads: int = 4,
                 n_harmonics: int = 2, mixer: str = "swiglu", hidden: int = 128, n_modes: int = 64,
                 backend: str = "auto", delay: bool = True, k1_init: float = 0.5, coupling_std: float = 0.02,
                 gate_std: float = 0.02, readout_norm: bool = False, embed_scale: float = 1.0):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.embed = nn.Embedding(vocab_size, dim)
        self.embed_scale = float(embed_scale)
        nn.init.uniform_(self.embed.weight, -torch.pi / self.embed_scale, torch.pi / self.embed_scale)
        self.blocks = nn.ModuleList(
            FSNBlock(dim, n_heads, n_harmonics, mixer, hidden, n_modes, backend, delay, k1_init, coupling_std, gate_std)
            for _ in range(n_layers)
        )
        self.readout_norm = nn.LayerNorm(2 * dim) if readout_norm else nn.Identity()
        self.readout = nn.Linear(2 * dim, vocab_size)
        nn.init.normal_(self.readout.weight, 0.0, 0.02)
        nn.init.zeros_(self.readout.bias)

    def logits(self, theta: Tensor) -> Tensor:
        return self.readout(self.readout_norm(phase_features(theta))).float()

    def forward(self, idx: Tensor) -> Tensor:
        """(B, T) int64 -> (B, T, vocab) float32 logits."""
        return self.prefill(idx, return_cache=False)[0]

    def prefill(self, idx: Tensor, return_cache: bool = True) -> Tuple[Tensor, Optional[List[Tensor]]]:
        """Full forward that also returns the per-layer phase cache (list of (B, T, dim))."""
        theta = self.embed(idx) * self.embed_scale
        cache = [] if return_cache else None
        for block in self.blocks:
            if return_cache:
                cache.append(theta)
            theta = block(theta)
        return self.logits(theta), cache

    @torch.no_grad()
    def decode(self, idx_new: Tensor, cache: List[Optional[Tensor]]) -> Tuple[Tensor, List[Tensor]]:
        """Next-token step: idx_new (B,) or (B, 1) -> logits (B, vocab), updated cache.

        ``cache`` is the list from :meth:`prefill` (or ``[None] * n_layers`` to start empty).
        """
        theta = self.embed(idx_new.view(-1, 1)) * self.embed_scale
        new_cache = []
        for block, c in zip(self.blocks, cache):
            new_cache.append(theta if c is None else torch.cat([c, theta], dim=1))
            theta = block.decode(theta, c)
        return self.logits(theta)[:, 0], new_cache
