"""The staged, time-boxed GPU suite: one command that records what it can inside a budget.

Stages in priority order (``benchmarks/suite/plan.py``): environment -> parity (fp32,
bf16, fp16, fp32 under bf16 autocast) -> op timing at T = 4k, 1k, 16k (the shipped op's
"triton" and "stock" backends, and the SDPA yardstick at matched FLOPs) -> model training
tokens/s -> the rest of the op grid -> decode. Before each case the driver estimates its
cost (compiles it has not done yet included, scaled by how the finished cases compared
with their estimates) and skips it when it would end past ``--budget`` seconds from the
start; a case that fails is recorded with its error and the run goes on.

Every record is appended to ``suite-<device>-<date>.jsonl`` (one JSON object per line)
and flushed the moment it is measured, so a killed run keeps everything before the kill.
At the end ``suite-<device>-<date>.json`` holds the environment and each stage's cases,
and the summary (``benchmarks/suite/summary.py``) is printed and written beside it.
``benchmarks/run_gpu_suite.sh`` runs it inside a hard timeout; directly:

    python -m benchmarks.suite.run --out DIR                 # GPU, default budget
    python -m benchmarks.suite.run --dry-run --out DIR       # CPU: tiny shapes, interpreter
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, Optional

if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import torch  # noqa: E402

from benchmarks import lib  # noqa: E402
from benchmarks.suite import summary  # noqa: E402
from benchmarks.suite.plan import STAGES, Case, Plan, build_plan  # noqa: E402
from benchmarks.suite.records import Recorder, read_records  # noqa: E402

DEFAULT_BUDGET_S = 400.0  # the driver's own budget; run_gpu_suite.sh adds start-up and the summary
MARGIN_S = 5.0  # kept free at the end of the budget


# ------------------------------------------------------------------------------ timing
def time_ms(fn: Callable, device: str, warmup: int, rep: int) -> float:
    """Median milliseconds of ``fn``: CUDA events on a GPU (``lib.cuda_time_ms``), the
    host clock on the CPU."""
    if device == "cuda":
        return lib.cuda_time_ms(fn, warmup=warmup, rep=rep)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rep):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------ cases
def environment_record(device: str, dry_run: bool) -> Dict:
    """Device, clocks, memory, driver, library versions and the commit."""
    env = dict(lib.environment(), kind="environment", dry_run=dry_run, python=sys.version.split()[0],
               numpy=_version("numpy"), interpreter=os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
               autotune=os.environ.get("FSN_AUTOTUNE", "1"))
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                   memory_bytes=props.total_memory, cuda=torch.version.cuda)
        env["nvidia_smi"] = _nvidia_smi()
    return env


def _version(module: str) -> Optional[str]:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def _nvidia_smi() -> Dict:
    """Driver, clocks and memory as nvidia-smi reports them (read only; nothing is set)."""
    fields = ["name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
              "memory.total", "memory.used", "power.limit", "temperature.gpu", "pstate"]
    try:
        res = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return dict(zip(fields, (x.strip() for x in res.stdout.strip().splitlines()[0].split(","))))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.split("-")[0])


def run_op_case(case: Case, device: str, plan: Plan) -> Dict:
    """One op timing: the shipped op (``lib.op_fn``) checked against float64 first, or the
    SDPA yardstick; then the median time and peak memory."""
    s = case.spec
    B, T, H, D, NH = (s[k] for k in ("B", "T", "H", "D", "NH"))
    dtype = _dtype(s["dtype"])
    rec = dict(s)
    if s["impl"] == lib.YARDSTICK:
        inputs = lib.sdpa_yardstick_inputs(B, T, H, D, NH, device=device, dtype=dtype)
        fn, flops = lib.sdpa_yardstick, lib.sdpa_flops(B, T, H, D * (1 + NH), s["pass"])
        rec["head_dim"] = D * (1 + NH)
    else:
        inputs = lib.make_inputs(B, T, H, D, NH, device=device, dtype=dtype)
        fn = lib.op_fn(s["impl"])
        rec["backend"] = lib.OP_BACKENDS[s["impl"]]
        flops = lib.op_flops(B, T, H, D, NH, s["pass"])
        if s.get("check"):
            rec["max_err_vs_fp64"] = lib.check_against_reference(fn, inputs, dtype, max_t=1024,
                                                                 grads=s["pass"] != "fwd")
    run = lib.make_pass(fn, inputs, s["pass"])
    ms = time_ms(run, device, plan.warmup, plan.rep)
    rec.update(ms=ms, tflops=flops / (ms * 1e-3) / 1e12, flops=flops,
               peak_mem_bytes=lib.cuda_peak_bytes(run) if device == "cuda" else None)
    return rec


@contextlib.contextmanager
def fixed_tiles():
    """Each kernel's first tile config, no autotuning (``FSN_AUTOTUNE=0``) inside."""
    before = os.environ.get("FSN_AUTOTUNE")
    os.environ["FSN_AUTOTUNE"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FSN_AUTOTUNE")
        else:
            os.environ["FSN_AUTOTUNE"] = before


def run_parity_case(case: Case, device: str, plan: Plan) -> Dict:
    """Parity needs no tuned tiles: fixed tiles, fewer compiles."""
    from benchmarks import gpu_parity

    shape = tuple(int(x) for x in case.spec["shape"].split(","))
    with fixed_tiles():
        r = gpu_parity.check_shape(shape, case.spec["mode"], device)
    return dict(r, mode=case.spec["mode"], shape_spec=case.spec["shape"])


def _train_step(model, batch, amp):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = batch[:, :-1], batch[:, 1:]

    def step():
        with amp():
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _amp(device: str):
    if device == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def run_model_case(case: Case, device: str, plan: Plan) -> Dict:
    """Training tokens/s of one model: forward + backward + AdamW, bf16 autocast on a GPU."""
    import fsn_model
    from fsn_model.config import config_to_dict

    s = case.spec
    torch.manual_seed(0)
    model = fsn_model.build_model(s["model"], s["params"]).to(device)
    batch = torch.randint(0, 256, (s["B"], s["T"] + 1), device=device)
    step = _train_step(model, batch, _amp(device))
    warmup, rep = (3, 10) if device == "cuda" else (1, 2)
    ms = time_ms(step, device, warmup, rep)
    cfg = config_to_dict(model.config)
    return dict(s, impl=f"{'transformer' if s['model'] == 'transformer' else 'fsn'}-model", **{"pass": "fwd+bwd"},
                n_params=fsn_model.count_params(model), ms=ms, tokens_per_s=s["B"] * s["T"] / (ms * 1e-3),
                dtype="bf16-autocast" if device == "cuda" else "float32",
                peak_mem_bytes=lib.cuda_peak_bytes(step) if device == "cuda" else None, config=cfg)


def run_decode_case(case: Case, device: str, plan: Plan) -> Dict:
    """One-token decode steps at a cached context, B = 1 (the caches hold random contents:
    a step's cost does not depend on them)."""
    import fsn_model
    from fsn_model.fsn import FSNLM

    s = case.spec
    torch.manual_seed(0)
    model = fsn_model.build_model(s["model"], s["params"]).to(device).eval()
    ctx, steps = s["T"], s["steps"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    fsn = isinstance(model, FSNLM)
    if fsn:
        cache = model.new_cache(1, ctx + steps)
        for p in cache.phases:
            p.copy_(torch.rand(p.shape, generator=gen) * 6.28 - 3.14)
    else:
        cache = model.new_cache(1, ctx + steps, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
        for x in cache.k + cache.v:
            x.copy_(torch.randn(x.shape, generator=gen))
    idx = torch.randint(0, 256, (1,), device=device)
    amp = _amp(device)

    def run():
        cache.length = ctx
        if fsn:
            cache.seqlens.fill_(ctx)
        with torch.no_grad(), amp():
            for _ in range(steps):
                model.decode(idx, cache)
    warmup, rep = (2, 10) if device == "cuda" else (1, 1)
    ms = time_ms(run, device, warmup, rep) / steps
    return dict(s, impl=f"{s['model']}-decode", **{"pass": "decode"}, ms=ms, tokens_per_s=1 / (ms * 1e-3),
                cache_bytes_per_token=cache.bytes_per_token, n_params=fsn_model.count_params(model))


RUNNERS = {"op": run_op_case, "parity": run_parity_case, "model": run_model_case, "decode": run_decode_case}


# ------------------------------------------------------------------------------ the run
def result_stem(device: str, dry_run: bool) -> str:
    return f"suite-{'dry-' if dry_run else ''}{lib.device_slug()}-{_dt.date.today().isoformat()}"


def run_suite(plan: Plan, out_dir: Path, budget_s: float, device: str, stages=STAGES, t0: Optional[float] = None,
              log=print) -> Path:
    """Run ``plan``'s cases of ``stages`` in order inside ``budget_s`` seconds from ``t0``;
    returns the JSONL path."""
    t0 = time.time() if t0 is None else t0
    dry = plan.mode == "dry"
    path = Path(out_dir) / (result_stem(device, dry) + ".jsonl")
    if path.exists():
        path.unlink()
    rec = Recorder(path)
    seen: set = set()
    spent_est, spent_real = 0.0, 0.0
    try:
        for case in plan.cases:
            if case.stage not in stages:
                continue
            est = case.estimate(seen, plan.rates)
            scale = min(4.0, max(1.0, spent_real / spent_est)) if spent_est > 5 * plan.rates.call_floor_s else 1.0
            elapsed = time.time() - t0
            base = dict(stage=case.stage, case=case.name, estimate_s=round(est * scale, 2),
                        elapsed_s=round(elapsed, 2))
            if case.kind != "environment" and elapsed + est * scale > budget_s - MARGIN_S:  # always record it
                rec.write(dict(base, kind="skipped", reason=f"budget: {elapsed:.0f} s spent + {est * scale:.0f} s "
                                                             f"estimated > {budget_s:.0f} s - {MARGIN_S:.0f} s"))
                log(f"[{elapsed:6.1f}s] skip  {case.stage:11} {case.name} (est {est * scale:.1f}s: over budget)")
                continue
            start = time.time()
            try:
                if case.kind == "environment":
                    result = environment_record(device, dry)
                    result.update(budget_s=budget_s, plan_cases=len(plan.cases), mode=plan.mode)
                else:
                    result = RUNNERS[case.kind](case, device, plan)
                    _sync(device)
                took = time.time() - start
                record = dict(result, **base, kind=result.get("kind", "case"), case_kind=case.kind,
                              took_s=round(took, 3), device=device)
                seen.update(case.compile_keys)
                status = "ok" if record.get("ok", True) else "FAIL"
            except Exception as exc:  # recorded, and the run goes on
                took = time.time() - start
                if device == "cuda":
                    torch.cuda.empty_cache()
                record = dict(base, case_kind=case.kind, kind="error", spec=case.spec, took_s=round(took, 3),
                              error=f"{type(exc).__name__}: {str(exc)[:500]}",
                              traceback=traceback.format_exc()[-2000:])
                status = "ERROR"
            rec.write(record)
            spent_est += est
            spent_real += took
            log(f"[{time.time() - t0:6.1f}s] {status:5} {case.stage:11} {case.name}  ({took:.1f}s, est {est:.1f}s)"
                + (f"  {record['ms']:.3f} ms" if isinstance(record.get("ms"), float) else "")
                + (f"  {record['error']}" if "error" in record else ""))
        rec.write(dict(kind="end", elapsed_s=round(time.time() - t0, 2)))
    finally:
        rec.close()
    return path


def write_document(jsonl: Path) -> Path:
    """``<stem>.json``: the environment and each stage's records, from the JSONL."""
    records = read_records(jsonl)
    env = next((r for r in records if r.get("kind") == "environment"), {})
    stages = {s: [r for r in records if r.get("stage") == s and r.get("kind") != "environment"] for s in STAGES}
    doc = dict(environment=env, stages=stages,
               finished=any(r.get("kind") == "end" for r in records))
    path = jsonl.with_suffix(".json")
    path.write_text(json.dumps(doc, indent=1, default=str))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU: every stage at tiny shapes under the interpreter")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds from the start (default {DEFAULT_BUDGET_S:.0f}; $FSN_SUITE_T0 marks the start)")
    p.add_argument("--out", default=None, help="output folder (default $FSN_BENCH_OUT, else see benchmarks/lib.py)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"a subset of {','.join(STAGES)}")
    p.add_argument("--summary-only", default=None, metavar="JSONL", help="print the summary of a result file and exit")
    args = p.parse_args(argv)

    if args.summary_only:
        jsonl = Path(args.summary_only)
        write_document(jsonl)
        print(summary.write_summary(jsonl))
        return 0
    stages = tuple(x for x in args.stages.split(",") if x)
    bad = [x for x in stages if x not in STAGES]
    if bad:
        p.error(f"--stages: unknown {bad}; choose from {', '.join(STAGES)}")
    budget = DEFAULT_BUDGET_S if args.budget is None else args.budget
    if budget < 0:
        p.error(f"--budget must be >= 0 seconds, got {budget}")
    cuda = torch.cuda.is_available()
    if not args.dry_run and not cuda:
        print("benchmarks.suite.run: no CUDA GPU visible; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run and os.environ.get("TRITON_INTERPRET", "") in ("", "0"):
        print("benchmarks.suite.run --dry-run: TRITON_INTERPRET=1 must be set before triton is imported",
              file=sys.stderr)
        return 2
    t0 = float(os.environ.get("FSN_SUITE_T0", time.time()))
    out_dir = Path(args.out) if args.out else lib.output_dir()
    if args.dry_run:
        torch.set_num_threads(int(os.environ.get("FSN_BENCH_THREADS", "1")))
    plan = build_plan("dry" if args.dry_run else "gpu")
    print(f"benchmarks.suite.run: {plan.mode} run, {len(plan.cases)} cases planned, budget {budget:.0f} s, "
          f"writing {out_dir}",
          flush=True)
    jsonl = run_suite(plan, out_dir, budget, device, stages, t0, log=lambda m: print(m, flush=True))
    doc = write_document(jsonl)
    print(summary.write_summary(jsonl))
    print(f"benchmarks.suite.run: wrote {jsonl} and {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
