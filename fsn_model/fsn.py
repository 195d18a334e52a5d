"""The FSN language model (fsn_model/README.md, "The model"): phase embedding, blocks on the torus, readout."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .attention import FrustratedAttention, phase_features
from .checks import check_token_ids
from .config import FSNConfig
from .mixers import MeanFieldCoupling, PhaseSwiGLU


@dataclass
class PhaseCache:
    """Preallocated decode state of an :class:`FSNLM`: per layer the phases the attention
    reads (:meth:`FrustratedAttention.cached_phases`) of past tokens, ``phases[l]``
    (B, T_max, dim) (``dim`` floats per token per layer: half of a transformer's K + V), and
    ``seqlens`` (B,) int32 tokens cached, on the model's device, in the dtype of the
    model's phases (:meth:`FSNLM.new_cache`). Every sequence of the batch
    has the same length, ``length`` (a host int, so no step reads a length back from the
    device). Decoding writes each new token in place; :meth:`reserve` doubles the capacity
    when it runs out (a copy per doubling, none per step)."""

    phases: List[Tensor]
    seqlens: Tensor
    length: int

    @property
    def capacity(self) -> int:
        return self.phases[0].shape[1]

    @property
    def bytes_per_token(self) -> int:
        """Cache bytes per token, all layers and heads."""
        return sum(p.shape[2] * p.element_size() for p in self.phases)

    @classmethod
    def empty(cls, n_layers: int, batch: int, capacity: int, dim: int, device=None,
              dtype=torch.float32) -> "PhaseCache":
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        return cls([torch.zeros(batch, capacity, dim, device=device, dtype=dtype) for _ in range(n_layers)],
                   torch.zeros(batch, dtype=torch.int32, device=device), 0)

    def reserve(self, n: int) -> None:
        """Make room for ``n`` more tokens (capacity at least doubles when it grows)."""
        need = self.length + n
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity)
        for i, p in enumerate(self.phases):
            grown = p.new_zeros(p.shape[0], cap, p.shape[2])
            grown[:, : self.length] = p[:, : self.length]
            self.phases[i] = grown


def previous_token_features(theta: Tensor, cu_seqlens: Optional[Tensor] = None) -> Tensor:
    """Features of the token before each position: (B, T, C) phases -> (B, T, 2C) with row t
    equal to ``[cos theta[t-1], sin theta[t-1]]``, and zeros where t starts a sequence (t = 0,
    and each document start ``cu_seqlens[:-1]`` when packed)."""
    f = phase_features(theta)
    B, T, F2 = f.shape
    prev = f.new_zeros(B, T + 1, F2)
    prev[:, 1:] = f
    if cu_seqlens is not None:
        prev[:, cu_seqlens[:-1].long()] = 0  # an empty last document starts at T: row T, dropped below
    return prev[:, :T]


class FSNBlock(nn.Module):
    """``theta += attn(theta); theta += mix(theta)`` (residual on the torus, no norms).

    With ``config.token_shift`` the mixer also reads the features of the previous token's
    cached phases (:func:`previous_token_features`): its block input, or with
    ``config.projections`` their projection ``attn.cached_phases``. The phase cache already
    holds them, so decoding needs no extra state.

    Args:
        config: the model shape; ``config.mixer`` picks "swiglu" (``hidden`` wide) or
            "meanfield" (``n_modes`` collective modes).
        backend: compute backend of the attention op (a runtime choice, not saved).
    """

    def __init__(self, config: FSNConfig, backend: str = "auto"):
        super().__init__()
        c = config
        self.attn = FrustratedAttention(c.dim, c.n_heads, c.n_harmonics, backend=backend, delay=c.delay,
                                        k1_init=c.k1_init, coupling_std=c.coupling_std, gate_std=c.gate_std,
                                        projections=c.projections, projected_heads=c.projected_heads,
                                        project_output=c.project_output)
        self.token_shift = c.token_shift
        if c.mixer == "swiglu":
            self.mix = PhaseSwiGLU(c.dim, c.hidden, shift=c.token_shift)
        else:
            self.mix = MeanFieldCoupling(c.dim, c.n_heads, c.n_modes, c.n_harmonics, shift=c.token_shift)

    def forward(self, theta: Tensor, cu_seqlens: Optional[Tensor] = None,
                attn_phases: Optional[Tensor] = None) -> Tensor:
        """(B, T, dim) -> (B, T, dim); ``cu_seqlens``: packed sequences (B = 1);
        ``attn_phases``: ``attn.cached_phases(theta)`` when already computed."""
        attended = self.attn.cached_phases(theta) if attn_phases is None else attn_phases
        prev = previous_token_features(attended, cu_seqlens) if self.token_shift else None
        theta = theta + self.attn(theta, cu_seqlens, attended)
        return theta + self.mix(theta, prev)

    def decode(self, theta: Tensor, phase_cache: Tensor, cache_seqlens: Tensor, check_seqlens: bool = True) -> Tensor:
        """One new token (B, 1, dim) given this layer's preallocated phase cache (B, T_max,
        dim), holding ``cache_seqlens[b]`` tokens; the token's cached phases
        (``attn.cached_phases(theta)``) are written into it in place."""
        prev = None
        if self.token_shift:  # the previous token's cached phases (zeros for a first token)
            B, _, C = phase_cache.shape
            last = (cache_seqlens.long() - 1).clamp(min=0).view(B, 1, 1).expand(B, 1, C)
            prev = phase_features(phase_cache.gather(1, last)) * (cache_seqlens > 0).view(B, 1, 1)
        theta = theta + self.attn.decode(theta, phase_cache, cache_seqlens, check_seqlens)
        return theta + self.mix(theta, prev)


class FSNLM(nn.Module):
    """Byte/token LM on phases. idx (B, T) int64 -> logits (B, T, vocab) float32.

    Embedding: learned phases theta_0 = E[idx] (init uniform on [-pi, pi)); L FSN blocks;
    readout logits = W [cos theta_L, sin theta_L] + b (``config.readout_norm``: a LayerNorm on
    those features first, the normalised readout of the tuning study; default norm-free).
    ``k1_init``, ``coupling_std``, ``gate_std`` go to every attention layer. ``embed_scale`` s:
    theta_0 = s * E[idx] with E uniform on [-pi/s, pi/s), the same phases at init; under Adam
    (whose steps do not depend on a weight's scale) the embedding phases then move s times
    faster than the other weights.

    Generation keeps a preallocated phase cache (:class:`PhaseCache`): per layer the
    phases the attention reads (B, T_max, dim) (its inputs, or their projections with
    ``projections``), i.e. C = dim floats per token per layer, written in place one token per
    step (see :meth:`prefill`, :meth:`decode`).
    """

    def __init__(self, config: FSNConfig = FSNConfig(), backend: str = "auto"):
        super().__init__()
        if not isinstance(config, FSNConfig):
            raise TypeError(f"config must be an FSNConfig, got {type(config).__name__}")
        self.config = config
        self.vocab_size, self.dim = config.vocab_size, config.dim
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.embed_scale = float(config.embed_scale)
        self.init_embedding()
        self.blocks = nn.ModuleList(FSNBlock(config, backend) for _ in range(config.n_layers))
        self.readout_norm = nn.LayerNorm(2 * config.dim) if config.readout_norm else nn.Identity()
        self.readout = nn.Linear(2 * config.dim, config.vocab_size)
        self.init_readout()

    def init_embedding(self) -> None:
        """The embedding's init, in place: uniform on [-pi/s, pi/s), s = ``embed_scale``."""
        with torch.no_grad():
            self.embed.weight.uniform_(-torch.pi / self.embed_scale, torch.pi / self.embed_scale)

    def init_readout(self) -> None:
        """The readout's init, in place: weight N(0, 0.02^2), bias 0, the LayerNorm's own."""
        with torch.no_grad():
            self.readout.weight.normal_(0.0, 0.02)
            self.readout.bias.zero_()
        if isinstance(self.readout_norm, nn.LayerNorm):
            self.readout_norm.reset_parameters()

    def logits(self, theta: Tensor) -> Tensor:
        """Readout: (B, T, dim) phases -> (B, T, vocab) float32 logits."""
        return self.readout(self.readout_norm(phase_features(theta))).float()

    def phases(self, idx: Tensor, cache: Optional[PhaseCache] = None, cu_seqlens: Optional[Tensor] = None) -> Tensor:
        """Embed ``idx`` (B, T) and run every block: final phases (B, T, dim). With ``cache``
        (empty, capacity >= T), each layer's attention input is written into it.
        ``cu_seqlens``: packed sequences (B = 1), see :meth:`forward`. ``idx``: token ids in
        0..vocab_size - 1, else ValueError (:func:`fsn_model.checks.check_token_ids`)."""
        check_token_ids("idx", idx, self.vocab_size)
        theta = self.embed(idx) * self.embed_scale
        T = idx.shape[1]
        for i, block in enumerate(self.blocks):
            attn_phases = block.attn.cached_phases(theta)
            if cache is not None:
                cache.phases[i][:, :T] = attn_phases
            theta = block(theta, cu_seqlens, attn_phases)
        if cache is not None:
            cache.length = T
            cache.seqlens.fill_(T)
        return theta

    def forward(self, idx: Tensor, cu_seqlens: Optional[Tensor] = None) -> Tensor:
        """(B, T) int64 -> (B, T, vocab) float32 logits. T = 0 gives an empty result that
        backpropagates (zero gradients). Ids outside 0..vocab_size - 1: ValueError (read on
        CPU tensors; see :func:`fsn_model.checks.check_token_ids`).

        ``cu_seqlens`` (int32 (S + 1,), B = 1): ``idx[0]`` holds S documents end to end;
        attention never crosses a document boundary (the mixers are per token), so the
        logits equal those of each document run alone."""
        return self.logits(self.phases(idx, cu_seqlens=cu_seqlens))

    def new_cache(self, batch: int, capacity: int) -> PhaseCache:
        """An empty :class:`PhaseCache` for ``batch`` sequences of up to ``capacity`` tokens
        (it grows by doubling past that), on the model's device, in the dtype of the model's
        phases: its embedding's (float32, or bfloat16 / float16 / float64 after ``.to(dtype)``;
        float32 under autocast, which leaves the embedding and the residual phases in float32)."""
        w = self.embed.weight
        return PhaseCache.empty(len(self.blocks), batch, capacity, self.dim, device=w.device, dtype=w.dtype)

    def prefill(self, idx: Tensor, capacity: Optional[int] = None) -> Tuple[Tensor, PhaseCache]:
        """The forward pass that also fills a new phase cache: (logits (B, T, vocab), a
        :class:`PhaseCache` holding the T tokens, room for ``capacity`` (default 2 T))."""
        check_token_ids("idx", idx, self.vocab_size)
        B, T = idx.shape
        capacity = max(capacity or 2 * T, T, 1)
        cache = self.new_cache(B, capacity)
        return self.logits(self.phases(idx, cache)), cache

    @torch.no_grad()
    def decode(self, idx_new: Tensor, cache: PhaseCache) -> Tuple[Tensor, PhaseCache]:
        """Next-token step: idx_new (B,) or (B, 1) -> logits (B, vocab), and ``cache`` advanced
        by one token in place (returned for convenience). Start from :meth:`prefill` or
        from :meth:`new_cache` (empty)."""
        if not isinstance(cache, PhaseCache):
            raise TypeError(f"cache must be a PhaseCache (from prefill or new_cache), got {type(cache).__name__}")
        check_token_ids("idx_new", idx_new.view(-1, 1) if isinstance(idx_new, torch.Tensor) else idx_new,
                        self.vocab_size, "(B, 1)")
        cache.reserve(1)
        theta = self.embed(idx_new.view(-1, 1)) * self.embed_scale
        for block, phases in zip(self.blocks, cache.phases):
            theta = block.decode(theta, phases, cache.seqlens, check_seqlens=False)  # lengths tracked on the host
        cache.length += 1
        cache.seqlens += 1
        return self.logits(theta)[:, 0], cache
