"""GPU parity of the fused op: forward and every gradient, fp32, bf16, fp16 and fp32
tensors under bf16 autocast, against a float64 reference, with flash-attention's
tolerance rule.

Rule: for each quantity (dtheta, d theta, d gate, d coupling), the fused kernel's error
against the float64 reference must be at most ``2 x`` the error of the plain-PyTorch
reference run in the same precision (bf16/fp16: every tensor and matmul in that dtype;
fp32: the fp32 reference; fp32 under bf16 autocast: plain PyTorch in bf16) plus a small
absolute floor. Errors are max |x - ref64| / max(1, max|ref64|).

    python -m benchmarks.gpu_parity                   # GPU: every mode, writes benchmarks/results/
    python -m benchmarks.gpu_parity --device cpu --dtypes float32 --shapes 1,40,2,16,2 --out /tmp/x
                                                      # CPU smoke (Triton interpreter)

Writes ``parity-<device>-<date>.json`` (raw errors per shape, dtype and quantity, and the
verdict) to ``--out`` (default: benchmarks/results on a GPU, .benchmarks/cpu otherwise).
Exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path

if "TRITON_INTERPRET" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from benchmarks import lib  # noqa: E402
from fsn_kernels import testing  # noqa: E402

DEFAULT_SHAPES = testing.PARITY_SHAPES
MODES = testing.PARITY_MODES
lowp_reference = testing.lowp_reference
check_shape = testing.parity_check


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtypes", default=",".join(MODES), help=f"any of {', '.join(MODES)}")
    p.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="B,T,H,D,NH each")
    p.add_argument("--out", default=None, help="output folder (default: see module docs)")
    args = p.parse_args(argv)
    if args.device == "cpu" and "bfloat16" in args.dtypes:
        print("note: Triton's CPU interpreter computes bf16 matmuls wrongly; test bf16 on a GPU")
    results = []
    for spec in args.shapes:
        shape = tuple(int(x) for x in spec.split(","))
        for dname in args.dtypes.split(","):
            r = check_shape(shape, dname, args.device)
            results.append(r)
            for c in r["checks"]:
                print(f"{'ok  ' if c['ok'] else 'FAIL'} {spec:>16} {r['dtype']:>8} {c['quantity']:>9}: "
                      f"fused {c['fused_err']:.2e}  {r['baseline']} {c['baseline_err']:.2e}  bound {c['bound']:.2e}")
    out_dir = Path(args.out) if args.out else lib.output_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = dict(lib.environment(), kind="parity",
               rule=testing.PARITY_RULE,
               floor={m: testing.parity_floor(m) for m in MODES}, results=results,
               ok=all(r["ok"] for r in results))
    path = out_dir / f"parity-{lib.device_slug()}-{_dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(doc, indent=1))
    print(f"{'PASS' if doc['ok'] else 'FAIL'}: wrote {path}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
