"""Compile the kernels for a GPU target without a GPU, and report their resources.

Triton compiles to PTX and a cubin with its bundled ``ptxas`` and needs no driver, so a
CPU-only machine can catch what the interpreter cannot: code that does not lower on the
real backend, register spills (stack bytes) and shared memory over the limit. Every
kernel is compiled as the runtime specializes it (16-byte divisibility of pointers and of
sizes that are multiples of 16) in every configuration that is launched: operand modes
bf16, fp16, fp32 (IEEE), the training case (fp32 tensors, bf16 operands under
autocast), with and without omega, packed sequences or not, each autotune candidate. Usage::

    python -m fsn_kernels.frustrated_attention.aot_check                 # all shapes
    python -m fsn_kernels.frustrated_attention.aot_check --quick --dtypes bf16 \\
        --json report.json --out-dir build/aot                           # NH=2, D=32
    python -m fsn_kernels.frustrated_attention.aot_check --assert-clean  # CI's check
    python -m fsn_kernels.frustrated_attention.aot_check --quick --dtypes bf16 \\
        --roles decode,decode-combine --out-dir build/aot                # the decode step

``--assert-clean`` exits 1 unless every bf16/fp16 kernel for D in {16, 32, 64} and NH
in {1, 2, 4} has 0 stack bytes and fits 227 KiB of shared memory; any compile failure
also exits 1. It unsets TRITON_INTERPRET itself before importing triton.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor

os.environ.pop("TRITON_INTERPRET", None)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from .backward import _bwd_kv_kernel, _bwd_q_kernel, _chain_kernel  # noqa: E402
from .constants import DOT_BF16, DOT_FP16, DOT_IEEE, DOT_NAMES  # noqa: E402
from .decoding import _decode_combine_kernel, _decode_split_kernel  # noqa: E402
from .features import _features_kernel  # noqa: E402
from .forward import _demodulate_kernel, _fwd_kernel  # noqa: E402
from .geometry import padded_harmonics, padded_head_dim  # noqa: E402
from .tile_configs import (  # noqa: E402
    backward_kv_configs,
    backward_q_configs,
    decode_combine_config,
    decode_split_config,
    forward_configs,
    token_config,
)

SHARED_LIMIT = 227 * 1024  # bytes of shared memory one H100 block may use
CLEAN_SHAPES = [(nh, d) for nh in (1, 2, 4) for d in (16, 32, 64)]  # (NH, D) asserted by --assert-clean
ALL_SHAPES = sorted(set(CLEAN_SHAPES + [(1, 4), (3, 24), (8, 16), (1, 128), (2, 128), (8, 128)]))
# name -> (tensor dtype, operand mode): "fp32-bf16" is fp32 tensors under bf16 autocast
DTYPES = {
    "bf16": ("bf16", DOT_BF16.value),
    "fp16": ("fp16", DOT_FP16.value),
    "fp32": ("fp32", DOT_IEEE.value),
    "fp32-bf16": ("fp32", DOT_BF16.value),
}
OPERAND = {DOT_IEEE.value: "fp32", DOT_BF16.value: "bf16", DOT_FP16.value: "fp16"}
INPUT_POINTERS = {"THETA", "GATE", "GRAD", "OUT", "DTHETA", "DGATE", "CACHE"}  # the rest: features, or fp32
FEATURE_POINTERS = {"Q", "K", "V", "DO"}
PACKING_POINTERS = {"CU", "POS", "SEQ_END"}  # int32, None unless the sequences are packed
INT_POINTERS = {"SEQLENS"} | PACKING_POINTERS  # int32 tensors
INTS = {"N", "T", "H", "D", "NH", "T_MAX", "SPLIT_LEN", "N_SPLIT"}
NOT_SPECIALIZED = {"N", "T", "T_MAX", "SPLIT_LEN", "N_SPLIT"}  # do_not_specialize: any length reuses one binary
OMEGA_AGNOSTIC_ROLES = {"forward", "demodulate", "backward-kv", "backward-q"}  # omega enters through the features


def _jobs(shapes, dtypes, omegas=(True, False), varlens=(False, True)):
    """Every (kernel, role, constexprs, warps, stages, ...) the runtime launches."""
    jobs = []
    for dname in dtypes:
        tensor_dtype, dot = DTYPES[dname]
        for nh, d in shapes:
            nh_p, n_bits = padded_harmonics(nh)
            bd = padded_head_dim(d)
            tok = token_config(bd, nh_p)
            bt = tok.block_m
            for varlen in varlens:
                base = dict(dtype=dname, tensor_dtype=tensor_dtype, dot=dot, NH=nh, D=d, varlen=varlen)
                token = dict(base, block_m=bt, block_n=tok.block_n, **tok.options())
                for has_omega in omegas:
                    for with_grad in (False, True):
                        role = "feature-bwd" if with_grad else "feature"
                        jobs.append(dict(token, kernel="_features_kernel", role=role, has_omega=has_omega,
                                         consts=dict(HAS_OMEGA=has_omega, WITH_GRAD=with_grad, IS_VARLEN=varlen,
                                                     BLOCK_T=bt, BLOCK_D=bd, NH_P=nh_p, N_BITS=n_bits)))
                    jobs.append(dict(token, kernel="_chain_kernel", role="chain", has_omega=has_omega,
                                     consts=dict(HAS_OMEGA=has_omega, IS_VARLEN=varlen, BLOCK_T=bt, BLOCK_D=bd,
                                                 NH_P=nh_p, N_BITS=n_bits)))
                if not varlen:  # the demodulation pass does not see the packing
                    jobs.append(dict(token, kernel="_demodulate_kernel", role="demodulate", has_omega=True,
                                     consts=dict(BLOCK_T=bt, BLOCK_D=bd, NH_P=nh_p, N_BITS=n_bits)))
                for name, role, configs in (
                    ("_fwd_kernel", "forward", forward_configs(bd, nh_p, dot)),
                    ("_bwd_kv_kernel", "backward-kv", backward_kv_configs(bd, nh_p, dot)),
                    ("_bwd_q_kernel", "backward-q", backward_q_configs(bd, nh_p, dot)),
                ):
                    for i, c in enumerate(configs):
                        jobs.append(dict(base, kernel=name, role=role, has_omega=True, block_m=c.block_m,
                                         block_n=c.block_n, **c.options(),
                                         config_index=i,
                                         consts=dict(BLOCK_D=bd, NH_P=nh_p, DOT=dot, IS_VARLEN=varlen,
                                                     BLOCK_M=c.block_m, BLOCK_N=c.block_n)))
            jobs += _decode_jobs(dict(dtype=dname, tensor_dtype=tensor_dtype, dot=dot, NH=nh, D=d, varlen=False),
                                 bd, nh_p, n_bits)
    return jobs


def _decode_jobs(base, bd, nh_p, n_bits):
    """Role "decode": the split kernel (its loop recomputes the trig of every cached token)
    with and without omega, and "decode-combine", the merge of the splits."""
    split, combine = decode_split_config(bd, nh_p), decode_combine_config(bd, nh_p)
    jobs = [dict(base, kernel="_decode_split_kernel", role="decode", has_omega=has_omega, block_m=split.block_m,
                 block_n=split.block_n, **split.options(),
                 consts=dict(HAS_OMEGA=has_omega, ROW_PARTIALS=split.row_partials, BLOCK_N=split.block_n,
                             BLOCK_D=bd, NH_P=nh_p, N_BITS=n_bits))
            for has_omega in (True, False)]
    jobs += [dict(base, kernel="_decode_combine_kernel", role="decode-combine", has_omega=has_omega,
                  block_m=combine.block_m, block_n=combine.block_n, **combine.options(),
                  consts=dict(HAS_OMEGA=has_omega, BLOCK_D=bd, NH_P=nh_p, N_BITS=n_bits))
             for has_omega in (True, False)]
    return jobs


KERNELS = {k.__name__ if hasattr(k, "__name__") else k.fn.__name__: k for k in
           (_features_kernel, _fwd_kernel, _demodulate_kernel, _bwd_kv_kernel, _bwd_q_kernel, _chain_kernel,
            _decode_split_kernel, _decode_combine_kernel)}


def _jit_function(kernel):
    """The JITFunction under any @triton.heuristics wrapper."""
    while not hasattr(kernel, "arg_names") or not hasattr(kernel, "src"):
        kernel = kernel.fn
    return kernel


def _source(job):
    fn = _jit_function(KERNELS[job["kernel"]])
    sig, attrs, consts = {}, {}, dict(job["consts"])
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif (name == "OMEGA" and not consts.get("HAS_OMEGA", True)) or (
                name in PACKING_POINTERS and not consts.get("IS_VARLEN", True)):
            sig[name], consts[name] = "constexpr", None
        elif name in INTS:
            value = {"D": job["D"], "NH": job["NH"]}.get(name)
            sig[name] = "i32"
            if value is not None and value % 16 == 0 and name not in NOT_SPECIALIZED:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif name.isupper():
            if name in INPUT_POINTERS:
                sig[name] = f"*{job['tensor_dtype']}"
            elif name in INT_POINTERS:
                sig[name] = "*i32"
            elif name in FEATURE_POINTERS:
                sig[name] = f"*{OPERAND[job['dot']]}"
            else:
                sig[name] = "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32"
    return ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)


def _resources(cubin_path: str):
    """(registers, stack bytes) from the cubin, by the cuobjdump that ships with Triton."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    res = subprocess.run([tool, "--dump-resource-usage", cubin_path], capture_output=True, text=True)
    regs = re.search(r"REG:(\d+)", res.stdout)
    stack = re.search(r"STACK:(\d+)", res.stdout)
    return (int(regs.group(1)) if regs else None), (int(stack.group(1)) if stack else None)


