"""Shared pieces of the benchmark suite: inputs, the stock-PyTorch composition, the
matched-FLOP SDPA yardstick, FLOP counts, timing, memory and the result writer.

Used by the pytest-benchmark tests (``pytest benchmarks/``), by ``benchmarks/run_gpu_suite.sh``
and by ``benchmarks/gpu_parity.py``. Nothing here needs a GPU to import.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from fsn_kernels import naive_frustrated_attention, testing
from fsn_model.provenance import device_name, git_commit

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

# --------------------------------------------------------------------------- shapes
# GPU grid: D = 32, NH = 2, H * D = 512, B * T fixed, T from 512 to 16384, plus a D = 64 row.
GPU_TOKENS = int(os.environ.get("FSN_BENCH_TOKENS", "16384"))  # B * T
GPU_T = [512, 1024, 2048, 4096, 8192, 16384]
GPU_SHAPES = [dict(B=max(GPU_TOKENS // T, 1), T=T, H=16, D=32, NH=2) for T in GPU_T] + [
    dict(B=max(GPU_TOKENS // T, 1), T=T, H=8, D=64, NH=2) for T in (2048, 8192)
]
# CPU: small enough that the whole `pytest benchmarks/` stays well under a minute.
CPU_SHAPES = [dict(B=1, T=64, H=2, D=16, NH=2), dict(B=1, T=128, H=2, D=16, NH=2), dict(B=1, T=256, H=2, D=16, NH=2)]
CPU_FUSED_SHAPES = [dict(B=1, T=64, H=2, D=16, NH=2)]  # Triton interpreter: tiny only


def make_inputs(B, T, H, D, NH, device="cpu", dtype=torch.float32, requires_grad=True, seed=0):
    """The op's inputs with the model's rotary drift: ``fsn_kernels.testing.make_inputs``."""
    return testing.make_inputs(B, T, H, D, NH, omega="rope", dtype=dtype, device=device, seed=seed,
                               requires_grad=requires_grad)


# ------------------------------------------------------------------ the composition
def _pad_last(x: torch.Tensor, width: int) -> torch.Tensor:
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def composition_attention(theta, gate, coupling, omega=None, scale=None, *, split: int = 1):
    """The op from stock PyTorch: features in PyTorch and ONE causal SDPA call.

    No log-sum-exp is needed. Keys are shifted one place right and a "dummy" key is put
    at position 0 whose score for query t is the diagonal score, known in closed form:
    ``s[t,t] = scale * sum_d gate[t,d]`` (cos 0 = 1; an extra q/k channel carries it).
    Query t then sees the dummy (weight A[t,t]) and keys ``u = j - 1 < t`` (weights
    A[t,u]) under a plain causal mask, with exactly the causal softmax normaliser. Key
    slot j carries the folded value ``K z_{j-1} + L z_j`` (static value of u = j-1 and
    its delay value, the successor z_{u+1} = z_j: strictly causal by construction), as
    2*NH*D real channels, and a last channel 0; the dummy carries ``[0, ..., 0, 1]``, so
    the last output channel is A[t,t] and the static diagonal term adds
    ``A[t,t] K z_t``. Then demodulation. Value width 2*NH*D + 1: the narrowest stock
    formulation we know (unfolded static and delay values would need 4*NH*D + 1).

    Args:
        split: 1 = one SDPA call with q/k width 2D+1 and value width 2*NH*D+1 (padded to
            multiples of 8; PyTorch picks the memory-efficient or math backend);
            s > 1 = the values are cut into s chunks folded into the head axis, with q/k/v
            padded to the same width so the FlashAttention backend applies (scores are
            recomputed s times).
    Returns dtheta (B, T, H, D) in theta's dtype. Differentiable by autograd.
    """
    B, T, H, D = theta.shape
    NH = coupling.shape[2]
    scale = D ** -0.5 if scale is None else scale
    dt = theta.dtype
    cdt = torch.float64 if dt == torch.float64 else torch.float32  # features in fp32 (fp64 for fp64)
    th = theta.to(cdt).transpose(1, 2)  # (B, H, T, D)
    pos = torch.arange(T, device=theta.device, dtype=cdt)
    phi = th if omega is None else th + omega.to(cdt)[None, :, None, :] * pos[:, None]
    c, s = torch.cos(phi), torch.sin(phi)
    gs = gate.to(cdt).transpose(1, 2) * scale
    q = torch.cat([gs * c, gs * s, gs.sum(-1, keepdim=True)], -1)
    k = torch.cat([c, s, torch.zeros_like(c[..., :1])], -1)
    dummy_k = torch.zeros_like(k[:, :, :1])
    dummy_k[..., -1] = 1.0
    k = torch.cat([dummy_k, k[:, :, :-1]], 2)

    n = torch.arange(1, NH + 1, device=theta.device, dtype=cdt)
    ang = th[..., None, :] * n[:, None]  # (B, H, T, NH, D)
    zr, zi = torch.cos(ang), torch.sin(ang)
    z = torch.complex(zr, zi)
    cpl = coupling.to(z.dtype).permute(0, 2, 1, 3)  # (H, NH, D, 2)
    K, L = cpl[..., 0][None, :, None], cpl[..., 1][None, :, None]  # (1, H, 1, NH, D)
    folded = K * z[:, :, :-1] + L * z[:, :, 1:]  # slot j = u + 1: K z_u + L z_{u+1}, u = 0..T-2
    W = 2 * NH * D
    v = torch.cat([folded.real, folded.imag], -2).flatten(-2)  # (B, H, T-1, W)
    v = torch.cat([v.new_zeros(B, H, 1, W), v], 2)
    one = torch.zeros_like(v[..., :1])
    one[:, :, 0] = 1.0
    v = torch.cat([v, one], -1)  # (B, H, T, W + 1)

    q, k, v = q.to(dt), k.to(dt), v.to(dt)
    Wv = v.shape[-1]
    if split <= 1:
        wqk = _round_up(q.shape[-1], 8)
        o = F.scaled_dot_product_attention(
            _pad_last(q, wqk), _pad_last(k, wqk), _pad_last(v, _round_up(Wv, 8)), is_causal=True, scale=1.0
        )[..., :Wv]
    else:
        w = _round_up(max(q.shape[-1], math.ceil(Wv / split)), 8)
        vv = _pad_last(v, w * split).unflatten(-1, (split, w)).transpose(2, 3)  # (B, H, s, T, w)
        qq = _pad_last(q, w)[:, :, None].expand(B, H, split, T, w)
        kk = _pad_last(k, w)[:, :, None].expand(B, H, split, T, w)
        o = F.scaled_dot_product_attention(
            qq.reshape(B, H * split, T, w), kk.reshape(B, H * split, T, w), vv.reshape(B, H * split, T, w),
            is_causal=True, scale=1.0,
        )
        o = o.view(B, H, split, T, w).transpose(2, 3).reshape(B, H, T, split * w)[..., :Wv]
    o = o.to(cdt)
    a = o[..., -1:, None]  # A[t, t], (B, H, T, 1, 1)
    o_fold = o[..., :W].unflatten(-1, (2, NH, D))
    o_c = torch.complex(o_fold[..., 0, :, :], o_fold[..., 1, :, :]) + a * K * z
    # Im(exp(-i n theta) O) = cos(n theta) Im O - sin(n theta) Re O
    dtheta = (zr * o_c.imag - zi * o_c.real).sum(-2)
    return dtheta.transpose(1, 2).to(dt)


def sdpa_yardstick_inputs(B, T, H, D, NH, device="cpu", dtype=torch.float32, requires_grad=True):
    """Plain causal SDPA at matched FLOPs: head dim D * (1 + NH), so that
    ``4*B*H*T^2*Dh / 2`` equals the op's ``2*B*H*T^2*(2D + 2*NH*D) / 2``."""
    Dh = D * (1 + NH)
    gen = torch.Generator(device="cpu").manual_seed(0)
    qkv = [torch.randn(B, H, T, Dh, generator=gen).to(device=device, dtype=dtype).requires_grad_(requires_grad)
           for _ in range(3)]
    return qkv


