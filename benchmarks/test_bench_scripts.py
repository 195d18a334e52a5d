"""The CPU-runnable parts of the GPU tooling: what the benchmarks time (the shipped op by
backend, checked against the float64 reference), the result writer (schema + PNG), the
parity script (fp32 under the Triton interpreter), the suite launcher and its dry run, the
suite's summary, and the compile-only performance model."""
import json
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import lib
from fsn_kernels import naive_frustrated_attention, testing


@pytest.mark.parametrize("impl", ["stock", "reference"])
@pytest.mark.parametrize("omega", [True, False])
def test_timed_impls_are_the_shipped_op_and_match_the_reference(impl, omega, monkeypatch):
    """``lib.op_fn`` calls the public op with the impl's backend (nothing else computes it),
    and what it returns passes the benchmarks' check against float64."""
    backends = []
    real = lib.frustrated_attention
    monkeypatch.setattr(lib, "frustrated_attention", lambda *a, **k: backends.append(k["backend"]) or real(*a, **k))
    theta, gate, coupling, om = lib.make_inputs(2, 37, 3, 12, 3)
    err = lib.check_against_reference(lib.op_fn(impl), (theta, gate, coupling, om if omega else None), torch.float32)
    assert err < testing.benchmark_tolerance(torch.float32)
    assert set(backends) == {lib.OP_BACKENDS[impl]}


def test_the_check_rejects_a_wrong_impl():
    theta, gate, coupling, om = lib.make_inputs(1, 20, 2, 8, 2)
    with pytest.raises(AssertionError, match="differs from the float64 reference"):
        lib.check_against_reference(lambda a, b, c, o: lib.op_fn("stock")(a, b, c, o) * 1.01,
                                    (theta, gate, coupling, om), torch.float32)


def test_benchmark_and_parity_tolerances_come_from_the_one_table():
    assert testing.benchmark_tolerance(torch.bfloat16) == testing.TOLERANCES["benchmark-bfloat16"].atol == 6e-2
    assert testing.PARITY_MODES == ("float32", "bfloat16", "float16", "float32-autocast-bf16")
    assert [testing.parity_floor(m) for m in testing.PARITY_MODES] == [1e-5, 1e-3, 1e-4, 1e-3]


def test_write_results_schema(tmp_path):
    cases = [dict(impl=i, **{"pass": p}, B=1, T=t, H=2, D=16, NH=2, dtype="float32", ms=1.0 + t / 100,
                  tflops=0.1, peak_mem_bytes=None)
             for i in lib.IMPLS for p in ("fwd", "fwd+bwd") for t in (64, 128)]
    paths = lib.write_results(cases, tmp_path, stem="x")
    doc = json.loads(Path(paths["json"]).read_text())
    assert {"device", "torch", "triton", "commit", "cases"} <= set(doc)
    for c in doc["cases"]:
        assert {"impl", "pass", "B", "T", "H", "D", "NH", "ms", "tflops", "peak_mem_bytes"} <= set(c)
    fused = [c for c in doc["cases"] if c["impl"] == "fused"]
    assert all(set(c["speedup"]) == {"reference", "stock", "sdpa-yardstick"} for c in fused)
    assert Path(paths["png"]).stat().st_size > 1000


def test_default_output_is_not_results_on_cpu(monkeypatch):
    monkeypatch.delenv("FSN_BENCH_OUT", raising=False)
    if not torch.cuda.is_available():
        assert lib.output_dir() != lib.RESULTS_DIR
    monkeypatch.setenv("FSN_BENCH_OUT", "/tmp/somewhere")
    assert lib.output_dir() == Path("/tmp/somewhere")


def test_flops_formulas():
    # the op's matmul FLOPs: 2*B*H*T^2*(2D + 2*NH*D) / 2 causal; SDPA 4*B*H*T^2*D / 2; bwd = 2.5 fwd
    assert lib.op_flops(1, 10, 1, 4, 2) == 2 * 100 * (8 + 16) / 2
    assert lib.sdpa_flops(1, 10, 1, 12) == lib.op_flops(1, 10, 1, 4, 2)  # matched head dim D*(1+NH)
    assert lib.op_flops(2, 8, 3, 4, 2, "fwd+bwd") == 3.5 * lib.op_flops(2, 8, 3, 4, 2)


def test_gpu_parity_cpu_smoke(tmp_path):
    from benchmarks import gpu_parity

    rc = gpu_parity.main(["--device", "cpu", "--dtypes", "float32", "--shapes", "1,40,2,16,2", "--out", str(tmp_path)])
    assert rc == 0
    (path,) = tmp_path.glob("parity-*.json")
    doc = json.loads(path.read_text())
    assert doc["ok"] and doc["results"][0]["checks"][0]["quantity"] == "out"


