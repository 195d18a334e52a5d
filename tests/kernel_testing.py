"""Shared test utilities: input factories, a NaN-poisoning allocator and an assertion that
says how many elements mismatch, where, and whether NaN/inf differ."""
from __future__ import annotations

import contextlib
import os

import torch

TRITON_AVAILABLE = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(B, T, H, D, NH, omega=True, dtype=torch.float32, device=DEVICE, theta_scale=2.0,
                generator=None, requires_grad=False):
    """Random (theta, gate, coupling, omega) of the op's shapes; never zeros."""
    g = generator
    theta = torch.randn(B, T, H, D, generator=g, dtype=torch.float64) * theta_scale
    gate = torch.rand(B, T, H, D, generator=g, dtype=torch.float64) * 1.5 + 0.25
    coupling = torch.randn(H, D, NH, 2, 2, generator=g, dtype=torch.float64)
    om = torch.randn(H, D, generator=g, dtype=torch.float64) * 0.3 if omega else None
    theta, gate = theta.to(device, dtype), gate.to(device, dtype)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    coupling = torch.view_as_complex(coupling).to(device, cdt)
    om = om.to(device, torch.float32 if dtype != torch.float64 else dtype) if om is not None else None
    if requires_grad:
        theta.requires_grad_(True)
        gate.requires_grad_(True)
        coupling.requires_grad_(True)
    return theta, gate, coupling, om


def to_double(*xs):
    out = []
    for x in xs:
        if x is None:
            out.append(None)
        elif x.is_complex():
            out.append(x.detach().to(torch.complex128))
        else:
            out.append(x.detach().double())
    return out


def assert_close(actual, expected, atol, rtol, name="tensor"):
    """Like torch.testing.assert_close, with a report of the mismatching elements."""
    actual = actual.detach()
    expected = expected.detach().to(actual.device)
    if actual.is_complex():
        actual, expected = torch.view_as_real(actual), torch.view_as_real(expected.to(actual.dtype))
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


@contextlib.contextmanager
def nan_poisoned_allocations():
    """Make torch.empty / torch.empty_like return NaN-filled float tensors, so an output
    element the kernel never writes cannot pass a comparison."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    torch.empty = lambda *a, **k: poison(real_empty(*a, **k))
    torch.empty_like = lambda *a, **k: poison(real_empty_like(*a, **k))
    try:
        yield
    finally:
        torch.empty, torch.empty_like = real_empty, real_empty_like
