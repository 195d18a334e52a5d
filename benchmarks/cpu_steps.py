"""CPU timings measured in one run, the two sides alternated so that a busy shared
machine slows both alike: model train steps (FSN vs the matched transformer) and the
op's forward + backward ("auto" vs the reference) with peak memory.

``python -m benchmarks.cpu_steps`` prints both at the full grid (``--profile MODEL PARAMS
[compiled]``: a torch.profiler table of train steps instead); the pytest cases in
``benchmarks/test_bench_cpu.py`` record them into the CPU result JSON.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import fsn_model
from benchmarks import lib
from fsn_kernels import frustrated_attention


def batch_step_fn(model, batch, autocast=None) -> Callable[[], None]:
    """One AdamW step (forward, cross-entropy, backward, update) on ``batch`` (B, T + 1)
    int64 bytes; ``autocast``: a context manager for the forward (e.g. CUDA bf16) or None."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = batch[:, :-1], batch[:, 1:]

    def step():
        with autocast or contextlib.nullcontext():
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def train_step_fn(model, B: int, T: int, seed: int = 0) -> Callable[[], None]:
    """One AdamW step on a fixed random (B, T + 1) batch."""
    gen = torch.Generator().manual_seed(seed)
    return batch_step_fn(model, torch.randint(0, 256, (B, T + 1), generator=gen))


