"""How the kernels are launched: the interpreter or a GPU, autotuning or a fixed config,
and the candidate tiles of each kernel (compiled for sm_90 by ``aot_check``; choices in
PERF_LOG.md)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from .constants import DOT_IEEE


def interpreting() -> bool:
    """Whether TRITON_INTERPRET asks for Triton's CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreter_active() -> bool:
    """Whether Triton's kernels were defined for the interpreter. ``triton.jit`` reads
    TRITON_INTERPRET when a kernel is defined, Triton's own library functions included
    (at ``import triton``), so setting it later does not take effect."""
    return isinstance(tl.zeros, InterpretedFunction)


def autotuning() -> bool:
    """Autotune on CUDA unless FSN_AUTOTUNE=0 (the interpreter cannot autotune)."""
    return not interpreting() and os.environ.get("FSN_AUTOTUNE", "1") not in ("", "0")


@dataclass(frozen=True)
class TileConfig:
    block_m: int  # query rows per tile
    block_n: int  # key rows per tile
    num_warps: int
    num_stages: int

    def kwargs(self):
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, num_warps=self.num_warps,
                    num_stages=self.num_stages)


def _check_blocks(block_m: int, block_n: int) -> None:
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if b < 16 or b & (b - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {b}")


def forward_configs(block_d: int, nh_p: int, dot: int):
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


def backward_kv_configs(block_d: int, nh_p: int, dot: int):
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


def backward_q_configs(block_d: int, nh_p: int, dot: int):
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


def token_block(block_d: int, nh_p: int):
    """(tokens, warps) per program of the per-token passes (features, demodulation, chain
    rule): about 8 elements of each [tokens, NH_P, BLOCK_D] tile per thread, which keeps
    their many live tiles in registers (sm_90 compile report, PERF_LOG.md)."""
    width = nh_p * block_d
    warps = 8 if width >= 256 else 4
    return max(16, min(64, 8 * 32 * warps // width)), warps


def fixed_config(configs, block_m=None, block_n=None) -> TileConfig:
    """The first candidate, with optional tile overrides (tests cross block boundaries)."""
    cfg = configs[0]
    if block_m is None and block_n is None:
        return cfg
    bm, bn = block_m or cfg.block_m, block_n or cfg.block_n
    _check_blocks(bm, bn)
    return TileConfig(bm, bn, 4 if bm * bn <= 64 * 64 else cfg.num_warps, 1)


_AUTOTUNED = {}


def launch(kernel, grid, args: dict, configs, cfg=None):
    """Launch an attention kernel with tiles (BLOCK_M, BLOCK_N) and keyword ``args``.

    ``grid(block_m, block_n)`` gives the launch grid. With ``cfg`` (a test's override) or
    without autotuning (the interpreter, FSN_AUTOTUNE=0) the fixed config runs; on CUDA
    ``triton.autotune`` picks among ``configs``, keyed on (BLOCK_D, NH_P, DOT). fp fusion
    (FMA contraction) is set explicitly: Triton's default changes in 3.10."""
    if cfg is None and autotuning():
        tuned = _AUTOTUNED.get((kernel, tuple(configs)))
        if tuned is None:
            tuned = triton.autotune(
                [triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n}, num_warps=c.num_warps,
                               num_stages=c.num_stages) for c in configs],
                key=["BLOCK_D", "NH_P", "DOT"],
            )(kernel)
            _AUTOTUNED[(kernel, tuple(configs))] = tuned
        tuned[lambda meta: grid(meta["BLOCK_M"], meta["BLOCK_N"])](**args, enable_fp_fusion=True)
    else:
        cfg = cfg or configs[0]
        kernel[grid(cfg.block_m, cfg.block_n)](**args, **cfg.kwargs(), enable_fp_fusion=True)
