"""The stock path's custom ops, autograd Function and entry point (the math is in
``stock.py``).

Two ``torch.library`` custom ops, ``fsn::stock_attention_fwd`` and ``_bwd``, with fake
implementations, so ``torch.compile(fullgraph=True)`` of a model sees no graph break; an
autograd Function over them whose backward is the written-out one of ``stock.py`` (memory
linear in T: the forward saves the SDPA inputs, output and lse).

Inside the ops each direction's per-token work runs fused by ``torch.compile`` (inductor's
C++ kernels) where that pays, eagerly otherwise (:func:`compile_wanted`): the setting
``STOCK_COMPILE`` ("auto", "on", "off"; environment variable ``FSN_STOCK_COMPILE``),
"auto" compiling on a CPU with a C++ compiler for inputs of at least
``COMPILE_MIN_ELEMENTS`` (B T H D) elements, not packed, when a backward will follow
(training: a forward-only call, evaluation or a prefill, cannot amortise the compile).
The choice is made once per call and passed to both ops. A compile that fails warns once
and the ops stay eager for the rest of the process.

Non-finite inputs: a NaN or inf in theta, gate or omega makes exactly the outputs non-finite
that the float64 reference makes non-finite (:func:`poison_like_reference`), whatever
PyTorch's attention kernel does with them.
"""
from __future__ import annotations

import os
import shutil
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from . import stock
from .precision import compute_dtype

COMPILE_MIN_ELEMENTS = 1 << 16  # B T H D from which compiling the per-token work pays (a 250k model's layer: 2^17)
COMPILE_SETTINGS = ("auto", "on", "off")
STOCK_COMPILE = os.environ.get("FSN_STOCK_COMPILE", "auto")
_COMPILED: Dict[str, Callable] = {}
_COMPILE_FAILED = []
_CXX = shutil.which(os.environ.get("CXX", "g++")) is not None  # a C++ compiler for inductor's CPU kernels


def compile_wanted(theta: Tensor, packed: bool, setting: Optional[str] = None) -> bool:
    """Whether the ops run their per-token work compiled: ``setting`` (default
    ``STOCK_COMPILE``) "on", or "auto" on a CPU with a C++ compiler for unpacked inputs of
    at least COMPILE_MIN_ELEMENTS elements; never after a failed compile, never packed."""
    setting = STOCK_COMPILE if setting is None else setting
    if setting not in COMPILE_SETTINGS:
        raise ValueError(f"FSN_STOCK_COMPILE must be one of {COMPILE_SETTINGS}, got {setting!r}")
    if setting == "off" or packed or _COMPILE_FAILED:
        return False
    if setting == "on":
        return True
    return theta.device.type == "cpu" and theta.numel() >= COMPILE_MIN_ELEMENTS and _CXX


