"""The Triton path's binding to PyTorch: the fused kernels' launchers (``forward.py``,
``backward.py``) as two registered custom ops and the autograd Function over them.

``fsn::frustrated_attention_fwd`` and ``fsn::frustrated_attention_bwd`` are opaque
``torch.library.custom_op``s with fake (meta) implementations, so ``torch.compile`` sees
no graph break; their names are public (a compiled graph refers to them). They launch the
kernels on CUDA, or on the CPU under ``TRITON_INTERPRET=1``. Inputs are checked by the
caller (``op.py``, through ``validation.py``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .backward import attention_bwd
from .constants import dot_mode
from .forward import attention_fwd


# --------------------------------------------------------------------------- custom ops
@torch.library.custom_op("fsn::frustrated_attention_fwd", mutates_args=())
def _fwd_op(
    theta: Tensor, gate: Tensor, coupling_real: Tensor, omega: Optional[Tensor], scale: float, dot: int,
    cu_seqlens: Optional[Tensor] = None, max_seqlen: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    return attention_fwd(theta, gate, coupling_real, omega, scale, dot=dot, cu_seqlens=cu_seqlens,
                         max_seqlen=max_seqlen)


@_fwd_op.register_fake
def _(theta, gate, coupling_real, omega, scale, dot, cu_seqlens=None, max_seqlen=0):
    B, T, H, D = theta.shape
    NH = coupling_real.shape[2]
    return (
        torch.empty_like(theta),
        theta.new_empty((B, H, T), dtype=torch.float32),
        theta.new_empty((B, T, H, NH, D), dtype=torch.float32),
    )


@torch.library.custom_op("fsn::frustrated_attention_bwd", mutates_args=())
def _bwd_op(
    grad_out: Tensor, theta: Tensor, gate: Tensor, coupling_real: Tensor, omega: Optional[Tensor],
    out: Tensor, lse: Tensor, order: Tensor, scale: float, dot: int,
    cu_seqlens: Optional[Tensor] = None, max_seqlen: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    return attention_bwd(grad_out, theta, gate, coupling_real, omega, out, lse, order, scale, dot=dot,
                         cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)


@_bwd_op.register_fake
def _(grad_out, theta, gate, coupling_real, omega, out, lse, order, scale, dot, cu_seqlens=None, max_seqlen=0):
    return torch.empty_like(theta), torch.empty_like(gate), torch.empty_like(coupling_real)


# ------------------------------------------------------------------- autograd Function
class FrustratedAttentionFunction(torch.autograd.Function):
    """Autograd Function over the two custom ops; the backward recomputes scores from the
    saved lse (no T x T tensor is ever stored)."""

    @staticmethod
    def forward(ctx, theta, gate, coupling_real, omega, scale, dot, cu_seqlens=None, max_seqlen=0):
        out, lse, order = _fwd_op(theta, gate, coupling_real, omega, scale, dot, cu_seqlens, max_seqlen)
        ctx.save_for_backward(theta, gate, coupling_real, omega, out, lse, order, cu_seqlens)
        ctx.scale, ctx.dot, ctx.max_seqlen = scale, dot, max_seqlen
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        theta, gate, coupling_real, omega, out, lse, order, cu_seqlens = ctx.saved_tensors
        dtheta, dgate, dcoupling = _bwd_op(
            grad_out.contiguous(), theta, gate, coupling_real, omega, out, lse, order,
            ctx.scale, ctx.dot, cu_seqlens, ctx.max_seqlen,
        )
        return dtheta, dgate, dcoupling, None, None, None, None, None


# ------------------------------------------------------------------ operand precision
def matmul_dot_mode(theta: Tensor) -> int:
    """The matmul operand mode (``constants.DOT_*`` value) for theta: its dtype, or the
    CUDA autocast dtype; fp32 off CUDA. See ``frustrated_attention``'s docstring, "Precision"."""
    if theta.device.type != "cuda":  # Triton's CPU interpreter computes bf16/fp16 dots wrongly
        return dot_mode(torch.float32)
    if torch.is_autocast_enabled("cuda"):
        return dot_mode(torch.get_autocast_dtype("cuda"))
    return dot_mode(theta.dtype)
