"""Public functions: the op and its decode step. Each checks its inputs
(``validation.py``) and dispatches to one backend.

"triton" runs the fused kernels through the autograd Function and the registered custom
ops of ``triton_function.py`` (decode: the decode kernels of ``decoding.py``). "stock" is
the stock-PyTorch composition (``stock.py``, its custom ops and autograd Function in
``stock_function.py``; decode: ``stock_decode.py``) and "reference" the T x T
float64-capable reference (``naive.py``, differentiated by torch autograd).
:func:`frustrated_attention_decode` is one inference step over a phase cache.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .constants import DOT_IEEE
from .decoding import decode_fwd
from .naive import decode_reference, naive_frustrated_attention
from .stock_decode import decode_stock
from .stock_function import stock_frustrated_attention
from .triton_function import FrustratedAttentionFunction, matmul_dot_mode
from .validation import (
    check_cu_seqlens,
    check_decode_inputs,
    check_inputs,
    check_kernel_limits,
    check_triton_runnable,
    resolve_backend,
)


# ------------------------------------------------------------------------ public API
def frustrated_attention(
    theta: Tensor,
    gate: Tensor,
    coupling: Tensor,
    omega: Optional[Tensor] = None,
    scale: Optional[float] = None,
    *,
    cu_seqlens: Optional[Tensor] = None,
    return_lse: bool = False,
    backend: str = "auto",
    deterministic: bool = True,
):
    """Frustrated-synchronization attention (README beside this file, "The math"): Kuramoto phase coupling through a
    learned complex kernel over harmonics and a one-step delay.

    Args:
        theta: (B, T, H, D) real phases, float32 / bfloat16 / float16, or float64 (the
            "stock" and "reference" backends compute it in float64; "auto" routes float64
            to "stock", "triton" refuses it). Any real number is an angle.
        gate: (B, T, H, D) real query gate g.
        coupling: complex (H, D, NH, 2), 1 <= NH <= 8: ``[..., n-1, 0]`` is K_n (static),
            ``[..., n-1, 1]`` is L_n (one-step delay).
        omega: (H, D) real rotary drift per position, or None. Takes no gradient.
        scale: positive finite score scale; None means ``D ** -0.5``.
        cu_seqlens: packed variable-length sequences: int32 (S + 1,) boundaries, starting
            at 0, non-decreasing, ending at T, with B = 1; sequence ``s`` is
            ``theta[0, cu_seqlens[s]:cu_seqlens[s+1]]``. Each sequence attends only
            within itself, its rotary positions start at 0 and its last token has no
            successor: the result equals the op on each sequence separately. (Validating
            it reads it on the host once per call.)
        return_lse: also return the row log-sum-exp of the scores.
        backend: "auto" (the Triton kernels on CUDA for float32/bf16/fp16 where Triton
            is usable, "stock" everywhere else), "triton" (the kernels; CUDA, or CPU under
            ``TRITON_INTERPRET=1``), "stock" (stock PyTorch: per-token features and one
            causal SDPA call, memory linear in T where PyTorch's SDPA kernel is),
            "reference" (the T x T reference of ``naive.py``, the tests' ground truth).
            The old name "torch" raises a ValueError naming "reference" and "stock";
            "sdpa" (the stock path's old name) runs "stock" with a DeprecationWarning.
        deterministic: accepted for flash-attn compatibility. The backward uses no atomics
            and reduces coupling partials in a fixed order, so it is always
            deterministic; the flag changes nothing and costs nothing.

    Returns:
        out (B, T, H, D) in theta's dtype, the phase increment; with ``return_lse``
        the pair (out, lse), lse (B, H, T) in natural log, float32 (float64 from the
        "stock" and "reference" backends for float64 inputs).

    Precision: in the kernels phases, trig, the softmax and all accumulation are fp32.
    Matmul operands are fp32 with IEEE products for float32 inputs, bf16 for bfloat16
    inputs and fp16 for float16 inputs; under CUDA autocast the autocast dtype decides.
    Under the CPU interpreter the matmuls are always fp32 (its low-precision dots are
    wrong), so low-precision inputs are only loaded and stored in their dtype there.

    Equivalent PyTorch code (per batch and head, ``t, u`` in ``0..T-1``)::

        phi = theta + omega * t                                   # omega = 0 if None
        s = scale * (gate * cos(phi)) @ cos(phi).T + scale * (gate * sin(phi)) @ sin(phi).T
        A = softmax(s masked to u <= t)
        z = exp(1j * n * theta)                                   # (T, NH, D), n = 1..NH
        O = K * (A @ z) + L * (A_strict @ z[1:])                  # A_strict: u < t only
        out = (exp(-1j * n * theta) * O).imag.sum(n)
    """
    scale = check_inputs(theta, gate, coupling, omega, scale, backend)
    max_seqlen = check_cu_seqlens(cu_seqlens, theta)
    impl = resolve_backend(backend, theta.device, torch.float64 in (theta.dtype, gate.dtype))
    if impl == "reference":
        out, lse = _reference_packed(theta, gate, coupling, omega, scale, cu_seqlens)
        out = out.to(theta.dtype)
    elif impl == "stock":
        out, lse = stock_frustrated_attention(theta, gate, coupling, omega, scale, cu_seqlens)
    else:
        check_triton_runnable(theta.device)
        dot = matmul_dot_mode(theta)
        check_kernel_limits(theta.shape[3], coupling.shape[2], dot == DOT_IEEE, theta.device.type == "cuda")
        coupling_real = torch.view_as_real(coupling.resolve_conj()).float().contiguous()
        out, lse = FrustratedAttentionFunction.apply(
            theta.contiguous(), gate.contiguous(), coupling_real,
            None if omega is None else omega.float().contiguous(), scale, dot, cu_seqlens, max_seqlen or 0,
        )
    return (out, lse) if return_lse else out


def _reference_packed(theta, gate, coupling, omega, scale, cu_seqlens):
    """The reference, sequence by sequence when packed: (out, lse)."""
    if cu_seqlens is None:
        out, lse, _ = naive_frustrated_attention(theta, gate, coupling, omega, scale)
        return out, lse
    bounds = cu_seqlens.tolist()
    parts = [naive_frustrated_attention(theta[:, a:b], gate[:, a:b], coupling, omega, scale)
             for a, b in zip(bounds[:-1], bounds[1:])]
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 2)


def frustrated_attention_decode(
    theta_new: Tensor,
    gate_new: Tensor,
    coupling: Tensor,
    omega: Optional[Tensor] = None,
    scale: Optional[float] = None,
    *,
    phase_cache: Tensor,
    cache_seqlens: Tensor,
    backend: str = "auto",
    num_splits: Optional[int] = None,
    check_seqlens: bool = True,
) -> Tensor:
    """One decode step of :func:`frustrated_attention` with a preallocated phase cache.

    For each sequence ``b`` with ``t = cache_seqlens[b]`` tokens in ``phase_cache[b, :t]``,
    returns row ``t`` of ``frustrated_attention(cat(phase_cache[b, :t], theta_new[b]), ...)``
    (the new token at position ``t``: rotary phase ``theta + omega * t``, and the last
    cached token's delay value is the new token's ``exp(i n theta)``), and writes
    ``theta_new[b, 0]`` into ``phase_cache[b, t]`` in place. Nothing else of the cache is
    written. Not differentiable (inference); cache_seqlens is not advanced.

    Args:
        theta_new, gate_new: (B, 1, H, D) real (float32 / bfloat16 / float16; float64 on
            the "stock" and "reference" backends), the new token's phases and gate.
        coupling: complex (H, D, NH, 2), 1 <= NH <= 8, as in :func:`frustrated_attention`.
        omega: (H, D) real rotary drift or None.
        scale: positive score scale; None means ``D ** -0.5``.
        phase_cache: (B, T_max, H, D) contiguous, theta_new's dtype; rows ``>= t`` may hold
            anything (they are not read).
        cache_seqlens: (B,) int32, tokens already cached per sequence (ragged batches),
            each in ``[0, T_max - 1]``.
        backend: "auto" (the kernels on CUDA for float32/bf16/fp16 where Triton is
            usable, "stock" otherwise), "triton" (CUDA, or CPU under ``TRITON_INTERPRET=1``),
            "stock" (stock PyTorch over the phase cache, O(cache length) per step:
            ``stock_decode.py``), "reference" (:func:`naive_frustrated_attention` on each
            prefix, O(length^2) per step).
        num_splits: splits of the cache length (flash-decoding); default: about 4
            programs per SM, one split off CUDA. Results do not depend on it beyond rounding.
        check_seqlens: check the range of cache_seqlens (one device sync); a caller that
            tracks lengths on the host may pass False.

    Returns:
        out (B, 1, H, D) in theta_new's dtype. On meta tensors only its shape and dtype
        (nothing is read or written).
    """
    scale = check_decode_inputs(theta_new, gate_new, coupling, omega, scale, phase_cache, cache_seqlens, backend,
                                num_splits, check_seqlens)
    impl = resolve_backend(backend, theta_new.device, torch.float64 in (theta_new.dtype, gate_new.dtype))
    with torch.no_grad():
        if theta_new.device.type == "meta":
            return torch.empty_like(theta_new)
        if impl == "reference":
            return decode_reference(theta_new, gate_new, coupling, omega, scale, phase_cache, cache_seqlens)
        if impl == "stock":
            return decode_stock(theta_new, gate_new, coupling, omega, scale, phase_cache, cache_seqlens)
        check_triton_runnable(theta_new.device)
        coupling_real = torch.view_as_real(coupling.resolve_conj()).float().contiguous()
        return decode_fwd(theta_new.contiguous(), gate_new.contiguous(), coupling_real,
                          None if omega is None else omega.float().contiguous(), scale, phase_cache,
                          cache_seqlens, num_splits)
