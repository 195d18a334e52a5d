#!/usr/bin/env bash
# One prepared command for a GPU machine: the staged suite inside a wall-clock budget.
#   FSN_BENCH_OUT=/some/dir bash benchmarks/run_gpu_suite.sh            # GPU, ~7 min at most
#   FSN_BENCH_OUT=/some/dir bash benchmarks/run_gpu_suite.sh --dry-run  # CPU, tiny shapes, ~30 s
#   bash benchmarks/run_gpu_suite.sh --budget 300 --stages environment,parity,op-core
# Stages (priority order): environment, parity, op-core (T = 4k, 1k, 16k), model, op-grid,
# decode; a case that would not fit the budget is skipped and recorded as such. Writes to
# $FSN_BENCH_OUT (default benchmarks/results/ on a GPU, .benchmarks/cpu/ otherwise):
#   suite-<device>-<date>.jsonl        one record per case, appended as it is measured
#   suite-<device>-<date>.json         environment + each stage's cases
#   suite-<device>-<date>-summary.txt  the target ratios, predictions next to measurements
#   suite-log.txt                      this run's output
# A hard timeout (budget + 40 s) stops a hung case; the summary is then made from the
# JSONL anyway. Options after the script name go to benchmarks/suite/run.py.
set -uo pipefail
cd "$(dirname "$0")/.."
export FSN_SUITE_T0="$(date +%s.%N)"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
export PYTHONUNBUFFERED=1
budget=400
dry=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --dry-run) dry=1 ;;
        --budget) budget="${args[$((i + 1))]:-}" ;;
        --budget=*) budget="${args[$i]#--budget=}" ;;
    esac
done
if ! [[ "$budget" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "run_gpu_suite.sh: --budget needs a number of seconds, got '$budget'" >&2
    exit 2
fi
if [[ $dry == 1 ]]; then
    export TRITON_INTERPRET=1
elif ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "run_gpu_suite.sh: no CUDA GPU visible (on a CPU machine: --dry-run)" >&2
    exit 2
fi
if [[ -n "${FSN_BENCH_OUT:-}" ]]; then
    out="$FSN_BENCH_OUT"
elif [[ $dry == 1 ]]; then
    out=.benchmarks/cpu
else
    out=benchmarks/results
fi
mkdir -p "$out"
export FSN_BENCH_OUT="$out"
hard=$(python3 -c "print(int(float('$budget')) + 40)")
timeout --signal=INT --kill-after=10 "$hard" python3 -m benchmarks.suite.run --out "$out" "$@" 2>&1 | tee "$out/suite-log.txt"
rc=${PIPESTATUS[0]}
if [[ $rc == 124 || $rc == 130 || $rc == 137 ]]; then
    echo "run_gpu_suite.sh: stopped by the hard timeout (${hard} s); summary of what was recorded:" | tee -a "$out/suite-log.txt"
    latest=$(ls -t "$out"/suite-*.jsonl 2>/dev/null | head -1)
    [[ -n "$latest" ]] && python3 -m benchmarks.suite.run --summary-only "$latest" 2>&1 | tee -a "$out/suite-log.txt"
fi
exit "$rc"
