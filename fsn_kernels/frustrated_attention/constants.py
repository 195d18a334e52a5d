"""Named constants of the kernels and the matmul operand modes.

Module-level ``tl.constexpr`` globals are readable inside kernels, in the interpreter and
when compiling for a GPU alike."""
from __future__ import annotations

import torch
import triton.language as tl

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)

# Matmul operand precision (accumulation is always fp32):
#   DOT_IEEE: fp32 operands with IEEE products (float32 / float64 inputs; no TF32)
#   DOT_BF16: bf16 operands (bfloat16 inputs, or bf16 autocast)
#   DOT_FP16: fp16 operands (float16 inputs, or fp16 autocast)
DOT_IEEE: tl.constexpr = tl.constexpr(0)
DOT_BF16: tl.constexpr = tl.constexpr(1)
DOT_FP16: tl.constexpr = tl.constexpr(2)
DOT_NAMES = {0: "ieee", 1: "bf16", 2: "fp16"}
FEATURE_DTYPES = {0: torch.float32, 1: torch.bfloat16, 2: torch.float16}


def dot_mode(dtype: torch.dtype) -> int:
    """The matmul operand mode of a tensor dtype."""
    if dtype == torch.bfloat16:
        return DOT_BF16.value
    if dtype == torch.float16:
        return DOT_FP16.value
    return DOT_IEEE.value
