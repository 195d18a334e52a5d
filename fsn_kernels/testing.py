"""Testing helpers shared by the tests and the benchmarks: one input factory, one
"output and gradients" helper (for the op, the float64 reference, or any function with
the op's signature), the tolerance table (tests and benchmarks), error measures, an assertion that says how many
elements mismatch and where, a NaN-poisoning allocator and the GPU parity check."""
from __future__ import annotations

import contextlib
import math
import os
from typing import Callable, NamedTuple

import torch

from .frustrated_attention import frustrated_attention, naive_frustrated_attention

CUDA = torch.cuda.is_available()
TRITON_AVAILABLE = CUDA or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
TRITON_SKIP_REASON = "the Triton kernels need a CUDA device, or TRITON_INTERPRET=1 set before triton is imported"
DEVICE = "cuda" if CUDA else "cpu"


class Tolerance(NamedTuple):
    """``atol``, ``rtol`` of one comparison (``assert_close(a, b, *TOLERANCES[name], ...)``).

    Entries named "benchmark-<dtype>" and "parity-<mode>" are bounds on the relative
    error ``max |x - ref64| / max(1, max |ref64|)`` (``max_rel_err``), so only their atol
    is used (rtol 0): the benchmarks' check of an implementation (``benchmark_tolerance``)
    and the GPU parity rule's absolute floor (``parity_floor``)."""

    atol: float
    rtol: float


# Every tolerance of the tests and the benchmarks against the float64 reference, in one place.
TOLERANCES = {
    # fp32 operands: trig, softmax and accumulation are fp32 and the matmuls use IEEE fp32
    # products, so errors are a few fp32 ulps of the O(1) outputs.
    "forward": Tolerance(2e-5, 1e-4),
    "decode": Tolerance(2e-5, 1e-4),
    # gradients sum longer chains of fp32 products (scaled by max(1, max |grad|))
    "backward": Tolerance(5e-5, 2e-4),
    "backward-small-tiles": Tolerance(2e-4, 2e-4),  # 16-row tiles: more partial sums
    # fp16 operands (features rounded to 11 bits, p rounded before p @ v): ~1e-3 relative
    "forward-fp16": Tolerance(5e-3, 5e-3),
    "backward-fp16": Tolerance(2e-2, 2e-2),  # P and dS also rounded to fp16 before their matmuls
    # fp16 / bf16 phases in the cache and inputs, upcast and computed in fp32
    "decode-fp16": Tolerance(2e-3, 1e-2),
    "decode-bf16": Tolerance(2e-2, 1e-2),
    # the same decode step over different split counts: rounding of the merge only
    "decode-splits": Tolerance(1e-6, 1e-6),
    # |theta| up to 1e3: fp32 phases carry an absolute rounding of |theta| * 2**-24
    # (~6e-5 at 1e3), which trig turns into an absolute error of the same size per term;
    # atol scales with (1 + max |want|)
    "large-phases": Tolerance(2e-3, 0.0),
    # the op against the closed forms of its special cases (Kuramoto, Sakaguchi, Daido)
    "closed-forms": Tolerance(3e-5, 1e-4),
    # the op against itself on transformed inputs (a common phase shift, theta + 2 pi k):
    # both sides round their fp32 phases
    "invariance": Tolerance(2e-4, 1e-4),
    # packed sequences vs each sequence alone: the coupling gradient's partials are summed
    # over token blocks that span sequences, rounding only
    "packing": Tolerance(1e-5, 1e-5),
    # the stock-PyTorch backend ("stock"): fp32 features and one fp32 SDPA call, or float64
    "stock-float32": Tolerance(2e-5, 2e-5),
    "stock-float64": Tolerance(1e-11, 1e-11),
    # the benchmarks check every implementation they time, on the output and gradients,
    # at the benchmark shapes (long rows, GPU operand modes): relative error bounds
    "benchmark-float32": Tolerance(2e-3, 0.0),
    "benchmark-float64": Tolerance(1e-9, 0.0),
    "benchmark-bfloat16": Tolerance(6e-2, 0.0),
    "benchmark-float16": Tolerance(2e-2, 0.0),
    # GPU parity (``parity_check``): fused_err <= 2 * baseline_err + this floor, per mode
    "parity-float32": Tolerance(1e-5, 0.0),
    "parity-bfloat16": Tolerance(1e-3, 0.0),
    "parity-float16": Tolerance(1e-4, 0.0),
    "parity-float32-autocast-bf16": Tolerance(1e-3, 0.0),
}


