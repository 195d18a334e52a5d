"""The FSN language model (fsn_model/README.md, "The model"): phase embedding, blocks on the torus, readout."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .attention import FrustratedAttention, phase_features
from .config import FSNConfig
from .mixers import MeanFieldCoupling, PhaseSwiGLU


class FSNBlock(nn.Module):
    """``theta += attn(theta); theta += mix(theta)`` (residual on the torus, no norms).

    Args:
        config: the model shape; ``config.mixer`` picks "swiglu" (``hidden`` wide) or
            "meanfield" (``n_modes`` collective modes).
        backend: compute backend of the attention op (a runtime choice, not saved).
    """

    def __init__(self, config: FSNConfig, backend: str = "auto"):
        super().__init__()
        c = config
        self.attn = FrustratedAttention(c.dim, c.n_heads, c.n_harmonics, backend=backend, delay=c.delay)
        if c.mixer == "swiglu":
            self.mix = PhaseSwiGLU(c.dim, c.hidden)
        else:
            self.mix = MeanFieldCoupling(c.dim, c.n_heads, c.n_modes, c.n_harmonics)

    def forward(self, theta: Tensor, cu_seqlens: Optional[Tensor] = None) -> Tensor:
        """(B, T, dim) -> (B, T, dim); ``cu_seqlens``: packed sequences (B = 1)."""
        theta = theta + self.attn(theta, cu_seqlens)
        return theta + self.mix(theta)

    def decode(self, theta: Tensor, cache: Optional[Tensor]) -> Tensor:
        """One new token (B, 1, dim) given this layer's cached attention inputs (B, t, dim)."""
        theta = theta + self.attn.decode(theta, cache)
        return theta + self.mix(theta)


class FSNLM(nn.Module):
    """Byte/token LM on phases. idx (B, T) int64 -> logits (B, T, vocab) float32.

    Embedding: learned phases theta_0 = E[idx] (init uniform on [-pi, pi)); L FSN blocks;
    readout logits = W [cos theta_L, sin theta_L] + b.

    Generation keeps a phase cache: a list with, per layer, the attention inputs
    (B, t, dim), i.e. C = dim floats per token per layer (see :meth:`prefill`, :meth:`decode`).
    """

    def __init__(self, config: FSNConfig = FSNConfig(), backend: str = "auto"):
        super().__init__()
        if not isinstance(config, FSNConfig):
            raise TypeError(f"config must be an FSNConfig, got {type(config).__name__}")
        self.config = config
        self.vocab_size, self.dim = config.vocab_size, config.dim
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        nn.init.uniform_(self.embed.weight, -torch.pi, torch.pi)
        self.blocks = nn.ModuleList(FSNBlock(config, backend) for _ in range(config.n_layers))
        self.readout = nn.Linear(2 * config.dim, config.vocab_size)
        nn.init.normal_(self.readout.weight, 0.0, 0.02)
        nn.init.zeros_(self.readout.bias)

    def logits(self, theta: Tensor) -> Tensor:
        """Readout: (B, T, dim) phases -> (B, T, vocab) float32 logits."""
        return self.readout(phase_features(theta)).float()

    def phases(self, idx: Tensor, cache: Optional[List[Tensor]] = None, cu_seqlens: Optional[Tensor] = None) -> Tensor:
        """Embed ``idx`` (B, T) and run every block: final phases (B, T, dim). When ``cache``
        is a list, each layer's attention input (B, T, dim) is appended to it."""
        theta = self.embed(idx)
        for block in self.blocks:
            if cache is not None:
                cache.append(theta)
            theta = block(theta, cu_seqlens)
        return theta

    def forward(self, idx: Tensor, cu_seqlens: Optional[Tensor] = None) -> Tensor:
        """(B, T) int64 -> (B, T, vocab) float32 logits.

        ``cu_seqlens`` (int32 (S + 1,), B = 1): ``idx[0]`` holds S documents end to end;
        attention never crosses a document boundary (the mixers are per token), so the
        logits equal those of each document run alone."""
        return self.logits(self.phases(idx, cu_seqlens=cu_seqlens))

    def prefill(self, idx: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """The forward pass that also returns the phase cache: (logits (B, T, vocab), a list of
        n_layers tensors (B, T, dim))."""
        cache: List[Tensor] = []
        return self.logits(self.phases(idx, cache)), cache

    @torch.no_grad()
    def decode(self, idx_new: Tensor, cache: List[Optional[Tensor]]) -> Tuple[Tensor, List[Tensor]]:
        """Next-token step: idx_new (B,) or (B, 1) -> logits (B, vocab), updated cache.

        ``cache`` is the list from :meth:`prefill` (or ``[None] * n_layers`` to start empty).
        """
        theta = self.embed(idx_new.view(-1, 1))
        new_cache = []
        for block, c in zip(self.blocks, cache):
            new_cache.append(theta if c is None else torch.cat([c, theta], dim=1))
            theta = block.decode(theta, c)
        return self.logits(theta)[:, 0], new_cache
