"""Model-level benchmark: training tokens/s (forward + backward + AdamW step) of
FSN and the matched transformer from ``fsn_model.build_model``, same batch and length.

GPU: 1M and 10M parameters, B=32, T=512, bf16 autocast; recorded as impl "fsn-model" /
"transformer-model" in the same result file (``tokens_per_s`` field; ``ms`` per step).
CPU: one tiny smoke case per model (100k params, B=2, T=64) to keep the code path alive.
"""
from __future__ import annotations

import statistics
import time

import pytest
import torch

import fsn_model
from benchmarks import lib
from benchmarks.cpu_steps import batch_step_fn
from fsn_model.config import config_to_dict

HAS_CUDA = torch.cuda.is_available()


def _check_trained(model, before, batch):
    """What the timed steps computed: every parameter finite, the AdamW steps applied
    (parameters that take a gradient moved), and finite (B, T, vocab) logits after them."""
    after = {n: p.detach() for n, p in model.named_parameters()}
    assert all(torch.isfinite(p).all() for p in after.values())
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), before[n])]
    assert moved, "no parameter changed: no optimizer step ran"
    with torch.no_grad():
        logits = model(batch[:, :-1])
    assert logits.shape == (*batch[:, :-1].shape, model.config.vocab_size)
    assert torch.isfinite(logits).all()


def _bench_model(benchmark, record_case, name, params, B, T, device, rounds):
    model = fsn_model.build_model(name, params).to(device)
    cfg = config_to_dict(model.config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = torch.randint(0, 256, (B, T + 1), device=device, generator=None)
    step = batch_step_fn(model, batch, torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else None)
    impl = "transformer-model" if name == "transformer" else "fsn-model"
    benchmark.group = f"model training step B={B} T={T}"
    if device == "cuda":
        benchmark.pedantic(lambda: (step(), torch.cuda.synchronize()), rounds=3, warmup_rounds=2)
        ms = lib.cuda_time_ms(step, warmup=3, rep=10)
        peak = lib.cuda_peak_bytes(step)
    else:
        benchmark.pedantic(step, rounds=rounds, warmup_rounds=1)
        stats = getattr(benchmark, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None:
            ms = stats.stats.median * 1e3
        else:
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                step()
                times.append(time.perf_counter() - t)
            ms = statistics.median(times) * 1e3
        peak = None
    _check_trained(model, before, batch)
    n_heads = cfg.get("n_heads")
    dim = cfg.get("dim")
    case = dict(impl=impl, model=name, params=fsn_model.count_params(model),
                **{"pass": "fwd+bwd"}, B=B, T=T, H=n_heads, D=(dim // n_heads) if dim and n_heads else None,
                NH=cfg.get("n_harmonics"), dtype="bf16-autocast" if device == "cuda" else "float32",
                device=device, ms=ms, tflops=None, tokens_per_s=B * T / (ms * 1e-3), peak_mem_bytes=peak,
                config=cfg)
    benchmark.extra_info.update(tokens_per_s=case["tokens_per_s"], params=case["params"])
    record_case(case)


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is present: the GPU model cases run instead")
@pytest.mark.parametrize("name", ["fsn", "transformer"])
def test_model_cpu_smoke(benchmark, record_case, name):
    _bench_model(benchmark, record_case, name, "100k", B=2, T=64, device="cpu", rounds=2)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU: model tokens/s at 1M and 10M params are owed")
@pytest.mark.parametrize("params", ["1M", "10M"])
@pytest.mark.parametrize("name", ["fsn", "transformer"])
def test_model_gpu(benchmark, record_case, name, params):
    _bench_model(benchmark, record_case, name, params, B=32, T=512, device="cuda", rounds=3)