def alternate(fns: Dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> Dict[str, float]:
    """Median ms per call of each function, calls interleaved round by round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


MODEL_SIDES = ("fsn", "fsn-paper", "fsn-stock-eager", "fsn-compiled", "transformer", "transformer-compiled")


def _stock_setting(step: Callable[[], None], setting: str) -> Callable[[], None]:
    """``step`` with the stock path's per-token compile setting ("auto", "on", "off")."""
    from fsn_kernels.frustrated_attention import stock_function

    def run():
        before = stock_function.STOCK_COMPILE
        stock_function.STOCK_COMPILE = setting
        try:
            step()
        finally:
            stock_function.STOCK_COMPILE = before
    return run


def model_step_case(params: str, B: int = 16, T: int = 128, threads: int = 1, rounds: int = 6,
                    sides=("fsn", "transformer"), warmup: int = 1) -> Dict:
    """Train steps at ``params`` of each side in ``sides`` (:data:`MODEL_SIDES`), alternated
    round by round, ``threads`` torch threads (recorded as ``step_threads``: the result
    writer's ``cpu_threads`` is the session's). "fsn": the default path (on a CPU the stock
    path, its per-token work compiled where that pays); "fsn-paper": the paper's FSN (no
    projections) on that path; "fsn-stock-eager": "fsn" with that work eager
    (``FSN_STOCK_COMPILE=off``); "-compiled": ``torch.compile`` of the model (its
    first calls, the compile, are warm-up and reported as ``compile_s``). Ratios are against
    the transformer side of the same kind (compiled against compiled)."""
    unknown = set(sides) - set(MODEL_SIDES)
    if unknown:
        raise ValueError(f"sides must be among {MODEL_SIDES}, got {sorted(unknown)}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        fsn = fsn_model.build_model("fsn", params)
        paper = fsn_model.build_model("fsn-paper", params) if "fsn-paper" in sides else None
        tr = fsn_model.build_model("transformer", params)
        steps, compile_s = {}, {}
        for side in sides:
            model = paper if side == "fsn-paper" else fsn if side.startswith("fsn") else tr
            if side.endswith("-compiled"):
                model = torch.compile(model)
            step = train_step_fn(model, B, T)
            if side.startswith("fsn"):  # the default ("auto"), whatever the environment says, or eager
                step = _stock_setting(step, "off" if side == "fsn-stock-eager" else "auto")
            t = time.perf_counter()
            step()  # the first call builds (and compiles) everything
            compile_s[side] = time.perf_counter() - t
            steps[side] = step
        ms = alternate(steps, rounds, warmup=warmup)
    finally:
        torch.set_num_threads(before)
    case = dict(impl="model-train-step", params=params, fsn_params=fsn_model.count_params(fsn),
                transformer_params=fsn_model.count_params(tr),
                **({"fsn_paper_params": fsn_model.count_params(paper)} if paper is not None else {}),
                B=B, T=T, step_threads=threads, rounds=rounds,
                sides=list(sides), side_ms=ms, first_call_s=compile_s, device="cpu", dtype="float32",
                **{"pass": "train-step"})
    if "fsn" in ms and "transformer" in ms:
        case.update(fsn_ms=ms["fsn"], transformer_ms=ms["transformer"], ratio=ms["fsn"] / ms["transformer"])
    if "fsn-paper" in ms and "transformer" in ms:
        case["ratio_paper"] = ms["fsn-paper"] / ms["transformer"]
    if "fsn-stock-eager" in ms and "transformer" in ms:
        case["ratio_stock_eager"] = ms["fsn-stock-eager"] / ms["transformer"]
    if "fsn-compiled" in ms and "transformer-compiled" in ms:
        case["ratio_compiled"] = ms["fsn-compiled"] / ms["transformer-compiled"]
    if "fsn-compiled" in ms and "fsn" in ms:
        case["fsn_compile_speedup"] = ms["fsn"] / ms["fsn-compiled"]
    return case


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_bytes(fn: Callable[[], None]) -> Optional[int]:
    """Peak resident memory during one call above the resident memory before it (Linux:
    the high-water mark is reset through /proc/self/clear_refs). Only meaningful in a
    fresh process (freed heap memory is reused without raising the resident size): see
    :func:`op_peak_bytes`. None where /proc is not available."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kib("VmRSS")
    except OSError:
        return None
    fn()
    return (_status_kib("VmHWM") - base) * 1024


def op_peak_bytes(backend: str, B: int, T: int, H: int, D: int, NH: int, threads: int = 1) -> Optional[int]:
    """:func:`peak_bytes` of one op forward + backward, in a fresh Python process."""
    code = (f"import torch; torch.set_num_threads({threads}); from benchmarks import lib, cpu_steps; "
            f"from fsn_kernels import frustrated_attention; x = lib.make_inputs({B}, {T}, {H}, {D}, {NH}); "
            f"f = lambda th, g, c, om: frustrated_attention(th, g, c, om, backend={backend!r}); "
            f"print(cpu_steps.peak_bytes(lib.make_pass(f, x, 'fwd+bwd')))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(lib.ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    value = out.stdout.strip().splitlines()[-1]
    return None if value == "None" else int(value)


def op_case(T: int, B: int = 1, H: int = 4, D: int = 16, NH: int = 2, rounds: int = 3,
            backends=("auto", "reference"), peak: bool = True) -> List[Dict]:
    """The op's forward + backward per backend, alternated, with peak memory (``peak``:
    one fresh process per backend); every backend checked against the float64 reference
    first (on a prefix of up to 256)."""
    inputs = lib.make_inputs(B, T, H, D, NH)
    fns, cases = {}, []
    for backend in backends:
        def fwd(th, g, c, om, backend=backend):
            return frustrated_attention(th, g, c, om, backend=backend)
        fns[backend] = lib.make_pass(fwd, inputs, "fwd+bwd")
        err = lib.check_against_reference(fwd, inputs, torch.float32, max_t=256)
        cases.append(dict(impl=f"op-{backend}", backend=backend, B=B, T=T, H=H, D=D, NH=NH, dtype="float32",
                          device="cpu", max_err_vs_fp64=err, **{"pass": "fwd+bwd"}))
    ms = alternate(fns, rounds)
    for c in cases:
        c["ms"] = ms[c["backend"]]
        c["peak_mem_bytes"] = op_peak_bytes(c["backend"], B, T, H, D, NH, torch.get_num_threads()) if peak else None
        c["tokens_per_s"] = B * T / (c["ms"] * 1e-3)
    return cases


def decode_case(params: str = "250k", length: int = 3000, threads: int = 1, seed: int = 0) -> Dict:
    """Generation bytes/s on the CPU: greedy decoding of ``length`` bytes through the
    phase cache from a fresh model (the speed does not depend on the weights)."""
    from fsn_model.generate import sample

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = fsn_model.build_model("fsn", params)
        t = time.perf_counter()
        out = sample(model, list(b"The "), length, temperature=0.0)
        s = time.perf_counter() - t
    finally:
        torch.set_num_threads(before)
    assert len(out) == length
    return dict(impl="fsn-generate", params=params, length=length, step_threads=threads, seconds=s,
                bytes_per_s=length / s, device="cpu", **{"pass": "decode"})


def step_profile(model_name: str, params: str, B: int = 16, T: int = 128, steps: int = 3, rows: int = 25,
                 compiled: bool = False) -> str:
    """torch.profiler table (self CPU time, top ``rows``) of ``steps`` train steps after two
    warm-up steps, one thread; ``compiled``: ``torch.compile`` of the model."""
    from torch.profiler import ProfilerActivity, profile

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = fsn_model.build_model(model_name, params)
        step = train_step_fn(torch.compile(model) if compiled else model, B, T)
        if model_name.startswith("fsn"):
            step = _stock_setting(step, "auto")
        step()
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
    finally:
        torch.set_num_threads(before)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


@contextlib.contextmanager
def busy_load(n: int):
    """``n`` busy processes (a Python loop each) for the duration: a competing load, one per
    core for ``n = cores``; each ended by its own pid afterwards."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0.0)
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


# environment variables that would change what "the defaults" mean in the measured process
_DEFAULT_SENSITIVE = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS",
                      "FSN_STOCK_COMPILE")