def compile_job(job, arch: int = 90, out_dir: str | None = None):
    """Compile one job for sm_<arch>; returns its record (the ``--json`` schema)."""
    rec = {k: v for k, v in job.items() if k not in ("consts", "tensor_dtype")}
    rec["dot"] = DOT_NAMES[job["dot"]]
    try:
        compiled = triton.compile(_source(job), target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": job["num_warps"], "num_stages": job["num_stages"],
                                           "enable_fp_fusion": True})
    except Exception as exc:  # a compile failure is the finding: report it, go on
        rec["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return rec
    out_dir = out_dir or tempfile.mkdtemp(prefix="fsn-aot-")
    os.makedirs(out_dir, exist_ok=True)
    stem = "{kernel}-{dtype}-nh{NH}-d{D}-{role}-m{block_m}n{block_n}w{num_warps}s{num_stages}-om{has_omega}-vl{varlen}"
    stem = stem.format(**rec)
    paths = {"cubin": os.path.join(out_dir, stem + ".cubin"), "ttgir": os.path.join(out_dir, stem + ".ttgir")}
    with open(paths["cubin"], "wb") as f:
        f.write(compiled.asm["cubin"])
    with open(paths["ttgir"], "w") as f:
        f.write(compiled.asm["ttgir"])
    rec["registers"], rec["stack_bytes"] = _resources(paths["cubin"])
    rec["shared"] = compiled.metadata.shared
    rec.update(paths)
    return rec


def _compile_star(args):
    return compile_job(*args)


def clean_violations(records):
    """Records that break the asserted budget: bf16/fp16 operands, D in {16, 32, 64},
    NH in {1, 2, 4}, 0 stack bytes and at most 227 KiB of shared memory."""
    bad = []
    for r in records:
        if r["dot"] in ("bf16", "fp16") and (r["NH"], r["D"]) in CLEAN_SHAPES:
            if "error" in r or r.get("stack_bytes") or (r.get("shared") or 0) > SHARED_LIMIT:
                bad.append(r)
    return bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compile the fused kernels for a GPU target (no GPU needed).")
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100)")
    p.add_argument("--dtypes", default="bf16,fp16,fp32,fp32-bf16", help=f"any of {', '.join(DTYPES)}")
    p.add_argument("--quick", action="store_true", help="only NH=2, D=32")
    p.add_argument("--shapes", default=None, help="NH:D pairs, e.g. 2:32,4:64 (default: all, or --quick)")
    p.add_argument("--roles", default=None, help="only these roles, e.g. decode,decode-combine (default: all)")
    p.add_argument("--assert-clean", action="store_true",
                   help="compile the asserted shapes (bf16, fp16) and exit 1 on any stack byte or shared overflow")
    p.add_argument("--json", default=None, help="write the records to this file")
    p.add_argument("--out-dir", default=None, help="where the cubin and TTGIR files go (default: a temp dir)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    args = p.parse_args(argv)
    dtypes = args.dtypes.split(",")
    bad = [x for x in dtypes if x not in DTYPES]
    if bad:
        p.error(f"--dtypes: unknown {bad}; choose from {', '.join(DTYPES)}")
    if args.assert_clean:
        shapes, dtypes = CLEAN_SHAPES, ["bf16", "fp16"]
    elif args.shapes:
        shapes = [tuple(int(x) for x in s.split(":")) for s in args.shapes.split(",")]
    else:
        shapes = [(2, 32)] if args.quick else ALL_SHAPES
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="fsn-aot-")
    jobs = _jobs(shapes, dtypes)
    if args.roles:
        jobs = [j for j in jobs if j["role"] in args.roles.split(",")]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        records = []
        for rec in pool.map(_compile_star, [(j, args.arch, out_dir) for j in jobs]):
            records.append(rec)
            if rec["role"] in OMEGA_AGNOSTIC_ROLES:  # one binary serves both
                records.append(dict(rec, has_omega=False))
    print(f"{'kernel':18} {'role':12} {'dtype':9} {'NH':>2} {'D':>4} {'om':>3} {'vl':>3} {'bm':>4} {'bn':>4} {'w':>2} "
          f"{'s':>2} {'regs':>4} {'stack':>6} {'smem':>7}")
    for r in records:
        head = (f"{r['kernel']:18} {r['role']:12} {r['dtype']:9} {r['NH']:>2} {r['D']:>4} "
                f"{'y' if r['has_omega'] else 'n':>3} {'y' if r['varlen'] else 'n':>3} {r['block_m']:>4} "
                f"{r['block_n']:>4} {r['num_warps']:>2} {r['num_stages']:>2}")
        if "error" in r:
            print(f"{head} FAILED: {r['error']}")
        else:
            print(f"{head} {r['registers']!s:>4} {r['stack_bytes']!s:>6} {r['shared']:>7}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    failed = [r for r in records if "error" in r]
    violations = clean_violations(records) if args.assert_clean else []
    for r in violations:
        print(f"NOT CLEAN: {r['kernel']} {r['dtype']} NH={r['NH']} D={r['D']} bm={r['block_m']} bn={r['block_n']}: "
              f"stack {r.get('stack_bytes')} B, shared {r.get('shared')} B {r.get('error', '')}")
    print(f"{len(records)} kernels compiled for sm_{args.arch}: {len(failed)} failed"
          + (f", {len(violations)} not clean" if args.assert_clean else ""))
    return 1 if failed or violations else 0


if __name__ == "__main__":
    sys.exit(main())
