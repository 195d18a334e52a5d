#!/usr/bin/env bash
# The GPU machine's stack, checked on a CPU: a fresh venv with triton 3.6.0 (the GPU
# machine's), the CPU build of torch 2.13.0 and a numpy that triton 3.6's interpreter works
# with (< 2.3: it converts 1-element loop bounds with int(array), which numpy >= 2.3
# refuses). In it:
#   1. every kernel role compiles for sm_90 with 0 stack bytes and <= 227 KiB of shared
#      memory, bf16 at one value width of each tile-config branch (NH:D 2:32, 4:32, 4:64)
#      and fp16 at 2:32 (the full bf16/fp16 grid is `aot_check --assert-clean`);
#   2. a kernel parity subset passes under its interpreter;
#   3. the GPU suite's dry run passes with it.
# Usage: bash .ci/gpu_stack.sh [VENV_DIR]   (default: a fresh temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-$(mktemp -d /tmp/fsn-gpu-stack-XXXXXX)}"
rm -rf "$venv"
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$py" -m pip install -q "torch==2.13.0" "triton==3.6.0" "numpy<2.3" pytest hypothesis pytest-benchmark tqdm matplotlib
"$py" -c "import torch, triton, numpy; print('gpu stack venv: torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
export PYTHONPATH="$(pwd)"
work="$(mktemp -d /tmp/fsn-gpu-stack-aot-XXXXXX)"

echo "== sm_90 compile (triton 3.6): bf16 at NH:D 2:32, 4:32, 4:64; fp16 at 2:32"
env -u TRITON_INTERPRET "$py" -m fsn_kernels.frustrated_attention.aot_check --shapes 2:32,4:32,4:64 --dtypes bf16 \
    --json "$work/bf16.json" --out-dir "$work/cubin" > "$work/bf16.log"
env -u TRITON_INTERPRET "$py" -m fsn_kernels.frustrated_attention.aot_check --shapes 2:32 --dtypes fp16 \
    --json "$work/fp16.json" --out-dir "$work/cubin" > "$work/fp16.log"
tail -n 1 "$work/bf16.log" "$work/fp16.log"
env -u TRITON_INTERPRET "$py" - "$work/bf16.json" "$work/fp16.json" <<'EOF'
import json, sys
from fsn_kernels.frustrated_attention.aot_check import CLEAN_SHAPES, clean_violations
records = [r for path in sys.argv[1:] for r in json.load(open(path))]
roles = {r["role"] for r in records}
need = {"feature", "feature-bwd", "forward", "demodulate", "backward-kv", "backward-q", "chain", "decode",
        "decode-combine"}
assert need <= roles, f"roles not compiled: {sorted(need - roles)}"
assert all((r["NH"], r["D"]) in CLEAN_SHAPES for r in records)
bad = clean_violations(records) + [r for r in records if "error" in r]
for r in bad:
    print("NOT CLEAN:", r["kernel"], r["dtype"], r["NH"], r["D"], r.get("stack_bytes"), r.get("shared"), r.get("error"))
print(f"{len(records)} kernels compiled for sm_90, {len(bad)} not clean")
sys.exit(1 if bad else 0)
EOF

echo "== kernel parity subset under triton 3.6's interpreter"
TRITON_INTERPRET=1 OMP_NUM_THREADS=1 "$py" -m pytest -q -p no:cacheprovider tests/ops/test_forward.py \
    tests/ops/test_backward.py tests/ops/test_decoding.py -x \
    -k "backward_matches_reference or fp16_operands or decode_equals_full_op_kernels"

echo "== GPU suite dry run under triton 3.6"
OMP_NUM_THREADS=1 FSN_BENCH_OUT="$work/suite" PATH="$venv/bin:$PATH" bash benchmarks/run_gpu_suite.sh --dry-run >"$work/suite.log" 2>&1 \
    || { tail -n 40 "$work/suite.log"; exit 1; }
tail -n 3 "$work/suite.log"
rm -rf "$work"
[[ $# -ge 1 ]] || rm -rf "$venv"
