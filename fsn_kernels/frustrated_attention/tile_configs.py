"""Every tile configuration of the kernels, in one representation (``TileConfig``): the
per-token passes, the flash forward and both flash backward passes (autotune candidates,
best first) and the decode step's split and combine kernels. Each was chosen by compiling
for sm_90 (``aot_check``, which compiles exactly these) and counting SASS; the reasons
are in PERF_LOG.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from .constants import DOT_IEEE


@dataclass(frozen=True)
class TileConfig:
    """One kernel launch's tile and its Triton launch options.

    ``block_m``: rows per program: query rows of the flash forward and the query-major
    backward, the query rows streamed past the keys of the key-major backward, token rows
    (BLOCK_T) of a per-token pass, 1 for the decode kernels (one new token).
    ``block_n``: key rows per loop step: keys of the flash passes, cached tokens of the
    decode split kernel; 0 where a kernel has no key loop. ``num_warps``, ``num_stages``:
    Triton's launch options (3 is Triton's default on CUDA). ``row_partials``: the decode
    split kernel keeps per-row partial accumulators (see ``decode_split_config``)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    row_partials: bool = False

    def kwargs(self) -> dict:
        """Launch keywords of a flash kernel: BLOCK_M, BLOCK_N and the launch options."""
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, **self.options())

    def options(self) -> dict:
        """Triton's launch options: num_warps, num_stages."""
        return dict(num_warps=self.num_warps, num_stages=self.num_stages)


TRITON_DEFAULT_STAGES = 3  # what a launch without num_stages gets on CUDA


def _check_blocks(block_m: int, block_n: int) -> None:
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {b}")


# ----------------------------------------------------------------------- per-token passes
def token_config(block_d: int, nh_p: int) -> TileConfig:
    """Tile of the per-token passes (features, demodulation, chain rule): ``block_m`` tokens
    per program, about 8 elements of each [tokens, NH_P, BLOCK_D] tile per thread, which
    keeps their many live tiles in registers (sm_90 compile report, PERF_LOG.md)."""
    width = nh_p * block_d
    warps = 8 if width >= 256 else 4
    return TileConfig(max(16, min(64, 8 * 32 * warps // width)), 0, warps, TRITON_DEFAULT_STAGES)


# ---------------------------------------------------------------------------- flash passes
def forward_configs(block_d: int, nh_p: int, dot: int) -> List[TileConfig]:
    """Candidate tiles of the flash forward, best first (the first is the fixed config).

    Its accumulator is (BLOCK_M, 2 * NH_P * BLOCK_D) fp32 in registers, so the value
    width decides the tile; every candidate compiles for sm_90 with 0 stack bytes
    (``aot_check``; PERF_LOG.md)."""
    width = 2 * nh_p * block_d
    if dot == DOT_IEEE.value:  # fp32 operands: no wgmma, tiles staged in fp32
        return [TileConfig(64, 32, 4, 1)] if width <= 256 else [TileConfig(32, 16, 4, 1)]
    if width <= 128:
        return [TileConfig(128, 64, 8, 2), TileConfig(128, 32, 8, 3), TileConfig(64, 64, 4, 2)]
    if width <= 256:
        return [TileConfig(128, 32, 8, 2), TileConfig(128, 64, 8, 2), TileConfig(64, 32, 4, 2)]
    if width <= 512:
        return [TileConfig(64, 32, 8, 2), TileConfig(64, 64, 8, 2)]
    return [TileConfig(32, 16, 4, 1)]


def backward_kv_configs(block_d: int, nh_p: int, dot: int) -> List[TileConfig]:
    """Tiles of the key-major backward: BLOCK_N keys own (BLOCK_N, 2W) dv and (BLOCK_N,
    2 BLOCK_D) dk accumulators; BLOCK_M query rows stream past them. Wide values leave
    room only for small key tiles (PERF_LOG.md)."""
    width = 2 * nh_p * block_d
    if dot == DOT_IEEE.value:
        return [TileConfig(16, 32, 4, 1)] if width <= 256 else [TileConfig(16, 16, 4, 1)]
    if width <= 128:
        return [TileConfig(32, 128, 8, 2), TileConfig(32, 64, 4, 2)]
    if width <= 256:
        return [TileConfig(16, 32, 4, 1)]
    if width <= 512:
        return [TileConfig(16, 32, 8, 1), TileConfig(16, 16, 4, 1)]
    return [TileConfig(16, 16, 4, 1)]


def backward_q_configs(block_d: int, nh_p: int, dot: int) -> List[TileConfig]:
    """Tiles of the query-major backward: BLOCK_M queries own a (BLOCK_M, 2 BLOCK_D) dq
    accumulator and a (BLOCK_M, 2W) upstream-gradient tile; BLOCK_N keys stream past."""
    width = 2 * nh_p * block_d
    if dot == DOT_IEEE.value:
        return [TileConfig(32, 16, 4, 1)] if width <= 256 else [TileConfig(16, 16, 4, 1)]
    if width <= 128:
        return [TileConfig(128, 32, 8, 2), TileConfig(64, 32, 4, 2), TileConfig(128, 64, 8, 2)]
    if width <= 256:
        return [TileConfig(64, 32, 4, 2), TileConfig(64, 32, 8, 2), TileConfig(128, 32, 8, 2)]
    if width <= 512:
        return [TileConfig(64, 16, 8, 2), TileConfig(64, 32, 8, 2)]
    return [TileConfig(16, 16, 4, 1)]


def fixed_config(configs, block_m=None, block_n=None) -> TileConfig:
    """The first candidate, with optional tile overrides (tests cross block boundaries)."""
    cfg = configs[0]
    if block_m is None and block_n is None:
        return cfg
    bm, bn = block_m or cfg.block_m, block_n or cfg.block_n
    _check_blocks(bm, bn)
    return TileConfig(bm, bn, 4 if bm * bn <= 64 * 64 else cfg.num_warps, 1)


# ----------------------------------------------------------------------------- decode step
def decode_split_config(block_d: int, nh_p: int) -> TileConfig:
    """Tile of the decode split kernel: ``block_n`` cached tokens per loop step, chosen by
    compiling for sm_90 (``aot_check --roles decode``) and counting the loop's SASS per
    cached token.

    With ``row_partials`` the two value accumulators are per-row partials [BLOCK_N, NH_P,
    BLOCK_D] (re and im each), reduced over rows once after the loop; wide values reduce
    over the rows per block ([NH_P, BLOCK_D] accumulators) and take fewer rows per block
    to stay in registers (0 stack bytes at every aot_check shape). Fewer warps per program
    means fewer cross-warp exchanges per block (the score's row sum, the running max, the
    shifted probabilities); the split count fills the GPU instead."""
    width = nh_p * block_d
    if width <= 64:
        return TileConfig(1, 16, 2, TRITON_DEFAULT_STAGES, row_partials=True)
    if width <= 256:
        return TileConfig(1, 16, 4, TRITON_DEFAULT_STAGES, row_partials=True)
    if width <= 512:
        return TileConfig(1, 8, 8, TRITON_DEFAULT_STAGES)
    # NH_P * BLOCK_D = 1024: fewer rows per block keep the [BN, NH_P, BD] tiles in registers
    return TileConfig(1, 2, 8, TRITON_DEFAULT_STAGES)


def decode_combine_config(block_d: int, nh_p: int) -> TileConfig:
    """Tile of the decode combine kernel (one program per sequence and head, no key loop)."""
    return TileConfig(1, 0, 4 if nh_p * block_d <= 512 else 8, TRITON_DEFAULT_STAGES)
