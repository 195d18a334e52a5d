"""The CPU-runnable parts of the GPU tooling: the result writer (schema + PNG), the
parity script (fp32 under the Triton interpreter), the suite launcher's syntax, and the
composition's variants against the float64 reference (forward and gradients)."""
import json
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks import lib
from fsn_kernels import naive_frustrated_attention, testing


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("omega", [True, False])
def test_composition_matches_reference(split, omega):
    theta, gate, coupling, om = lib.make_inputs(2, 37, 3, 12, 3)
    err = lib.check_against_reference(lambda a, b, c, o: lib.composition_attention(a, b, c, o, split=split),
                                      (theta, gate, coupling, om if omega else None), torch.float32)
    assert err < 1e-4


def test_folded_composition_is_exact_in_float64():
    """The folded value (one key slot carries K z_{j-1} + L z_j) is the op itself, not an
    approximation: in float64 it matches the reference to rounding."""
    theta, gate, coupling, om = testing.make_inputs(2, 29, 2, 5, 3, dtype=torch.float64, omega="rope")
    out = lib.composition_attention(theta, gate, coupling, om)
    ref = naive_frustrated_attention(theta, gate, coupling, om)[0]
    assert testing.max_rel_err(out, ref) < 1e-12


def test_write_results_schema(tmp_path):
    cases = [dict(impl=i, **{"pass": p}, B=1, T=t, H=2, D=16, NH=2, dtype="float32", ms=1.0 + t / 100,
                  tflops=0.1, peak_mem_bytes=None)
             for i in ("fused", "reference", "composition", "sdpa") for p in ("fwd", "fwd+bwd") for t in (64, 128)]
    paths = lib.write_results(cases, tmp_path, stem="x")
    doc = json.loads(Path(paths["json"]).read_text())
    assert {"device", "torch", "triton", "commit", "cases"} <= set(doc)
    for c in doc["cases"]:
        assert {"impl", "pass", "B", "T", "H", "D", "NH", "ms", "tflops", "peak_mem_bytes"} <= set(c)
    fused = [c for c in doc["cases"] if c["impl"] == "fused"]
    assert all(set(c["speedup"]) == {"reference", "composition", "sdpa"} for c in fused)
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