def test_lowp_reference_is_the_op():
    from benchmarks.gpu_parity import lowp_reference

    theta, gate, coupling, omega = lib.make_inputs(1, 30, 2, 8, 2, requires_grad=False)
    ref = naive_frustrated_attention(theta, gate, coupling, omega)[0]
    assert testing.max_rel_err(lowp_reference(theta, gate, coupling, omega), ref) < 1e-5


def test_suite_script_syntax():
    script = Path(lib.ROOT) / "benchmarks" / "run_gpu_suite.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


# ------------------------------------------------------------------ the staged GPU suite
def test_gpu_suite_dry_run_writes_every_stage(tmp_path):
    """The CPU dry run of the one-command GPU suite: every stage through the same code path
    at tiny shapes under the interpreter; the JSONL, JSON and summary land in FSN_BENCH_OUT."""
    import os

    from benchmarks.suite.plan import STAGES

    script = Path(lib.ROOT) / "benchmarks" / "run_gpu_suite.sh"
    env = dict(os.environ, FSN_BENCH_OUT=str(tmp_path), OMP_NUM_THREADS="1")
    res = subprocess.run(["bash", str(script), "--dry-run"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (doc_path,) = tmp_path.glob("suite-dry-*.json")
    doc = json.loads(doc_path.read_text())
    assert doc["finished"] and doc["environment"]["dry_run"] and doc["environment"]["torch"]
    for stage in STAGES[1:]:
        cases = doc["stages"][stage]
        assert cases, f"stage {stage} recorded nothing"
        assert all(c["kind"] == "case" for c in cases), [c.get("error") for c in cases if c["kind"] != "case"]
    parity = [c for c in doc["stages"]["parity"]]
    assert {c["mode"] for c in parity} == {"float32", "bfloat16", "float16", "float32-autocast-bf16"}
    assert all(c["ok"] for c in parity)
    impls = {c["impl"]: c.get("backend") for c in doc["stages"]["op-core"]}
    assert impls == {"fused": "triton", "stock": "stock", "sdpa-yardstick": None}
    assert all(c["max_err_vs_fp64"] <= testing.benchmark_tolerance(torch.float32)
               for c in doc["stages"]["op-core"] if c["impl"] != "sdpa-yardstick")
    assert all(c["ms"] > 0 for c in doc["stages"]["op-core"])
    summary = next(tmp_path.glob("suite-dry-*-summary.txt")).read_text()
    assert "parity" in summary and "fsn/transformer" in summary and "0 errors" in summary
    assert (tmp_path / "suite-log.txt").exists()


def test_gpu_suite_budget_skips_and_records(tmp_path):
    """A case that would not fit the budget is skipped and recorded; the environment is
    always recorded; every record is on disk as soon as it is written."""
    from benchmarks.suite import run
    from benchmarks.suite.plan import build_plan
    from benchmarks.suite.records import read_records

    plan = build_plan("dry")
    path = run.run_suite(plan, tmp_path, budget_s=0.0, device="cpu", stages=("environment", "op-core"),
                               log=lambda m: None)
    records = read_records(path)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "environment" and kinds[-1] == "end"
    skipped = [r for r in records if r["kind"] == "skipped"]
    assert len(skipped) == sum(1 for c in plan.cases if c.stage == "op-core")
    assert all("budget" in r["reason"] for r in skipped)


def test_suite_reads_a_killed_run(tmp_path):
    """A run killed mid-write leaves a cut line: the reader keeps every whole record and the
    summary says the run did not finish."""
    from benchmarks.suite import summary
    from benchmarks.suite.records import read_records

    path = tmp_path / "suite-x.jsonl"
    full = [dict(kind="environment", device="NVIDIA H100 80GB HBM3", gpu="NVIDIA H100 80GB HBM3"),
            dict(kind="case", case_kind="op", stage="op-core", impl="fused", **{"pass": "fwd+bwd"}, B=4, T=4096,
                 H=16, D=32, NH=2, dtype="bfloat16", ms=2.0, tflops=100.0),
            dict(kind="case", case_kind="op", stage="op-core", impl="sdpa-yardstick", **{"pass": "fwd+bwd"}, B=4,
                 T=4096, H=16, D=32, NH=2, dtype="bfloat16", ms=1.5, tflops=130.0),
            dict(kind="case", case_kind="op", stage="op-core", impl="stock", backend="stock",
                 **{"pass": "fwd+bwd"}, B=4, T=4096, H=16, D=32, NH=2, dtype="bfloat16", ms=5.0, tflops=40.0)]
    path.write_text("".join(json.dumps(r) + "\n" for r in full) + '{"kind": "case", "ms": 1.')
    records = read_records(path)
    assert len(records) == 4
    preds = dict(predictions=[dict(device="H100", B=4, T=4096, H=16, D=32, NH=2, **{"pass": "fwd+bwd"},
                                   fused_ms=1.0)])
    text = summary.summarize(records, preds)
    assert "NOT FINISHED" in text
    assert "fused/yardstick TFLOP/s 0.75 (misses 0.9)" in text
    assert "fused vs stock 2.50x (meets 2x)" in text
    import re

    assert re.search(r"2\.000 +100\.0 +1\.500 .* 1\.000 +2\.00\n", text)  # predicted 1 ms beside the measured 2


# ------------------------------------------------------------------ the performance model
SASS_SNIPPET = """
        Function : _k
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/              @!P6 BRA 0x0080 ;
        /*0020*/                   HGMMA.64x64x16.F32.BF16 R88, gdesc[UR12], RZ, !UPT ;
        /*0030*/                   MUFU.EX2 R3, R3 ;
        /*0040*/                   HGMMA.64x128x16.F32.BF16 R24, R120, gdesc[UR12].tnspB, R24, gsb0 ;
        /*0050*/              @!P0 BRA 0x0020 ;
        /*0060*/                   FFMA R1, R1, R1, R1 ;
        /*0070*/                   BRA 0x0070;
        /*0080*/                   EXIT ;
"""


def test_sass_loop_counter_on_a_known_listing():
    import os

    interpret = os.environ.get("TRITON_INTERPRET")
    from benchmarks.static import sass_loops

    assert os.environ.get("TRITON_INTERPRET") == interpret  # importing it leaves the interpreter setting alone

    instrs = sass_loops.parse_sass(SASS_SNIPPET)
    assert len(instrs) == 9
    (loop,) = sass_loops.mma_loops(instrs, num_warps=8)  # the self-branch at 0x70 holds no MMA
    assert (loop["start"], loop["end"], loop["instrs"], loop["mufu"]) == (0x20, 0x50, 4, 1)
    assert loop["mma_flops"] == 2 * (2 * 64 * 64 * 16 + 2 * 64 * 128 * 16)  # two warpgroups


@pytest.mark.parametrize("role", ["forward", "backward-q", "backward-kv"])
@pytest.mark.parametrize("T,bm,bn", [(1024, 128, 64), (1000, 32, 128), (77, 64, 32)])
def test_flash_iterations_cover_every_causal_tile(role, T, bm, bn):
    """The loop trip counts of the model tile the causal triangle: every (query block, key
    block) pair at or below the diagonal once, nothing above it."""
    from benchmarks.static.perf_model import flash_iterations

    its = flash_iterations(role, T, bm, bn)
    pairs = sum(it["masked"] + it["unmasked"] for it in its)
    if role == "backward-kv":
        want = sum(len(range((j * bn // bm) * bm, T, bm)) for j in range(-(-T // bn)))
    else:
        want = sum(len(range(0, min(i * bm + bm, T), bn)) for i in range(-(-T // bm)))
    assert pairs == want


def test_committed_predictions_follow_from_the_committed_sass_counts():
    """benchmarks/results/perf-model-sm90.json is what perf_model computes from the committed
    SASS counts (so the first GPU run checks the model as committed)."""
    from benchmarks.static import perf_model

    committed = json.loads((perf_model.RESULTS / "perf-model-sm90.json").read_text())
    assert perf_model.build() == committed
    p = next(p for p in committed["predictions"] if p["device"] == "H100" and p["T"] == 4096 and p["pass"] == "fwd")
    assert p["fused_ms"] >= p["sdpa_ceiling_ms"] > 0  # a floor never beats the tensor ceiling
    assert {k["role"] for k in p["kernels"]} == {"feature", "forward", "demodulate"}


def test_parity_runs_with_fixed_tiles(monkeypatch):
    """Parity compiles no autotune candidates; the setting is restored afterwards."""
    import os

    from benchmarks.suite import run
    from fsn_kernels.frustrated_attention import launch_policy

    monkeypatch.setenv("FSN_AUTOTUNE", "1")
    with run.fixed_tiles():
        assert os.environ["FSN_AUTOTUNE"] == "0" and not launch_policy.autotuning()
    assert os.environ["FSN_AUTOTUNE"] == "1"
