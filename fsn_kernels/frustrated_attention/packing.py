"""Packed sequences: where each sequence lies in the B*T token rows of the kernels' inputs."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Packing:
    """Where the sequences are in the token rows (B*T) of the kernels' inputs.

    Without cu_seqlens: B sequences of length T (``cu_seqlens``, ``pos``, ``seq_end``
    None). With cu_seqlens (int32 (S + 1,)): S sequences packed in one row of B*T = N
    tokens; ``pos`` (N,) int32 is each token's position in its sequence and ``seq_end``
    (N,) int32 the row after its sequence's last token, computed on the device."""

    num_seqs: int
    max_len: int
    cu_seqlens: torch.Tensor | None = None
    pos: torch.Tensor | None = None
    seq_end: torch.Tensor | None = None


def packing(B: int, T: int, cu_seqlens=None, max_seqlen=None) -> Packing:
    if cu_seqlens is None:
        return Packing(B, T)
    n = B * T
    rows = torch.arange(n, device=cu_seqlens.device, dtype=torch.int32)
    seq = torch.searchsorted(cu_seqlens[1:], rows, right=True)
    seq = seq.clamp_max(cu_seqlens.numel() - 2)  # only rows past the last end (none, once validated)
    return Packing(cu_seqlens.numel() - 1, max_seqlen, cu_seqlens, (rows - cu_seqlens[seq]).to(torch.int32),
                   cu_seqlens[seq + 1].to(torch.int32))