def sdpa_causal(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


# ------------------------------------------------------------------------- FLOPs
def op_flops(B, T, H, D, NH, passes="fwd"):
    """Both matmuls at their real widths: 2*B*H*T^2*(2D + 2*NH*D), halved when causal;
    the backward 2.5x the forward (FlashAttention's count)."""
    fwd = 2 * B * H * T * T * (2 * D + 2 * NH * D) / 2
    return fwd if passes == "fwd" else fwd * 3.5


def sdpa_flops(B, T, H, Dh, passes="fwd"):
    fwd = 4 * B * H * T * T * Dh / 2
    return fwd if passes == "fwd" else fwd * 3.5


# ------------------------------------------------------------------------ checking
def check_against_reference(fn: Callable, inputs, dtype, max_t: int = 1024, grads: bool = True) -> float:
    """Check ``fn`` equals the float64 reference on a prefix of batch 0 (the op is causal, so
    the output on a prefix equals the op on that prefix). Raises AssertionError past
    ``testing.benchmark_tolerance(dtype)`` (max abs error / max(1, max |ref|)), on the output and, if ``grads``, on
    the gradients of theta, gate and coupling. Returns the worst error seen."""
    theta, gate, coupling, omega = inputs
    t0 = min(theta.shape[1], max_t)
    th, g = theta[:1, :t0], gate[:1, :t0]
    call = lambda a, b, c, o, scale: fn(a, b, c, o)  # noqa: E731
    if grads:
        upstream = torch.randn(th.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        upstream = upstream.to(th.device)
        got = testing.output_and_grads(call, th, g, coupling, omega, upstream)
        want = testing.reference_output_and_grads(th, g, coupling, omega, upstream)
    else:
        with torch.no_grad():
            got = [call(th, g, coupling, omega, None)]
            want = [naive_frustrated_attention(*testing.to_double(th, g, coupling, omega))[0]]
    errs = {name: testing.max_rel_err(a, b) for name, a, b in zip(("out", "dtheta", "dgate", "dcoupling"), got, want)}
    tol = testing.benchmark_tolerance(theta.dtype)
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"{getattr(fn, '__name__', fn)} differs from the float64 reference: {bad} > tol {tol} ({dtype})"
    return max(errs.values())


# ------------------------------------------------------------------------- timing
def cuda_time_ms(fn: Callable, warmup: int = 5, rep: int = 20) -> float:
    """Median of ``rep`` CUDA-event-timed calls after ``warmup`` calls (do_bench semantics:
    synchronised, cache not flushed)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rep):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def cuda_peak_bytes(fn: Callable) -> Optional[int]:
    """Peak bytes allocated during one call of ``fn`` above what was allocated before it."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


def make_pass(fwd: Callable, inputs, passes: str) -> Callable:
    """A zero-argument callable: forward only (under no_grad) or forward + backward."""
    if passes == "fwd":
        def run():
            with torch.no_grad():
                return fwd(*inputs)
        return run
    diff = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]

    def run():
        out = fwd(*inputs)
        grad = torch.ones_like(out)
        torch.autograd.grad(out, diff, grad)
    return run


# ------------------------------------------------------------------------- output
def device_slug() -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in device_name().lower()).strip("-")


