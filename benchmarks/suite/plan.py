"""The GPU suite's plan: its stages in priority order, the cases of each, and what each
case is estimated to cost, for a GPU run and for the CPU dry run (tiny shapes under the
Triton interpreter, same code path).

A case's estimate is ``compile_s`` for every kernel it needs that the run has not compiled
yet (its *compile keys*: kernel role x operand mode x shape class, each autotune
candidate counted) plus ``calls x seconds per call`` (FLOPs over an assumed rate, with a
floor for launch overheads). ``benchmarks/suite/run.py`` scales the estimates by what the
finished cases actually took, and skips a case that would not fit the budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from benchmarks import lib

STAGES = ("environment", "parity", "op-core", "model", "op-grid", "decode")
PASSES_FIRST = ("fwd+bwd", "fwd")


@dataclass(frozen=True)
class Rates:
    """What the estimates assume about the machine (seconds, FLOP/s)."""

    compile_s: float  # one kernel compiled (Triton -> cubin), or one interpreter warm-up
    fixed_s: float  # per case: inputs, reference check, allocator, Python overhead
    call_floor_s: float  # one timed call at least (launches; the interpreter's overhead)
    op_flops_per_s: float  # the op's "triton" and "stock" backends and the SDPA yardstick
    reference_flops_per_s: float  # the T x T reference
    model_step_s: Dict[str, float]  # one training step per model size
    decode_step_s: float  # one decode step (B = 1)


GPU_RATES = Rates(compile_s=4.0, fixed_s=1.5, call_floor_s=2e-4, op_flops_per_s=1e14, reference_flops_per_s=5e12,
                  model_step_s={"1M": 0.02, "10M": 0.05, "100k": 0.01}, decode_step_s=2e-3)
DRY_RATES = Rates(compile_s=0.5, fixed_s=0.3, call_floor_s=0.3, op_flops_per_s=2e7, reference_flops_per_s=1e8,
                  model_step_s={"100k": 0.3}, decode_step_s=0.05)


@dataclass(frozen=True)
class Case:
    """One measurement. ``kind``: environment, parity, op, model or decode; ``spec`` its
    parameters (JSON-able); ``compile_keys`` the kernels it compiles on first use."""

    stage: str
    kind: str
    spec: Dict
    compile_keys: Tuple[str, ...] = ()
    calls: int = 0  # timed or checked calls of the workload
    call_s: float = 0.0  # estimated seconds per call
    fixed_s: float = 0.0

    @property
    def name(self) -> str:
        s = self.spec
        if self.kind == "op":
            dims = f"T={s['T']} B={s['B']} H={s['H']} D={s['D']} NH={s['NH']}"
            return f"{s['impl']} {s['pass']} {dims} {s['dtype']}"
        if self.kind == "parity":
            return f"parity {s['mode']} {s['shape']}"
        if self.kind in ("model", "decode"):
            return f"{self.kind} {s['model']} {s['params']} T={s['T']}"
        return self.kind

    def estimate(self, seen: set, rates: Rates) -> float:
        new = [k for k in self.compile_keys if k not in seen]
        return len(new) * rates.compile_s + self.fixed_s + self.calls * max(self.call_s, rates.call_floor_s)


@dataclass
class Plan:
    mode: str  # "gpu" or "dry"
    rates: Rates
    cases: List[Case] = field(default_factory=list)
    warmup: int = 5
    rep: int = 20


# ----------------------------------------------------------------------- compile keys
OPERAND = {"float32": "ieee", "bfloat16": "bf16", "float16": "fp16", "float32-autocast-bf16": "fp32-bf16"}


def op_compile_keys(D: int, NH: int, mode: str, passes: str, autotune: bool) -> Tuple[str, ...]:
    """The fused op's kernels for one shape class and operand mode: the feature pass, the
    flash forward (each autotune candidate) and the demodulation; with the backward also
    the feature pass with gradients, both flash backward passes and the chain rule."""
    from fsn_kernels.frustrated_attention import geometry, tile_configs

    bd, (nh_p, _) = geometry.padded_head_dim(D), geometry.padded_harmonics(NH)
    dot = {"ieee": 0, "bf16": 1, "fp16": 2, "fp32-bf16": 1}[OPERAND[mode]]

    def n(cfgs):
        return len(cfgs) if autotune else 1
    cls = f"{OPERAND[mode]}-d{bd}-nh{nh_p}"
    keys = [f"features/{cls}", f"demodulate/{cls}"] + [f"forward{i}/{cls}" for i in range(n(
        tile_configs.forward_configs(bd, nh_p, dot)))]
    if passes != "fwd":
        keys += [f"features-bwd/{cls}", f"chain/{cls}"]
        keys += [f"backward-kv{i}/{cls}" for i in range(n(tile_configs.backward_kv_configs(bd, nh_p, dot)))]
        keys += [f"backward-q{i}/{cls}" for i in range(n(tile_configs.backward_q_configs(bd, nh_p, dot)))]
    return tuple(keys)


# ---------------------------------------------------------------------------- builders
def _op_case(stage, impl, passes, shape, dtype, rates, plan_calls, autotune=True, check=True):
    B, T, H, D, NH = (shape[k] for k in ("B", "T", "H", "D", "NH"))
    flops = lib.op_flops(B, T, H, D, NH, passes)
    rate = rates.reference_flops_per_s if impl == "reference" else rates.op_flops_per_s
    if impl == "stock":
        rate /= 3  # several PyTorch passes around one SDPA call
    keys = op_compile_keys(D, NH, dtype, passes, autotune) if impl == "fused" else (f"torch-{impl}",)
    spec = dict(impl=impl, **{"pass": passes}, B=B, T=T, H=H, D=D, NH=NH, dtype=dtype,
                check=check and impl != lib.YARDSTICK)
    calls = plan_calls + (3 if spec["check"] else 0)
    return Case(stage, "op", spec, keys, calls, flops / rate, rates.fixed_s)


OP_IMPLS = ("fused", lib.YARDSTICK, "stock")  # timed at each T: the op's two backends, the yardstick


def build_plan(mode: str = "gpu", tokens: int = 16384, autotune: bool = True) -> Plan:
    """The suite's cases in priority order. ``mode="dry"``: the same stages at tiny shapes
    (fp32 operands; the interpreter computes bf16/fp16 matmuls wrongly, so on the CPU the
    op keeps fp32 matmuls and only loads/stores in the low-precision dtype)."""
    if mode not in ("gpu", "dry"):
        raise ValueError(f"mode must be 'gpu' or 'dry', got {mode!r}")
    gpu = mode == "gpu"
    rates = GPU_RATES if gpu else DRY_RATES
    plan = Plan(mode, rates, warmup=5 if gpu else 1, rep=20 if gpu else 1)
    calls = plan.warmup + plan.rep + (1 if gpu else 0)  # + the peak-memory call on a GPU
    add = plan.cases.append

    add(Case("environment", "environment", {}, (), 0, 0.0, 20.0 if gpu else 1.0))

    # parity: the main shape class in every precision first, then odd shapes (op-grid)
    parity_main = ["2,1000,4,32,2"] if gpu else ["1,20,2,16,2"]
    parity_odd = ["3,63,2,64,2", "2,511,8,32,4", "2,777,4,60,1"] if gpu else ["1,13,1,12,3"]
    modes = ["float32", "bfloat16", "float16", "float32-autocast-bf16"]

    def parity_case(stage, spec, mode_):
        B, T, H, D, NH = (int(x) for x in spec.split(","))
        ref_s = 4 * lib.op_flops(B, T, H, D, NH, "fwd+bwd") / rates.reference_flops_per_s
        return Case(stage, "parity", dict(shape=spec, mode=mode_),
                    op_compile_keys(D, NH, mode_, "fwd+bwd", autotune=False) + ("torch-reference",), 1, ref_s,
                    rates.fixed_s)

    for spec in parity_main:
        for m in modes:
            add(parity_case("parity", spec, m))

    # op-core: T = 4k first (the stock-backend target), then 1k and 16k; fwd+bwd before fwd
    core_t = [4096, 1024, 16384] if gpu else [32]
    dims = dict(H=16, D=32, NH=2) if gpu else dict(H=2, D=16, NH=2)
    dtype = "bfloat16" if gpu else "float32"
    for passes in PASSES_FIRST:
        for T in core_t:
            shape = dict(B=max(tokens // T, 1) if gpu else 1, T=T, **dims)
            for impl in OP_IMPLS:
                add(_op_case("op-core", impl, passes, shape, dtype, rates, calls, autotune))

    # model: training tokens/s, FSN vs the matched transformer
    sizes, (mB, mT) = (["1M", "10M"], (32, 512)) if gpu else (["100k"], (2, 16))
    for params in sizes:
        for name in ("fsn", "transformer"):
            # the FSN model's op kernels (fp32 tensors, bf16 operands) at its own shape class
            keys = tuple(f"model-fsn-{params}/{i}" for i in range(12 if gpu else 1)) if name == "fsn" else \
                ("torch-" + name,)
            add(Case("model", "model", dict(model=name, params=params, B=mB, T=mT), keys,
                     (3 + 10 + 1) if gpu else 3, rates.model_step_s[params], 5.0 if gpu else 1.0))

    # op-grid: the rest of the T grid, the D = 64 rows, the reference, fp32, odd parity shapes
    if gpu:
        grid_shapes = [dict(B=max(tokens // T, 1), T=T, H=16, D=32, NH=2) for T in (512, 2048, 8192)]
        grid_shapes += [dict(B=max(tokens // T, 1), T=T, H=8, D=64, NH=2) for T in (2048, 8192)]
    else:
        grid_shapes = [dict(B=1, T=16, H=2, D=16, NH=2)]
    for passes in (PASSES_FIRST if gpu else PASSES_FIRST[:1]):
        for shape in grid_shapes:
            for impl in OP_IMPLS:
                add(_op_case("op-grid", impl, passes, shape, dtype, rates, calls, autotune))
    ref_shapes = [dict(B=max(tokens // T, 1), T=T, H=16, D=32, NH=2) for T in (512, 1024, 2048)] if gpu else \
        [dict(B=1, T=16, H=2, D=16, NH=2)]
    for shape in ref_shapes:
        for passes in PASSES_FIRST:
            add(_op_case("op-grid", "reference", passes, shape, "float32" if not gpu else dtype, rates, calls))
    fp32_shapes = [dict(B=max(tokens // T, 1), T=T, H=16, D=32, NH=2) for T in (1024, 4096)] if gpu else []
    for shape in fp32_shapes:
        for impl in ("fused", lib.YARDSTICK):
            add(_op_case("op-grid", impl, "fwd+bwd", shape, "float32", rates, calls, autotune))
    for spec in parity_odd:
        for m in (["bfloat16", "float32"] if gpu else ["float32"]):
            add(parity_case("op-grid", spec, m))

    # decode: one-token steps at cached contexts
    contexts, dparams = ([1024, 4096, 16384, 32768, 2048, 8192], "10M") if gpu else ([16], "100k")
    steps = 8
    for ctx in contexts:
        for name in ("fsn", "transformer"):
            keys = (f"decode-{name}-{dparams}/split", f"decode-{name}-{dparams}/combine")
            add(Case("decode", "decode", dict(model=name, params=dparams, T=ctx, steps=steps), keys,
                     (2 + 10) * steps if gpu else 2 * steps, rates.decode_step_s, 3.0 if gpu else 0.5))
    return plan
