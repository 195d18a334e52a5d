#!/usr/bin/env bash
# The GPU machine's stack, checked on a CPU, in a fresh venv: Python 3.12, torch 2.11.0 (the
# CUDA build, which runs on a CPU), triton 3.6.0 and numpy 2.4.6 as the GPU machine has them
# (its numpy is 2.5.2, which the package index here lacks: 2.4.6 is the newest it has), plus
# transformers 5.0.0, the floor setup.py declares (the main venv tests the newest). In it:
#   1. every kernel role compiles for sm_90 with 0 stack bytes and <= 227 KiB of shared
#      memory, bf16 at one value width of each tile-config branch (NH:D 2:32, 4:32, 4:64)
#      and fp16 at 2:32 (the full bf16/fp16 grid is `aot_check --assert-clean`);
#   2. the stock-PyTorch path against float64, the models, training, checkpoints and
#      Hugging Face (generate, export) on that torch and transformers;
#   3. a kernel parity subset under triton 3.6's interpreter, after numpy is lowered to < 2.3
#      (the interpreter converts 1-element loop bounds with int(array), which numpy >= 2.3
#      refuses; the GPU machine runs the kernels compiled, not interpreted);
#   4. the GPU suite's dry run.
# Usage: bash .ci/gpu_stack.sh [VENV_DIR]   (default: a fresh temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-$(mktemp -d /tmp/fsn-gpu-stack-XXXXXX)}"
rm -rf "$venv"
python312=python3  # the GPU machine's Python is 3.12: use one where this machine has it
for candidate in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
    if "$candidate" -c "" >/dev/null 2>&1; then python312="$candidate"; break; fi
done
"$python312" -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$py" -m pip install -q "torch==2.11.0" "triton==3.6.0" "numpy==2.4.6" "transformers==5.0.0" safetensors accelerate \
    pytest hypothesis pytest-benchmark tqdm matplotlib
"$py" -c "import sys, torch, triton, numpy, transformers; print('gpu stack venv: python', sys.version.split()[0], \
'torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__, 'transformers', transformers.__version__)"
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

echo "== stock path, models, training and Hugging Face on torch 2.11 and transformers 5.0"
OMP_NUM_THREADS=1 "$py" -m pytest -q -p no:cacheprovider tests/ops/test_stock.py tests/models/test_hf.py \
    tests/models/test_hf_swap.py tests/models/test_checkpoint.py tests/models/test_model_layers.py -x -k "not triton"

echo "== kernel parity subset under triton 3.6's interpreter (numpy < 2.3)"
"$py" -m pip install -q "numpy<2.3"
TRITON_INTERPRET=1 OMP_NUM_THREADS=1 "$py" -m pytest -q -p no:cacheprovider tests/ops/test_forward.py \
    tests/ops/test_backward.py tests/ops/test_decoding.py -x \
    -k "backward_matches_reference or fp16_operands or decode_equals_full_op_kernels"

echo "== GPU suite dry run under triton 3.6"
OMP_NUM_THREADS=1 FSN_BENCH_OUT="$work/suite" PATH="$venv/bin:$PATH" bash benchmarks/run_gpu_suite.sh --dry-run >"$work/suite.log" 2>&1 \
    || { tail -n 40 "$work/suite.log"; exit 1; }
tail -n 3 "$work/suite.log"
rm -rf "$work"
[[ $# -ge 1 ]] || rm -rf "$venv"