def quickstart_case(args: List[str], out_dir: str, load: int = 0) -> Dict:
    """Wall time of ``python -m fsn_model.train --no-progress --overwrite --out OUT ARGS``
    (the quickstart when ARGS holds no settings) in a fresh process with the environment
    of a user who set nothing (no thread, wait-policy or compile variables), beside ``load``
    busy processes. Records the final val bits/byte, the steps run and the load average
    and core count at the start."""
    env = {k: v for k, v in os.environ.items() if k not in _DEFAULT_SENSITIVE}
    env["PYTHONPATH"] = os.pathsep.join([str(lib.ROOT), os.environ.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "fsn_model.train", "--no-progress", "--overwrite", "--out", out_dir, *args]
    with busy_load(load):
        load_avg = os.getloadavg()[0]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(lib.ROOT))
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    import json

    log = json.loads((lib.Path(out_dir) / "log.json").read_text())
    return dict(impl="quickstart", args=list(args), wall_s=wall, load_processes=load, load_average_at_start=load_avg,
                cores=len(os.sched_getaffinity(0)), final_val_bpb=log.get("final_val_bpb"),
                steps=log["val"][-1]["step"] if log.get("val") else None, train_wall_s=log.get("wall_time_s"),
                device="cpu",
                **{"pass": "fsn-train"})


def main() -> None:
    import json

    if sys.argv[1:2] == ["--profile"]:  # python -m benchmarks.cpu_steps --profile MODEL PARAMS [compiled]
        model_name, params = sys.argv[2], sys.argv[3]
        compiled = sys.argv[4:5] == ["compiled"]
        print(f"# {model_name} {params}, B = 16, T = 128, one thread, 3 train steps"
              f"{' under torch.compile' if compiled else ''}")
        print(step_profile(model_name, params, compiled=compiled))
        return

    for params in ("250k", "1M"):
        for threads in (1, 2):
            print(json.dumps(model_step_case(params, threads=threads)))
    for T in (128, 256, 512, 1024, 2048, 4096):
        for c in op_case(T, rounds=3 if T <= 1024 else 1):
            print(json.dumps(c))


if __name__ == "__main__":
    main()