def output_dir() -> Path:
    """Where a run writes: ``$FSN_BENCH_OUT`` if set; else benchmarks/results on a GPU; else
    ``.benchmarks/cpu`` (gitignored) so no CPU figure can be mistaken for a GPU result."""
    env = os.environ.get("FSN_BENCH_OUT")
    if env:
        return Path(env)
    if torch.cuda.is_available():
        return RESULTS_DIR
    return ROOT / ".benchmarks" / "cpu"


def environment() -> Dict:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    return {
        "device": device_name(),
        "torch": torch.__version__,
        "triton": triton_version,
        "commit": git_commit(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def add_speedups(cases: List[Dict]) -> None:
    """For every fused case, ``speedup`` = {baseline impl: baseline ms / fused ms} at the
    same pass, shape and dtype (the fastest composition variant counts)."""
    def key(c):
        return (c["pass"], c["B"], c["T"], c["H"], c["D"], c["NH"], c.get("dtype"))

    best: Dict = {}
    for c in cases:
        if c.get("ms") is None or c["impl"] not in ("reference", "composition", "sdpa"):
            continue
        k = key(c) + (c["impl"],)
        best[k] = min(best.get(k, math.inf), c["ms"])
    for c in cases:
        if c["impl"] == "fused" and c.get("ms"):
            c["speedup"] = {impl: round(best[key(c) + (impl,)] / c["ms"], 3)
                            for impl in ("reference", "composition", "sdpa") if key(c) + (impl,) in best}


def write_results(cases: List[Dict], out_dir: Optional[Path] = None, stem: Optional[str] = None) -> Dict[str, Path]:
    """Write ``<device>-<date>.json`` and a PNG of throughput and memory vs T."""
    out_dir = Path(out_dir) if out_dir is not None else output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{device_slug()}-{_dt.date.today().isoformat()}"
    add_speedups(cases)
    doc = dict(environment(), cases=cases)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(doc, indent=1))
    png_path = out_dir / f"{stem}.png"
    plot_results(doc, png_path)
    return {"json": json_path, "png": png_path}


def plot_results(doc: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in doc["cases"] if c["impl"] in ("fused", "reference", "composition", "sdpa")]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    series: Dict = {}
    for c in cases:
        variant = "/" + c["variant"] if c.get("variant") else ""
        label = f"{c['impl']}{variant} {c['pass']} D={c['D']} {c.get('dtype', '')}"
        series.setdefault(label, []).append(c)
    for label, cs in sorted(series.items()):
        cs = sorted(cs, key=lambda c: c["T"])
        ts = [c["T"] for c in cs]
        style = "-o" if "fwd+bwd" in label else "--s"
        axes[0].plot(ts, [c.get("tflops") or float("nan") for c in cs], style, label=label, ms=3)
        axes[1].plot(ts, [c.get("ms") or float("nan") for c in cs], style, label=label, ms=3)
        mem = [c.get("peak_mem_bytes") for c in cs]
        axes[2].plot(ts, [m / 2**20 if m is not None else float("nan") for m in mem], style, label=label, ms=3)
    for ax, title in zip(axes, ("throughput (TFLOP/s)", "time (ms)", "peak extra memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("T (GPU grid: B*T fixed)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1:]:
        if any(line.get_ydata().size and (line.get_ydata() > 0).any() for line in ax.get_lines()):
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not measured on this device", ha="center", transform=ax.transAxes)
    if series:
        axes[0].legend(fontsize=6)
    title = f"{doc['device']}  torch {doc['torch']}  triton {doc['triton']}  {doc.get('commit') or ''}"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def temp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fsn-bench-"))
