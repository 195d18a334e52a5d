#!/usr/bin/env bash
# One command on a GPU machine: the full benchmark grid + GPU parity, results in
# benchmarks/results/ (<device>-<date>.json + .png, parity-<device>-<date>.json).
#   bash benchmarks/run_gpu_suite.sh                  # bf16 grid
#   FSN_BENCH_DTYPES=bfloat16,float32 bash benchmarks/run_gpu_suite.sh
# Extra arguments go to pytest (e.g. -k "T8192").
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "run_gpu_suite.sh: no CUDA GPU visible; nothing to do (CPU smoke: python3 -m pytest benchmarks/)" >&2
    exit 2
fi
export FSN_BENCH_OUT="${FSN_BENCH_OUT:-benchmarks/results}"
mkdir -p "$FSN_BENCH_OUT"
python3 -m benchmarks.gpu_parity --out "$FSN_BENCH_OUT" | tee "$FSN_BENCH_OUT/parity-log.txt"
parity=${PIPESTATUS[0]}
python3 -m pytest benchmarks/ -m gpu -q -p no:cacheprovider --benchmark-columns=median,min,max,rounds \
    --benchmark-sort=name "$@" | tee "$FSN_BENCH_OUT/bench-log.txt"
bench=${PIPESTATUS[0]}
echo "parity exit $parity, benchmarks exit $bench; results in $FSN_BENCH_OUT"
exit $(( parity != 0 || bench != 0 ))
