"""How the kernels are launched: the interpreter or a GPU, autotuning among a kernel's
candidate tiles (``tile_configs.py``) or its fixed config."""
from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction


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
