"""Shared pieces of the benchmarks: inputs, what is timed (the shipped op by backend and
the matched-FLOP SDPA yardstick), FLOP counts, the check against float64, timing, memory
and the result writer.

Used by the pytest-benchmark tests (``pytest benchmarks/``), by the GPU suite
(``benchmarks/run_gpu_suite.sh``) and by ``benchmarks/gpu_parity.py``. Nothing here needs
a GPU to import.
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

from fsn_kernels import frustrated_attention, naive_frustrated_attention, testing
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


# ------------------------------------------------------------------ what is timed
# impl -> the backend of the shipped op that it times
OP_BACKENDS = {"fused": "triton", "stock": "stock", "reference": "reference"}
YARDSTICK = "sdpa-yardstick"  # plain causal SDPA at matched FLOPs: not the op, a speed reference
IMPLS = tuple(OP_BACKENDS) + (YARDSTICK,)
BASELINES = ("reference", "stock", YARDSTICK)  # what a fused case's speedup is measured against


def op_fn(impl: str) -> Callable:
    """``fn(theta, gate, coupling, omega)``: the public ``frustrated_attention`` with the
    backend ``OP_BACKENDS[impl]``."""
    backend = OP_BACKENDS[impl]

    def fn(theta, gate, coupling, omega):
        return frustrated_attention(theta, gate, coupling, omega, backend=backend)

    fn.__name__ = f"frustrated_attention[{backend}]"
    return fn


def sdpa_yardstick_inputs(B, T, H, D, NH, device="cpu", dtype=torch.float32, requires_grad=True):
    """(q, k, v) of the SDPA yardstick, plain causal SDPA at matched FLOPs: head dim D * (1 + NH), so that
    ``4*B*H*T^2*Dh / 2`` equals the op's ``2*B*H*T^2*(2D + 2*NH*D) / 2``."""
    Dh = D * (1 + NH)
    gen = torch.Generator(device="cpu").manual_seed(0)
    qkv = [torch.randn(B, H, T, Dh, generator=gen).to(device=device, dtype=dtype).requires_grad_(requires_grad)
           for _ in range(3)]
    return qkv


def sdpa_yardstick(q, k, v):
    """The SDPA yardstick: ``F.scaled_dot_product_attention(q, k, v, is_causal=True)``."""
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
    same pass, shape and dtype."""
    def key(c):
        return (c["pass"], c["B"], c["T"], c["H"], c["D"], c["NH"], c.get("dtype"))

    best: Dict = {}
    for c in cases:
        if c.get("ms") is None or c["impl"] not in BASELINES:
            continue
        k = key(c) + (c["impl"],)
        best[k] = min(best.get(k, math.inf), c["ms"])
    for c in cases:
        if c["impl"] == "fused" and c.get("ms"):
            c["speedup"] = {impl: round(best[key(c) + (impl,)] / c["ms"], 3)
                            for impl in BASELINES if key(c) + (impl,) in best}


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

    cases = [c for c in doc["cases"] if c["impl"] in IMPLS]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    series: Dict = {}
    for c in cases:
        label = f"{c['impl']} {c['pass']} D={c['D']} {c.get('dtype', '')}"
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
