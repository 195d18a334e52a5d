"""Compile the fused kernels for a GPU target without a GPU, and report their resources.

Triton compiles to PTX and a cubin with its bundled ``ptxas`` and needs no driver, so a
CPU-only machine can catch what the interpreter cannot: code that does not lower on the
real backend, and register spills. Usage::

    python -m fsn_kernels.frustrated_attention.aot_check            # sm_90 (Hopper)
    python -m fsn_kernels.frustrated_attention.aot_check --arch 80

Prints one line per (kernel, dtype, NH, D) with registers, stack bytes (local memory:
spills) and shared memory,
and exits 1 if any compile fails. It must run with TRITON_INTERPRET unset (it unsets it
itself before importing triton).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from .backward import _bwd_kv_kernel, _bwd_q_kernel  # noqa: E402
from .common import DOT_BF16, DOT_FP16, DOT_IEEE, block_d_for, harmonic_constants, pick_config  # noqa: E402
from .forward import _fwd_kernel  # noqa: E402

DTYPES = {"fp32": ("fp32", DOT_IEEE), "bf16": ("bf16", DOT_BF16), "fp16": ("fp16", DOT_FP16)}
CASES = [(1, 4), (2, 32), (3, 24), (2, 64), (4, 64), (8, 16), (1, 128), (8, 128)]  # (NH, D)


def _signature(kernel, dtype: str):
    """Triton signature strings for a kernel's arguments: pointers to the input dtype for
    the phase tensors, fp32 elsewhere; i32 sizes; fp32 scales; constexpr flags."""
    inputs = {"THETA", "GATE", "GRAD", "OUT", "DTHETA", "DGATE"}
    sig = {}
    for name in kernel.arg_names:
        if name in ("T", "H", "D", "NH"):
            sig[name] = "i32"
        elif name.isupper():
            sig[name] = f"*{dtype}" if name in inputs else "*fp32"
        elif name.startswith("scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "constexpr"
    return sig


def _cubin_report(cubin: bytes):
    """(registers, spill bytes) of a compiled kernel, read from its cubin by the cuobjdump
    that ships with Triton."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    path = f"/tmp/fsn_aot_{os.getpid()}.cubin"
    with open(path, "wb") as f:
        f.write(cubin)
    res = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True)
    regs = re.search(r"REG:(\d+)", res.stdout)
    spills = re.search(r"STACK:(\d+)", res.stdout)
    return (int(regs.group(1)) if regs else None), (int(spills.group(1)) if spills else None)


def compile_kernel(kernel, dtype: str, nh: int, d: int, arch: int = 90):
    """Compile one kernel for ``sm_<arch>``; returns its resource report (a dict)."""
    nh_p, n_bits = harmonic_constants(nh)
    block_d = block_d_for(d)
    cfg = pick_config(block_d, nh_p, DTYPES[dtype][1])
    consts = dict(HAS_OMEGA=True, BLOCK=cfg.block, BLOCK_D=block_d, NH_P=nh_p, N_BITS=n_bits, DOT=DTYPES[dtype][1])
    src = ASTSource(fn=kernel, signature=_signature(kernel, DTYPES[dtype][0]), constexprs=consts)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    regs, spills = _cubin_report(compiled.asm["cubin"])
    return dict(kernel=kernel.__name__, dtype=dtype, NH=nh, D=d, block=cfg.block, warps=cfg.num_warps,
                stages=cfg.num_stages, shared=compiled.metadata.shared, registers=regs, stack_bytes=spills)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compile the fused kernels for a GPU target (no GPU needed).")
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100), 80 (A100)")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--quick", action="store_true", help="only NH=2, D=32")
    args = p.parse_args(argv)
    cases = [(2, 32)] if args.quick else CASES
    failed = 0
    print(f"{'kernel':16} {'dtype':5} {'NH':>2} {'D':>4} {'block':>5} {'warps':>5} {'regs':>4} {'stack B':>7} {'smem B':>7}")
    for kernel in (_fwd_kernel, _bwd_kv_kernel, _bwd_q_kernel):
        for dtype in args.dtypes.split(","):
            for nh, d in cases:
                try:
                    r = compile_kernel(kernel, dtype, nh, d, args.arch)
                except Exception as exc:  # a compile failure is the finding: report it, go on
                    failed += 1
                    print(f"{kernel.__name__:16} {dtype:5} {nh:>2} {d:>4} FAILED: {type(exc).__name__}: {exc}")
                    continue
                print(f"{r['kernel']:16} {dtype:5} {nh:>2} {d:>4} {r['block']:>5} {r['warps']:>5} "
                      f"{r['registers']!s:>4} {r['stack_bytes']!s:>7} {r['shared']:>7}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