def _run(name: str, fn: Callable, *args):
    """``fn(*args)`` through its cached ``torch.compile`` (dynamic shapes); on a compile
    failure one warning, then eager for good."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=True)
    try:
        return _COMPILED[name](*args)
    except Exception as e:  # noqa: BLE001 - no compiler, an unsupported platform: stay correct, eager
        _COMPILE_FAILED.append(repr(e))
        warnings.warn(f"the stock path's per-token work could not be compiled ({type(e).__name__}: {e}); "
                      "running it eagerly (set FSN_STOCK_COMPILE=off to skip the attempt)", RuntimeWarning)
        return fn(*args)


# ------------------------------------------------------------------ non-finite inputs
def poison_like_reference(out: Tensor, lse: Tensor, theta: Tensor, gate: Tensor, omega: Optional[Tensor],
                          cu_seqlens: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """out (B, T, H, D) and lse (B, H, T) made non-finite (NaN) exactly where the reference's
    are, given the inputs; a no-op (one reduction of each input) when they are finite.

    The reference, per head: a non-finite gate at token t makes the scores of row t, so
    row t of out and lse, NaN; a non-finite rotary phase at token u (theta there, or omega:
    ``inf * 0`` at position 0) makes the scores column u NaN, so every row t >= u; a
    non-finite theta at (u, d) makes ``z_u`` NaN, so out at oscillator d in every row of
    the sequence (a probability 0 times NaN in the value sums is NaN)."""
    finite = [bool(torch.isfinite(x.sum())) for x in (theta, gate) + (() if omega is None else (omega,))]
    if all(finite):
        return out, lse
    B, T, H, D = theta.shape
    seq = torch.zeros(T, dtype=torch.long, device=theta.device)
    if cu_seqlens is not None:
        seq = torch.searchsorted(cu_seqlens[1:-1].long(), torch.arange(T, device=theta.device), right=True)
    bad_theta = ~torch.isfinite(theta)  # (B, T, H, D)
    bad_phase = bad_theta.any(-1)  # (B, T, H)
    if omega is not None:
        bad_phase = bad_phase | (~torch.isfinite(omega)).any(-1)
    # rows t >= u of u's sequence: a running "any" along t, restarted at each sequence
    rows = torch.zeros_like(bad_phase)
    n_seq = int(seq.max()) + 1 if T else 0
    for s in range(n_seq):
        m = seq == s
        rows[:, m] = bad_phase[:, m].to(torch.int8).cummax(1).values.bool()
    rows = rows | (~torch.isfinite(gate)).any(-1)
    cols = torch.zeros_like(bad_theta)  # (B, T, H, D): oscillator d of every row of u's sequence
    for s in range(n_seq):
        m = seq == s
        cols[:, m] = bad_theta[:, m].any(1, keepdim=True)
    nan = torch.tensor(float("nan"), dtype=out.dtype, device=out.device)
    out = torch.where(rows[..., None] | cols, nan, out)
    lse = torch.where(rows.transpose(1, 2), nan.to(lse.dtype), lse)
    return out, lse


# --------------------------------------------------------------------------- the ops
@torch.library.custom_op("fsn::stock_attention_fwd", mutates_args=())
def _fwd_op(theta: Tensor, gate: Tensor, coupling_real: Tensor, omega: Optional[Tensor], scale: float,
            cu_seqlens: Optional[Tensor], fused: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dtheta (B, T, H, D), lse (B, H, T), then o, q, k, v (B, T, H, W + 2) each);
    ``fused``: the per-token work through ``torch.compile`` (unpacked inputs only)."""
    coeffs = stock.coefficients(coupling_real)
    if cu_seqlens is not None:
        res = stock.forward_packed(theta, gate, coeffs, omega, scale, cu_seqlens)
    elif fused and not _COMPILE_FAILED:
        res = _run("forward", stock.forward, theta, gate, coeffs, omega, scale)
    else:
        res = stock.forward(theta, gate, coeffs, omega, scale)
    dtheta, lse = poison_like_reference(res[0], res[1], theta, gate, omega, cu_seqlens)
    return (dtheta, lse.contiguous(), *(x.contiguous() for x in res[2:]))


@_fwd_op.register_fake
def _(theta, gate, coupling_real, omega, scale, cu_seqlens, fused):
    B, T, H, D = theta.shape
    wide = [theta.new_empty((B, T, H, 2 * coupling_real.shape[2] * D + 2)) for _ in range(4)]
    return (torch.empty_like(theta), theta.new_empty((B, H, T)), *wide)


