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

DEFAULT_SHAPES = ["2,1000,4,32,2", "1,2048,16,32,2", "3,63,2,64,2", "2,511,8,32,4", "2,777,4,60,1"]
FLOOR = {"float32": 1e-5, "bfloat16": 1e-3, "float16": 1e-4, "float32-autocast-bf16": 1e-3}
MODES = tuple(FLOOR)  # tensor dtype, or fp32 tensors under bf16 autocast


def lowp_reference(theta, gate, coupling, omega, scale=None):
    """The reference math with every tensor and matmul in theta's dtype (no upcast): what a
    user gets from plain PyTorch in bf16."""
    from fsn_kernels import naive_frustrated_attention

    return naive_frustrated_attention(theta, gate, coupling, omega, scale, compute_dtype=theta.dtype)[0]


def check_shape(shape, mode, device):
    """Errors of the fused op and of its same-precision baseline vs float64 at one shape.

    ``mode``: a dtype name of ``MODES`` (or a torch dtype): "float32", "bfloat16",
    "float16", or "float32-autocast-bf16" (fp32 tensors, the op called under
    ``torch.autocast(device, bfloat16)``)."""
    from fsn_kernels import frustrated_attention

    mode = str(mode).replace("torch.", "")
    if mode not in FLOOR:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    autocast = mode.endswith("-autocast-bf16")
    dtype = torch.float32 if autocast else getattr(torch, mode)
    B, T, H, D, NH = shape
    theta, gate, coupling, omega = lib.make_inputs(B, T, H, D, NH, device=device, dtype=torch.float32,
                                                   requires_grad=False)
    upstream = torch.randn(B, T, H, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(device)

    x_th, x_g = theta.to(dtype), gate.to(dtype)  # every side, float64 included, sees the same rounded inputs
    ref = testing.reference_output_and_grads(x_th, x_g, coupling, omega, upstream)

    def fused_fn(*a):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            return frustrated_attention(*a, backend="triton")

    fused = testing.output_and_grads(fused_fn, x_th, x_g, coupling, omega, upstream)
    if mode == "float32":
        base = testing.output_and_grads(lambda *a: frustrated_attention(*a, backend="torch"), x_th, x_g, coupling,
                                        omega, upstream)
        base_name = "torch reference, fp32"
    else:
        low = torch.bfloat16 if autocast else dtype
        base = testing.output_and_grads(lowp_reference, x_th.to(low), x_g.to(low), coupling, omega, upstream.to(low))
        base_name = f"plain PyTorch in {str(low).replace('torch.', '')}"
    rows = []
    for name, f, b, r in zip(("out", "dtheta", "dgate", "dcoupling"), fused, base, ref):
        ef, eb = testing.max_rel_err(f, r), testing.max_rel_err(b, r)
        bound = 2 * eb + FLOOR[mode]
        rows.append(dict(quantity=name, fused_err=ef, baseline_err=eb, bound=bound, ok=bool(ef <= bound)))
    return dict(shape=dict(B=B, T=T, H=H, D=D, NH=NH), dtype=mode,
                baseline=base_name, checks=rows, ok=all(r["ok"] for r in rows))


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
               rule="fused_err <= 2 * baseline_err + floor; err = max|x - ref64| / max(1, max|ref64|)",
               floor=dict(FLOOR), results=results,
               ok=all(r["ok"] for r in results))
    path = out_dir / f"parity-{lib.device_slug()}-{_dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(doc, indent=1))
    print(f"{'PASS' if doc['ok'] else 'FAIL'}: wrote {path}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
