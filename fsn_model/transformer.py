"""Baseline: RoPE + SwiGLU + RMSNorm pre-norm transformer LM on torch SDPA, with a
preallocated KV cache for decoding (``prefill`` / ``decode``, like FSNLM's phase cache)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_token_ids
from .config import TransformerConfig
from .mixers import shift_weights, swiglu


def apply_rope(x: Tensor, base: float = 10000.0, offset: int = 0) -> Tensor:
    """Rotary embedding (half-split layout) of x (B, H, T, Dh), Dh even, at positions
    ``offset .. offset + T - 1``."""
    T, Dh = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, Dh // 2, device=x.device, dtype=torch.float32) / (Dh // 2))
    ang = torch.arange(offset, offset + T, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : Dh // 2], x[..., Dh // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with RoPE: (B, T, dim) -> (B, T, dim)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, kv: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """(B, T, dim) -> (B, T, dim); with ``kv`` (two (B, H, T_max, Dh) buffers) the keys
        (after RoPE) and values of positions 0..T-1 are also written into them."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        k = apply_rope(k)
        if kv is not None:
            kv[0][:, :, :T] = k
            kv[1][:, :, :T] = v
        y = F.scaled_dot_product_attention(apply_rope(q), k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def decode(self, x: Tensor, kv: Tuple[Tensor, Tensor], pos: int) -> Tensor:
        """One new token x (B, 1, dim) at position ``pos``: its key and value are written into
        the preallocated cache ``kv`` at ``pos`` in place, and it attends to positions
        0..pos (SDPA over a view of the cache, no copy)."""
        B, _, C = x.shape
        q, k, v = self.qkv(x).view(B, 1, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        kv[0][:, :, pos: pos + 1] = apply_rope(k, offset=pos)
        kv[1][:, :, pos: pos + 1] = v
        y = F.scaled_dot_product_attention(apply_rope(q, offset=pos), kv[0][:, :, : pos + 1], kv[1][:, :, : pos + 1])
        return self.proj(y.transpose(1, 2).reshape(B, 1, C))


class SwiGLU(nn.Module):
    """(B, T, dim) -> (B, T, dim) via W_2 (silu(W_1 x) * W_3 x); with ``shift``, W_1 and W_3
    each read their own ``shift_mix`` of x and ``prev`` (the previous token's input), as FSN's
    ``PhaseSwiGLU`` does."""

    def __init__(self, dim: int, hidden: int, shift: bool = False):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.shift_a = shift_weights(dim) if shift else None
        self.shift_b = shift_weights(dim) if shift else None

    def forward(self, x: Tensor, prev: Optional[Tensor] = None) -> Tensor:
        return swiglu(x, self.w13, self.w2, self.shift_a, self.shift_b, prev)


class TransformerBlock(nn.Module):
    """Pre-norm block. With ``token_shift`` the MLP also reads ``norm2`` of the previous
    token's block input (zeros for a first token); decoding keeps that input per layer."""

    def __init__(self, dim: int, n_heads: int, hidden: int, token_shift: bool = False):
        super().__init__()
        self.token_shift = token_shift
        self.norm1, self.attn = nn.RMSNorm(dim), CausalSelfAttention(dim, n_heads)
        self.norm2, self.mlp = nn.RMSNorm(dim), SwiGLU(dim, hidden, shift=token_shift)

    def forward(self, x: Tensor, kv: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        prev = F.pad(self.norm2(x), (0, 0, 1, 0))[:, :-1] if self.token_shift else None
        x = x + self.attn(self.norm1(x), kv)
        return x + self.mlp(self.norm2(x), prev)

    def decode(self, x: Tensor, kv: Tuple[Tensor, Tensor], pos: int, prev_input: Optional[Tensor] = None) -> Tensor:
        """One token x (B, 1, dim) at ``pos``; ``prev_input`` (B, 1, dim): the previous
        token's block input (used with ``token_shift``; None at pos 0)."""
        prev = None
        if self.token_shift:
            prev = self.norm2(prev_input) if prev_input is not None else torch.zeros_like(x)
        x = x + self.attn.decode(self.norm1(x), kv, pos)
        return x + self.mlp(self.norm2(x), prev)


@dataclass
class KVCache:
    """Preallocated decode state of a :class:`TransformerLM`: per layer keys (after RoPE) and
    values (B, H, T_max, Dh), ``2 * dim`` numbers per token per layer, and ``length``
    tokens cached (every sequence of the batch alike). Grows by doubling, like
    ``fsn_model.fsn.PhaseCache``. With ``token_shift``, ``last_input`` holds per layer the
    last token's block input (B, 1, dim) (None before the first token, or without shift)."""

    k: List[Tensor]
    v: List[Tensor]
    length: int
    last_input: Optional[List[Tensor]] = None

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    @property
    def bytes_per_token(self) -> int:
        """Cache bytes per token, all layers and heads."""
        return sum(x.shape[1] * x.shape[3] * x.element_size() for x in self.k + self.v)

    def reserve(self, n: int) -> None:
        need = self.length + n
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity)
        for buf in (self.k, self.v):
            for i, x in enumerate(buf):
                grown = x.new_zeros(x.shape[0], x.shape[1], cap, x.shape[3])
                grown[:, :, : self.length] = x[:, :, : self.length]
                buf[i] = grown


class TransformerLM(nn.Module):
    """idx (B, T) int64 -> logits (B, T, vocab) float32. Untied embedding and head."""

    def __init__(self, config: TransformerConfig = TransformerConfig()):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        dim, n_layers = config.dim, config.n_layers
        self.vocab_size, self.dim = config.vocab_size, dim
        self.embed = nn.Embedding(config.vocab_size, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, config.n_heads, config.hidden, config.token_shift)
                                    for _ in range(n_layers))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, config.vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / (2 * n_layers) ** 0.5 if name.endswith(("proj.weight", "w2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: Tensor) -> Tensor:
        """(B, T) int64 -> (B, T, vocab) float32 logits. Ids outside 0..vocab_size - 1:
        ValueError (read on CPU tensors; see :func:`fsn_model.checks.check_token_ids`)."""
        check_token_ids("idx", idx, self.vocab_size)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)).float()

    def new_cache(self, batch: int, capacity: int, dtype: Optional[torch.dtype] = None) -> KVCache:
        """An empty :class:`KVCache` for ``batch`` sequences of up to ``capacity`` tokens, in
        the model's dtype (or ``dtype``) on its device."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        w = self.embed.weight
        H = self.config.n_heads
        shape = (batch, H, capacity, self.dim // H)
        make = [torch.zeros(shape, device=w.device, dtype=dtype or w.dtype) for _ in range(2 * len(self.blocks))]
        return KVCache(make[: len(self.blocks)], make[len(self.blocks):], 0)

    def prefill(self, idx: Tensor, capacity: Optional[int] = None) -> Tuple[Tensor, KVCache]:
        """The forward pass that also fills a new KV cache: (logits (B, T, vocab), the cache
        holding the T tokens, room for ``capacity`` (default 2 T))."""
        check_token_ids("idx", idx, self.vocab_size)
        B, T = idx.shape
        x = self.embed(idx)
        cache = self.new_cache(B, max(capacity or 2 * T, T, 1), dtype=x.dtype)
        shift = self.config.token_shift and T > 0
        last = []
        for block, k, v in zip(self.blocks, cache.k, cache.v):
            if shift:
                last.append(x[:, -1:].clone())
            x = block(x, (k, v))
        cache.length = T
        cache.last_input = last if shift else None
        return self.head(self.norm(x)).float(), cache

    @torch.no_grad()
    def decode(self, idx_new: Tensor, cache: KVCache) -> Tuple[Tensor, KVCache]:
        """Next-token step: idx_new (B,) or (B, 1) -> logits (B, vocab), ``cache`` advanced by
        one token in place (returned for convenience)."""
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache (from prefill or new_cache), got {type(cache).__name__}")
        check_token_ids("idx_new", idx_new.view(-1, 1) if isinstance(idx_new, torch.Tensor) else idx_new,
                        self.vocab_size, "(B, 1)")
        cache.reserve(1)
        x = self.embed(idx_new.view(-1, 1))
        shift = self.config.token_shift
        last = []
        for i, (block, k, v) in enumerate(zip(self.blocks, cache.k, cache.v)):
            if shift:
                last.append(x)
            x = block.decode(x, (k, v), cache.length, cache.last_input[i] if cache.last_input else None)
        cache.length += 1
        cache.last_input = last if shift else None
        return self.head(self.norm(x)).float()[:, 0], cache
