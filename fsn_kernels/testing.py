"""Testing helpers shared by the tests and the benchmarks: one input factory, one
"output and gradients" helper (for the op, the float64 reference, or any function with
the op's signature), error measures, an assertion that says how many elements mismatch
and where, and a NaN-poisoning allocator. Needs only torch."""
from __future__ import annotations

import contextlib
import math
import os
from typing import Callable

import torch

CUDA = torch.cuda.is_available()
TRITON_AVAILABLE = CUDA or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
TRITON_SKIP_REASON = "the Triton kernels need a CUDA device, or TRITON_INTERPRET=1 set before triton is imported"
DEVICE = "cuda" if CUDA else "cpu"


def make_inputs(B, T, H, D, NH, *, omega="random", dtype=torch.float32, device=DEVICE, seed=0,
                theta_scale=2.0, requires_grad=False):
    """Random op inputs ``(theta, gate, coupling, omega)``; no element is exactly zero.

    theta ~ N(0, theta_scale^2), gate ~ U(0.25, 1.75) (positive, like the model's softplus),
    coupling ~ complex N(0, 1) per part. ``omega``: "random" (N(0, 0.3^2)), "rope"
    (``10000 ** (-d / D)``, the model's rotary drift) or None. float64 inputs get
    complex128 coupling and float64 omega; every other dtype complex64 and float32 omega.
    All draws are float64 from ``seed`` and then cast, so a dtype changes only rounding.
    """
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(B, T, H, D, generator=gen, dtype=torch.float64) * theta_scale
    gate = torch.rand(B, T, H, D, generator=gen, dtype=torch.float64) * 1.5 + 0.25
    coupling = torch.view_as_complex(torch.randn(H, D, NH, 2, 2, generator=gen, dtype=torch.float64))
    if omega == "random":
        om = torch.randn(H, D, generator=gen, dtype=torch.float64) * 0.3
    elif omega == "rope":
        om = (10000.0 ** (-torch.arange(D, dtype=torch.float64) / D)).expand(H, D).contiguous()
    elif omega is None:
        om = None
    else:
        raise ValueError(f"omega must be 'random', 'rope' or None, got {omega!r}")
    wide = dtype == torch.float64
    theta, gate = theta.to(device, dtype), gate.to(device, dtype)
    coupling = coupling.to(device, torch.complex128 if wide else torch.complex64)
    om = None if om is None else om.to(device, torch.float64 if wide else torch.float32)
    if requires_grad:
        for x in (theta, gate, coupling):
            x.requires_grad_(True)
    return theta, gate, coupling, om


def to_double(*xs):
    """Detached float64 / complex128 copies (None passes through)."""
    return [None if x is None else x.detach().to(torch.complex128 if x.is_complex() else torch.float64) for x in xs]


def output_and_grads(fn: Callable, theta, gate, coupling, omega, grad_out, scale=None):
    """``[out, d theta, d gate, d coupling]`` of ``fn(theta, gate, coupling, omega, scale)``
    under the upstream gradient ``grad_out``, on fresh leaves (the inputs are untouched)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in (theta, gate, coupling)]
    out = fn(*leaves, omega, scale)
    # out is upcast to grad_out's dtype, so a float64 upstream is applied exactly
    grads = torch.autograd.grad((out.to(grad_out.dtype) * grad_out).sum(), leaves)
    return [out.detach(), *grads]


def reference_output_and_grads(theta, gate, coupling, omega, grad_out, scale=None):
    """:func:`output_and_grads` of the plain-PyTorch reference in float64."""
    from fsn_kernels import naive_frustrated_attention

    th, g, c, om, go = to_double(theta, gate, coupling, omega, grad_out)
    return output_and_grads(lambda *a: naive_frustrated_attention(*a)[0], th, g, c, om, go, scale)


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max(1, max |ref|), complex compared as (re, im)."""
    out, ref = out.detach(), ref.detach().to(out.device)
    if out.is_complex() or ref.is_complex():
        out, ref = torch.view_as_real(out.to(torch.complex128)), torch.view_as_real(ref.to(torch.complex128))
    out, ref = out.double(), ref.double()
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1.0)) if ref.numel() else 0.0


def assert_close(actual, expected, atol, rtol, name="tensor"):
    """Like ``torch.testing.assert_close``, reporting how many elements mismatch, the
    largest error, the first few places and whether NaN/inf patterns differ."""
    actual = actual.detach()
    expected = expected.detach().to(actual.device)
    if actual.is_complex() or expected.is_complex():
        actual = torch.view_as_real(actual.to(torch.complex128))
        expected = torch.view_as_real(expected.to(torch.complex128))
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    inf_a, inf_e = torch.isinf(a), torch.isinf(e)
    assert torch.equal(nan_a, nan_e), f"{name}: NaN mismatch, {int(nan_a.sum())} NaN vs {int(nan_e.sum())} expected"
    assert torch.equal(inf_a, inf_e), f"{name}: inf mismatch, {int(inf_a.sum())} inf vs {int(inf_e.sum())} expected"
    finite = torch.isfinite(e)
    err = (a - e).abs().where(finite, torch.zeros_like(a))
    bad = err > atol + rtol * e.abs().where(finite, torch.zeros_like(e))
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{bad.numel()} elements mismatch (atol={atol}, rtol={rtol}); "
            f"max abs err {err.max().item():.3e}; first at {idx}: "
            f"{[a[tuple(i)].item() for i in idx]} vs {[e[tuple(i)].item() for i in idx]}"
        )


def assert_grads_close(got, want, atol, rtol, names=("dtheta", "grad theta", "grad gate", "grad coupling")):
    """Compare :func:`output_and_grads` lists; each tolerance scales with max(1, max |want|)."""
    for name, a, b in zip(names, got, want):
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        assert_close(a, b, atol * scale, rtol, name)


@contextlib.contextmanager
def nan_poisoned_allocations():
    """Make ``torch.empty`` / ``torch.empty_like`` return NaN-filled float tensors, so an
    output element a kernel never writes cannot pass a comparison."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(t):
        if t.is_floating_point():
            t.fill_(math.nan)
        return t

    torch.empty = lambda *a, **k: poison(real_empty(*a, **k))
    torch.empty_like = lambda *a, **k: poison(real_empty_like(*a, **k))
    try:
        yield
    finally:
        torch.empty, torch.empty_like = real_empty, real_empty_like


def needs_triton():
    """pytest mark: skip, with the reason, where the Triton kernels cannot run."""
    import pytest

    return pytest.mark.skipif(not TRITON_AVAILABLE, reason=TRITON_SKIP_REASON)


def backend_params():
    """pytest parameters for the backends: "reference" and "sdpa" always, "triton"
    skipped with its reason where the kernels cannot run."""
    import pytest

    return ["reference", "sdpa", pytest.param("triton", marks=needs_triton())]
