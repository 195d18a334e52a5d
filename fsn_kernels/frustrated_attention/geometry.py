"""The launch geometry of one call: shapes, padding, operand mode and packing, resolved
once and read by every launcher of the call."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from .constants import FEATURE_DTYPES
from .packing import Packing, packing
from .tile_configs import TileConfig, token_config


def padded_head_dim(d: int) -> int:
    """D padded to a power of two >= 16 (a tile side of the GPU matmuls)."""
    return max(16, triton.next_power_of_2(d))


def padded_harmonics(nh: int):
    """(NH_P, N_BITS): harmonics padded to a power of two, and the bits binary powering needs."""
    nh_p = triton.next_power_of_2(nh)
    return nh_p, nh_p.bit_length()


@dataclass(frozen=True)
class LaunchGeometry:
    """Everything the launchers of one call derive from its shapes.

    ``B, T, H, D``: theta's shape (B*T = N token rows); ``NH`` harmonics. ``block_d`` is
    D padded (``padded_head_dim``), ``nh_p`` NH padded and ``n_bits`` the bits binary
    powering needs (``padded_harmonics``). ``dot`` is the matmul operand mode
    (``constants.DOT_*`` value) and so the features' dtype. ``pack`` says where the
    sequences lie in the token rows. ``token_tile``: the tile of the per-token passes
    (``tile_configs.token_config``)."""

    B: int
    T: int
    H: int
    D: int
    NH: int
    dot: int
    block_d: int
    nh_p: int
    n_bits: int
    token_tile: TileConfig
    pack: Packing

    @property
    def N(self) -> int:
        """Token rows, B * T."""
        return self.B * self.T

    @property
    def block_t(self) -> int:
        """Token rows per program of the per-token passes."""
        return self.token_tile.block_m

    @property
    def key_width(self) -> int:
        """Columns of a q^ / k^ feature row: cos and sin of BLOCK_D oscillators."""
        return 2 * self.block_d

    @property
    def value_width(self) -> int:
        """Columns of a v^ / dO^ feature row: re and im of NH_P x BLOCK_D."""
        return 2 * self.nh_p * self.block_d

    @property
    def feature_dtype(self) -> torch.dtype:
        return FEATURE_DTYPES[self.dot]

    def token_grid(self):
        """Grid (token blocks, H) of the per-token passes."""
        return triton.cdiv(self.N, self.block_t), self.H

    def sequence_grid(self, block: int):
        """Grid (blocks of the longest sequence, H, sequences) of the attention passes."""
        return triton.cdiv(self.pack.max_len, block), self.H, self.pack.num_seqs

    def token_meta(self) -> dict:
        """Compile-time parameters and warps of the per-token kernels."""
        return dict(BLOCK_T=self.block_t, BLOCK_D=self.block_d, NH_P=self.nh_p, N_BITS=self.n_bits,
                    **self.token_tile.options())

    def tile_meta(self) -> dict:
        """Compile-time parameters of the attention kernels (their autotuning key)."""
        return dict(BLOCK_D=self.block_d, NH_P=self.nh_p, DOT=self.dot)


def launch_geometry(theta_shape, num_harmonics: int, dot: int, cu_seqlens=None, max_seqlen=None) -> LaunchGeometry:
    """The geometry of a call on theta of shape (B, T, H, D) with NH harmonics and operand
    mode ``dot``; ``cu_seqlens``, ``max_seqlen`` describe packed sequences (or None)."""
    B, T, H, D = theta_shape
    nh_p, n_bits = padded_harmonics(num_harmonics)
    block_d = padded_head_dim(D)
    return LaunchGeometry(B, T, H, D, num_harmonics, dot, block_d, nh_p, n_bits, token_config(block_d, nh_p),
                          packing(B, T, cu_seqlens, max_seqlen))
