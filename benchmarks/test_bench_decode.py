"""Decode benchmark: tokens/s of one-token decode steps and cache bytes per token, FSN
(preallocated phase cache, fused decode kernel ``frustrated_attention_decode``) vs the
matched transformer (preallocated KV cache, SDPA over a view of it), same parameter count
from ``fsn_model.build_model``, at cached contexts 1k..32k.

GPU: 10M-parameter models, B = 1, bf16 autocast; FSN caches float32 phases (``dim`` x 4
bytes per token per layer), the transformer bf16 keys and values (``2 dim`` x 2 bytes).
Recorded as impl "fsn-decode" / "transformer-decode", pass "decode", ``T`` = the cached
context, ``ms`` per step, ``tokens_per_s`` = B / step time, ``cache_bytes_per_token``.
The caches are filled with random contents up to the context (a step's cost does not
depend on the values), and each timed call resets the length and decodes ``STEPS``
tokens. CPU: one tiny smoke case per model (100k params, context 64) to keep the code
path alive; its figures mean nothing.
"""
from __future__ import annotations

import contextlib
import statistics
import time

import pytest
import torch

import fsn_model
from benchmarks import lib
from fsn_model.config import config_to_dict
from fsn_model.fsn import FSNLM

HAS_CUDA = torch.cuda.is_available()
GPU_CONTEXTS = [1024, 2048, 4096, 8192, 16384, 32768]
STEPS = 8  # decode steps per timed call


def _filled_cache(model, B, context, device, dtype):
    """A cache holding ``context`` random tokens with room for STEPS more."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    if isinstance(model, FSNLM):
        cache = model.new_cache(B, context + STEPS)
        for p in cache.phases:
            p.copy_(torch.rand(p.shape, generator=gen) * 6.28 - 3.14)
        cache.length = context
        cache.seqlens.fill_(context)
    else:
        cache = model.new_cache(B, context + STEPS, dtype=dtype)
        for x in cache.k + cache.v:
            x.copy_(torch.randn(x.shape, generator=gen))
        cache.length = context
    return cache


def _decode_fn(model, cache, B, context, device):
    """A call that decodes STEPS tokens after ``context`` cached ones; it returns the
    logits of every step, (STEPS, B, vocab)."""
    idx = torch.randint(0, 256, (B,), device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    is_fsn = isinstance(model, FSNLM)

    def run():
        cache.length = context
        if is_fsn:
            cache.seqlens.fill_(context)
        logits = []
        with torch.no_grad(), amp:
            for _ in range(STEPS):
                logits.append(model.decode(idx, cache)[0])
        return torch.stack(logits)
    return run


def _check_decoded(model, cache, run, B, context):
    """What the timed calls computed: STEPS steps of finite (B, vocab) logits past the
    context, the cache advanced by STEPS, and the same logits on every call (each call
    starts again from the context, so each timed call did the same work)."""
    first = run()
    assert first.shape == (STEPS, B, model.config.vocab_size)
    assert torch.isfinite(first).all()
    assert cache.length == context + STEPS
    if isinstance(model, FSNLM):
        assert cache.seqlens.tolist() == [context + STEPS] * B
    assert torch.equal(run(), first)


def _bench_decode(benchmark, record_case, name, params, B, context, device, rounds):
    model = fsn_model.build_model(name, params).to(device).eval()
    cfg = config_to_dict(model.config)
    kv_dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cache = _filled_cache(model, B, context, device, kv_dtype)
    run = _decode_fn(model, cache, B, context, device)
    _check_decoded(model, cache, run, B, context)
    impl = "transformer-decode" if name == "transformer" else "fsn-decode"
    benchmark.group = f"decode step B={B} context={context}"
    if device == "cuda":
        benchmark.pedantic(lambda: (run(), torch.cuda.synchronize()), rounds=3, warmup_rounds=1)
        ms = lib.cuda_time_ms(run, warmup=2, rep=10) / STEPS
    else:
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
        stats = getattr(benchmark, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None:
            ms = stats.stats.median * 1e3 / STEPS
        else:
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            ms = statistics.median(times) * 1e3 / STEPS
    n_heads, dim = cfg["n_heads"], cfg["dim"]
    case = dict(impl=impl, model=name, params=fsn_model.count_params(model), **{"pass": "decode"}, B=B, T=context,
                H=n_heads, D=dim // n_heads, NH=cfg.get("n_harmonics"),
                dtype="bf16-autocast" if device == "cuda" else "float32", device=device, ms=ms, tflops=None,
                tokens_per_s=B / (ms * 1e-3), cache_bytes_per_token=cache.bytes_per_token,
                cache_dtype=str((cache.phases[0] if isinstance(model, FSNLM) else cache.k[0]).dtype), config=cfg)
    benchmark.extra_info.update(tokens_per_s=case["tokens_per_s"], cache_bytes_per_token=case["cache_bytes_per_token"])
    record_case(case)
    return case


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present: the GPU decode cases run instead")
@pytest.mark.parametrize("name", ["fsn", "transformer"])
def test_decode_cpu_smoke(benchmark, record_case, name):
    case = _bench_decode(benchmark, record_case, name, "100k", B=1, context=64, device="cpu", rounds=2)
    assert case["tokens_per_s"] > 0
    cfg = case["config"]
    per_layer = cfg["dim"] * 4 * (1 if name == "fsn" else 2)  # float32 phases vs float32 K + V
    assert case["cache_bytes_per_token"] == per_layer * cfg["n_layers"]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: decode tokens/s at contexts 1k..32k are owed")
@pytest.mark.parametrize("context", GPU_CONTEXTS)
@pytest.mark.parametrize("name", ["fsn", "transformer"])
def test_decode_gpu(benchmark, record_case, name, context):
    _bench_decode(benchmark, record_case, name, "10M", B=1, context=context, device="cuda", rounds=3)