def benchmark_tolerance(dtype: torch.dtype) -> float:
    """The benchmarks' bound on ``max_rel_err`` of an implementation in ``dtype``."""
    return TOLERANCES["benchmark-" + str(dtype).replace("torch.", "")].atol


def parity_floor(mode: str) -> float:
    """The absolute floor of the GPU parity rule for ``mode`` (a name of ``PARITY_MODES``)."""
    return TOLERANCES["parity-" + mode].atol


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


def assert_grads_close(got, want, atol, rtol, names=("out", "dtheta", "dgate", "dcoupling")):
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
    """pytest parameters for the backends: "reference" and "stock" always, "triton"
    skipped with its reason where the kernels cannot run."""
    import pytest

    return ["reference", "stock", pytest.param("triton", marks=needs_triton())]


# ------------------------------------------------------------------------- GPU parity
PARITY_SHAPES = ["2,1000,4,32,2", "1,2048,16,32,2", "3,63,2,64,2", "2,511,8,32,4", "2,777,4,60,1"]
# tensor dtype, or fp32 tensors under bf16 autocast; each with its floor in TOLERANCES
PARITY_MODES = tuple(name[len("parity-"):] for name in TOLERANCES if name.startswith("parity-"))
PARITY_RULE = "fused_err <= 2 * baseline_err + floor; err = max|x - ref64| / max(1, max|ref64|)"


def lowp_reference(theta, gate, coupling, omega, scale=None):
    """The reference math with every tensor and matmul in theta's dtype (no upcast): what a
    user gets from plain PyTorch in bf16."""
    return naive_frustrated_attention(theta, gate, coupling, omega, scale, compute_dtype=theta.dtype)[0]


def parity_check(shape, mode, device):
    """Errors of the fused op and of its same-precision baseline vs float64 at one shape,
    by flash-attention's rule (``PARITY_RULE``): the kernel's error is at most 2x the
    error of plain PyTorch in the same precision (fp32: the fp32 reference) plus
    ``parity_floor(mode)``. ``shape``: (B, T, H, D, NH). ``mode``: a name of ``PARITY_MODES``
    (or a torch dtype): "float32", "bfloat16", "float16", or "float32-autocast-bf16"
    (fp32 tensors, the op called under ``torch.autocast(device, bfloat16)``). Returns a
    record with one check per quantity and the verdict ``ok``."""
    mode = str(mode).replace("torch.", "")
    if mode not in PARITY_MODES:
        raise ValueError(f"mode must be one of {', '.join(PARITY_MODES)}, got {mode!r}")
    autocast = mode.endswith("-autocast-bf16")
    dtype = torch.float32 if autocast else getattr(torch, mode)
    B, T, H, D, NH = shape
    theta, gate, coupling, omega = make_inputs(B, T, H, D, NH, omega="rope", device=device)
    upstream = torch.randn(B, T, H, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device)

    x_th, x_g = theta.to(dtype), gate.to(dtype)  # every side, float64 included, sees the same rounded inputs
    ref = reference_output_and_grads(x_th, x_g, coupling, omega, upstream)

    def fused_fn(*a):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            return frustrated_attention(*a, backend="triton")

    fused = output_and_grads(fused_fn, x_th, x_g, coupling, omega, upstream)
    if mode == "float32":
        base = output_and_grads(lambda *a: frustrated_attention(*a, backend="reference"), x_th, x_g, coupling, omega,
                                upstream)
        base_name = "torch reference, fp32"
    else:
        low = torch.bfloat16 if autocast else dtype
        base = output_and_grads(lowp_reference, x_th.to(low), x_g.to(low), coupling, omega, upstream.to(low))
        base_name = f"plain PyTorch in {str(low).replace('torch.', '')}"
    rows = []
    for name, f, b, r in zip(("out", "dtheta", "dgate", "dcoupling"), fused, base, ref):
        ef, eb = max_rel_err(f, r), max_rel_err(b, r)
        bound = 2 * eb + parity_floor(mode)
        rows.append(dict(quantity=name, fused_err=ef, baseline_err=eb, bound=bound, ok=bool(ef <= bound)))
    return dict(shape=dict(B=B, T=T, H=H, D=D, NH=NH), dtype=mode,
                baseline=base_name, checks=rows, ok=all(r["ok"] for r in rows))