@torch.library.custom_op("fsn::stock_attention_bwd", mutates_args=())
def _bwd_op(grad: Tensor, theta: Tensor, gate: Tensor, coupling_real: Tensor, omega: Optional[Tensor], scale: float,
            cu_seqlens: Optional[Tensor], o: Tensor, lse: Tensor, q: Tensor, k: Tensor,
            v: Tensor, fused: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(d theta, d gate, d coupling_real) from the forward's o, lse, q, k, v; the harmonics
    are recomputed."""
    coeffs = stock.coefficients(coupling_real)
    if cu_seqlens is not None:
        d_theta, d_gate, d_coeffs = stock.backward_packed(grad, theta, gate, coeffs, omega, scale, cu_seqlens,
                                                          o, lse, q, k, v)
    elif fused and not _COMPILE_FAILED:
        d_theta, d_gate, d_coeffs = _run("backward", stock.backward, grad, theta, gate, coeffs, omega, scale,
                                         o, lse, q, k, v)
    else:
        d_theta, d_gate, d_coeffs = stock.backward(grad, theta, gate, coeffs, omega, scale, o, lse, q, k, v)
    d_coupling = d_coeffs.unflatten(0, (2, 2)).permute(2, 4, 3, 0, 1)  # (H, D, NH, k/l, re/im)
    return d_theta.contiguous(), d_gate.contiguous(), d_coupling.contiguous()


@_bwd_op.register_fake
def _(grad, theta, gate, coupling_real, omega, scale, cu_seqlens, o, lse, q, k, v, fused):
    return torch.empty_like(theta), torch.empty_like(gate), torch.empty_like(coupling_real)


class StockAttentionFunction(torch.autograd.Function):
    """Autograd Function over the two custom ops (opaque to ``torch.compile``: no graph
    break, eager numerics). Inputs in the compute dtype: theta, gate (B, T, H, D);
    coupling_real (H, D, NH, 2, 2); omega (H, D) or None. Saves the SDPA inputs, o and lse."""

    @staticmethod
    def forward(ctx, theta, gate, coupling_real, omega, scale, cu_seqlens, fused):
        dtheta, lse, o, q, k, v = _fwd_op(theta, gate, coupling_real, omega, scale, cu_seqlens, fused)
        ctx.save_for_backward(theta, gate, coupling_real, omega, cu_seqlens, o, lse, q, k, v)
        ctx.scale, ctx.fused = scale, fused
        ctx.mark_non_differentiable(lse)
        return dtheta, lse

    @staticmethod
    def backward(ctx, grad, _grad_lse):
        theta, gate, coupling_real, omega, cu_seqlens, o, lse, q, k, v = ctx.saved_tensors
        d_theta, d_gate, d_coupling = _bwd_op(grad.contiguous(), theta, gate, coupling_real, omega, ctx.scale,
                                              cu_seqlens, o, lse, q, k, v, ctx.fused)
        return d_theta, d_gate, d_coupling, None, None, None, None


def stock_frustrated_attention(theta: Tensor, gate: Tensor, coupling: Tensor, omega: Optional[Tensor], scale: float,
                               cu_seqlens: Optional[Tensor] = None):
    """The op by the folded composition (``stock.py``). Inputs are not validated (the
    public API does that).

    Args:
        theta, gate: (B, T, H, D) real; coupling complex (H, D, NH, 2); omega (H, D) or
            None; scale: float; cu_seqlens: int32 (S + 1,) packed sequences (B = 1) or None.

    Returns:
        ``(dtheta, lse)``: dtheta (B, T, H, D) in theta's dtype; lse (B, H, T) natural log,
        float64 for float64 inputs and float32 otherwise.
    """
    B, T, H, D = theta.shape
    cdt = compute_dtype(theta.dtype, gate.dtype)
    if B * T == 0:
        return theta.new_zeros(theta.shape), theta.new_zeros((B, H, T), dtype=cdt)
    om = None if omega is None else omega.to(cdt)
    coupling_real = torch.view_as_real(coupling.resolve_conj()).to(cdt)
    backward_follows = torch.is_grad_enabled() and any(x.requires_grad for x in (theta, gate, coupling))
    fused = backward_follows and compile_wanted(theta, cu_seqlens is not None)
    out, lse = StockAttentionFunction.apply(theta.to(cdt).contiguous(), gate.to(cdt).contiguous(), coupling_real, om,
                                            float(scale), cu_seqlens, fused)
    return out.to(theta.dtype), lse
