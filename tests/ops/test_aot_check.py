"""The kernels compile for a real GPU target (sm_90) on any machine: Triton lowers them
with its bundled ptxas, no driver needed. This catches what the CPU interpreter cannot
(code that does not lower on the real backend, such as a non-constexpr global)."""
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run(
        [sys.executable, "-m", "fsn_kernels.frustrated_attention.aot_check", "--quick", "--dtypes", "fp32,bf16"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert res.returncode == 0 and "FAILED" not in res.stdout, res.stdout + res.stderr[-3000:]
    rows = [line.split() for line in res.stdout.splitlines() if line.startswith("_")]
    kernels = {"_features_kernel", "_fwd_kernel", "_demodulate_kernel", "_bwd_kv_kernel", "_bwd_q_kernel",
               "_chain_kernel", "_decode_split_kernel", "_decode_combine_kernel"}
    assert {(r[0], r[2]) for r in rows} == {(k, d) for k in kernels for d in ("fp32", "bf16")}, res.stdout
    assert all(int(r[-1]) > 0 for r in rows), "every kernel reports its shared memory"
    decode = [r for r in rows if r[0].startswith("_decode")]
    assert decode and all(int(r[-2]) == 0 for r in decode), "the decode kernels spill nothing (0 stack bytes)"
