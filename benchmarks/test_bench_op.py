"""Op-level benchmarks: the shipped op, ``frustrated_attention`` with its "triton" backend
(impl "fused"), its stock-PyTorch backend "stock" (impl "stock") and its "reference"
backend, next to the SDPA yardstick (plain causal SDPA at matched FLOPs), forward and
forward+backward, on the same inputs. Every impl that computes the op is checked against
the float64 reference before it is timed.

CPU (this machine): small shapes, few rounds, reference + stock + the yardstick + a tiny
fused case under the Triton interpreter; results go to .benchmarks/cpu unless
FSN_BENCH_OUT is set. GPU: the grid of benchmarks/lib.py GPU_SHAPES, CUDA-event timing
(median after warm-up), peak memory; results go to benchmarks/results/<device>-<date>.json
+ .png.
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from benchmarks import lib

HAS_CUDA = torch.cuda.is_available()
NO_GPU = "no CUDA GPU on this machine: the GPU benchmark grid is owed (see benchmarks/README.md)"
ON_GPU = "a CUDA GPU is present: the GPU grid runs instead of the CPU smoke cases"
GPU_DTYPES = [getattr(torch, d) for d in os.environ.get("FSN_BENCH_DTYPES", "bfloat16").split(",") if d]
PASSES = ["fwd", "fwd+bwd"]


def _median_ms(benchmark, run) -> float:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        return stats.stats.median * 1e3
    t = time.perf_counter()  # --benchmark-disable: one timed call of our own
    run()
    return (time.perf_counter() - t) * 1e3


def _bench(benchmark, record_case, impl, passes, shape, device, dtype):
    B, T, H, D, NH = (shape[k] for k in ("B", "T", "H", "D", "NH"))
    case = dict(impl=impl, **{"pass": passes}, B=B, T=T, H=H, D=D, NH=NH,
                dtype=str(dtype).replace("torch.", ""), device=device)
    benchmark.group = f"{passes} B={B} T={T} H={H} D={D} NH={NH} {case['dtype']}"
    benchmark.extra_info.update(case)
    if impl == lib.YARDSTICK:
        inputs = lib.sdpa_yardstick_inputs(B, T, H, D, NH, device=device, dtype=dtype)
        fn = lib.sdpa_yardstick
        flops = lib.sdpa_flops(B, T, H, D * (1 + NH), passes)
        case["head_dim"] = D * (1 + NH)
    else:
        inputs = lib.make_inputs(B, T, H, D, NH, device=device, dtype=dtype)
        fn = lib.op_fn(impl)
        case["backend"] = lib.OP_BACKENDS[impl]
        flops = lib.op_flops(B, T, H, D, NH, passes)
        # correctness first: equal to the float64 reference (on a causal prefix of batch 0)
        case["max_err_vs_fp64"] = lib.check_against_reference(fn, inputs, dtype, max_t=1024 if device == "cuda" else T,
                                                              grads=passes != "fwd")
    run = lib.make_pass(fn, inputs, passes)
    try:
        if device == "cuda":
            benchmark.pedantic(lambda: (run(), torch.cuda.synchronize()), rounds=3, warmup_rounds=1)
            ms = lib.cuda_time_ms(run)
            case["peak_mem_bytes"] = lib.cuda_peak_bytes(run)
        else:
            benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
            ms = _median_ms(benchmark, run)
            case["peak_mem_bytes"] = None  # no allocator statistics on CPU
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        case.update(ms=None, tflops=None, peak_mem_bytes=None, error="OOM")
        record_case(case)
        pytest.skip(f"{impl} {passes} out of GPU memory at {shape}")
    case["ms"] = ms
    case["tflops"] = flops / (ms * 1e-3) / 1e12
    benchmark.extra_info.update(ms=ms, tflops=case["tflops"])
    record_case(case)


def _id(shape):
    return "B{B}-T{T}-H{H}-D{D}-NH{NH}".format(**shape)


# ------------------------------------------------------------------------------- CPU
@pytest.mark.skipif(HAS_CUDA, reason=ON_GPU)
@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("shape", lib.CPU_SHAPES, ids=_id)
@pytest.mark.parametrize("impl", ["reference", "stock", lib.YARDSTICK])
def test_cpu(benchmark, record_case, impl, passes, shape):
    _bench(benchmark, record_case, impl, passes, shape, "cpu", torch.float32)


@pytest.mark.skipif(HAS_CUDA, reason=ON_GPU)
@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("shape", lib.CPU_FUSED_SHAPES, ids=_id)
def test_cpu_fused_interpreter(benchmark, record_case, passes, shape):
    from fsn_kernels.frustrated_attention.launch_policy import interpreting

    if not interpreting():
        pytest.skip("TRITON_INTERPRET is not set: the fused kernels cannot run on the CPU")
    _bench(benchmark, record_case, "fused", passes, shape, "cpu", torch.float32)


# ------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason=NO_GPU)
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("passes", PASSES)
@pytest.mark.parametrize("shape", lib.GPU_SHAPES, ids=_id)
@pytest.mark.parametrize("impl", ["fused", "stock", "reference", lib.YARDSTICK])
def test_gpu(benchmark, record_case, impl, passes, shape, dtype):
    B, T, H = shape["B"], shape["T"], shape["H"]
    if impl == "reference":
        # the reference materialises several (B, H, T, T) fp32 tensors
        need = 8 * B * H * T * T * 4
        if need > 0.8 * torch.cuda.get_device_properties(0).total_memory:
            record_case(dict(impl=impl, **{"pass": passes}, B=B, T=T, H=H, D=shape["D"], NH=shape["NH"],
                             dtype=str(dtype).replace("torch.", ""), ms=None, tflops=None, peak_mem_bytes=None,
                             error="skipped: would not fit"))
            pytest.skip(f"reference needs ~{need / 2**30:.0f} GiB at T={T}")
    _bench(benchmark, record_case, impl, passes, shape, "cuda", dtype)
