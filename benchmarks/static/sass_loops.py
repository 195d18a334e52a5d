"""Count the sm_90 SASS instructions of the fused kernels' loops, without a GPU.

``aot_check`` compiles every kernel for sm_90 on a CPU machine (Triton's bundled ptxas).
This script compiles the launched configuration of each kernel at one shape class (bf16
operands, NH = 2, D = 32 by default), disassembles each cubin with the ``cuobjdump``
that ships with Triton and records, per kernel:

* ``loops``: each backward branch ``BRA target`` at address ``b > target`` whose range
  ``[target, b]`` holds tensor-core instructions and no such inner range, in code order,
  with its static instruction count (one per 16 bytes: every warp issues each once per
  iteration) and the MMA FLOPs one iteration executes per program (``HGMMA.MxNxK``:
  ``2 M N K`` per warpgroup, ``num_warps / 4`` warpgroups; ``HMMA.16816``: 4096 per warp);
* ``instrs``: the kernel's static instruction count; ``outside``: those in no MMA loop
  (prologue and epilogue; for the per-token passes, which have no loops, all of them);
  ``mufu`` / ``mufu_outside``: special-function instructions (exp2, log2, rcp) in each
  loop and outside them;
* registers, stack bytes and shared memory as ``aot_check`` reports them.

The result, ``benchmarks/results/sass-sm90-<dtype>-nh<NH>-d<D>.json``, is what
``benchmarks/static/perf_model.py`` reads. Usage::

    python -m benchmarks.static.sass_loops                       # bf16, NH=2, D=32 -> benchmarks/results/
    python -m benchmarks.static.sass_loops --nh 2 --d 64 --out /tmp/x.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

RESULTS = Path(__file__).resolve().parent.parent / "results"
LOOP_ORDER = {  # the flash kernels' two loops, in code order (see their sources)
    "forward": ("unmasked", "masked"),
    "backward-q": ("unmasked", "masked"),
    "backward-kv": ("masked", "unmasked"),
}
_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Za-z0-9_.]*)\s*([^;]*);")
_MMA = re.compile(r"^(HGMMA|HMMA)\.(\d+)x?(\d+)x?(\d+)?")


def cuobjdump() -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no cuobjdump at {path}: this Triton does not ship one")
    return path


def parse_sass(text: str) -> List[tuple]:
    """``cuobjdump -sass`` text of one kernel -> [(address, opcode, operands)]."""
    return [(int(m.group(1), 16), m.group(3), m.group(4).strip()) for m in _LINE.finditer(text)]


def mma_flops(opcode: str, num_warps: int) -> int:
    """FLOPs one static MMA instruction executes per program."""
    shape = re.match(r"HGMMA\.(\d+)x(\d+)x(\d+)", opcode)
    if shape:
        m, n, k = (int(x) for x in shape.groups())
        return 2 * m * n * k * (num_warps // 4)
    if opcode.startswith("HMMA.16816"):
        return 2 * 16 * 8 * 16 * num_warps
    if opcode.startswith("HMMA.1688"):
        return 2 * 16 * 8 * 8 * num_warps
    return 0


def mma_loops(instrs: List[tuple], num_warps: int) -> List[Dict]:
    """The innermost backward-branch ranges holding MMA instructions, in code order."""
    ranges = []
    for addr, op, operands in instrs:
        if op == "BRA":
            m = re.search(r"0x([0-9a-f]+)", operands)
            if m and int(m.group(1), 16) < addr:
                ranges.append((int(m.group(1), 16), addr))
    with_mma = []
    for lo, hi in ranges:
        body = [(a, op) for a, op, _ in instrs if lo <= a <= hi]
        flops = sum(mma_flops(op, num_warps) for _, op in body)
        if flops:
            with_mma.append(dict(start=lo, end=hi, instrs=len(body), mma_flops=flops,
                                 mufu=sum(1 for _, op in body if op.startswith("MUFU")),
                                 mma=sorted({op.split(".F32")[0] for _, op in body if _MMA.match(op)})))
    inner = [r for r in with_mma
             if not any(o is not r and r["start"] <= o["start"] and o["end"] <= r["end"] for o in with_mma)]
    return sorted(inner, key=lambda r: r["start"])


def analyse(cubin: str, num_warps: int) -> Dict:
    res = subprocess.run([cuobjdump(), "-sass", cubin], capture_output=True, text=True, check=True)
    instrs = parse_sass(res.stdout)
    loops = mma_loops(instrs, num_warps)
    in_loops = sum(r["instrs"] for r in loops)
    mufu_loops = sum(r["mufu"] for r in loops)
    return dict(instrs=len(instrs), outside=len(instrs) - in_loops, loops=loops,
                mufu_outside=sum(1 for _, op, _ in instrs if op.startswith("MUFU")) - mufu_loops,
                ldl_stl=sum(1 for _, op, _ in instrs if op.startswith(("LDL", "STL"))))


def collect(nh: int, d: int, dtype: str, work: str) -> Dict:
    """Compile (aot_check) and analyse the launched kernels of one shape class."""
    import triton

    report = os.path.join(work, "aot.json")
    cmd = [sys.executable, "-m", "fsn_kernels.frustrated_attention.aot_check", "--shapes", f"{nh}:{d}",
           "--dtypes", dtype, "--json", report, "--out-dir", os.path.join(work, "cubin")]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # a GPU target, not the interpreter
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    kernels = []
    for r in json.load(open(report)):
        if r.get("varlen") or "error" in r or "cubin" not in r:
            continue
        if r["role"] in ("feature", "feature-bwd", "chain") and not r["has_omega"]:
            continue  # the model's rotary drift: omega on
        if r["role"] in (*LOOP_ORDER, "demodulate") and not r["has_omega"]:
            continue  # the same binary listed twice
        rec = {k: r[k] for k in ("kernel", "role", "block_m", "block_n", "num_warps", "num_stages", "registers",
                                 "stack_bytes", "shared") if k in r}
        rec["config_index"] = r.get("config_index", 0)
        rec.update(analyse(r["cubin"], r["num_warps"]))
        if r["role"] in LOOP_ORDER:
            for name, loop in zip(LOOP_ORDER[r["role"]], rec["loops"]):
                loop["name"] = name
                loop["issue_per_kflop"] = round(loop["instrs"] * r["num_warps"] / (loop["mma_flops"] / 1000), 3)
        kernels.append(rec)
    return dict(arch="sm_90", triton=triton.__version__, dtype=dtype, NH=nh, D=d,
                command=f"python -m benchmarks.static.sass_loops --dtype {dtype} --nh {nh} --d {d}", kernels=kernels)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--nh", type=int, default=2)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--out", default=None, help="default benchmarks/results/sass-sm90-<dtype>-nh<NH>-d<D>.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fsn-sass-") as work:
        doc = collect(args.nh, args.d, args.dtype, work)
    out = Path(args.out) if args.out else RESULTS / f"sass-sm90-{args.dtype}-nh{args.nh}-d{args.d}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for k in doc["kernels"]:
        loops = ", ".join(f"{x.get('name', '?')} {x['instrs']} instrs/{x['mma_flops']} FLOP"
                          + (f" ({x['issue_per_kflop']}/kFLOP)" if "issue_per_kflop" in x else "") for x in k["loops"])
        print(f"{k['role']:12} cfg{k['config_index']} bm{k['block_m']} bn{k['block_n']} w{k['num_warps']}: "
              f"{k['instrs']} instrs, {k['outside']} outside loops; {loops}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
