"""A static performance model of the fused op on Hopper (H100, H200), from what compiles
on a CPU machine: per kernel, the largest of four times is its predicted time.

* **issue**: warp-instructions / (4 per cycle per SM x SMs x clock). A flash kernel's
  instructions are its loops' static counts from the sm_90 SASS
  (``benchmarks/static/sass_loops.py`` -> ``benchmarks/results/sass-sm90-*.json``) times each
  program's iterations of each loop (the unmasked loop and the masked band, counted
  from the tiles), plus the instructions outside the loops once per program; a per-token
  pass has no loop, so its static count runs once per program.
* **special functions**: MUFU warp-instructions (exp2 in the loops) / (0.5 per cycle
  per SM: 16 lanes per SM, 32 per warp) x SMs x clock.
* **tensor**: the MMA FLOPs the SASS executes (a masked band's whole tiles included) /
  the dense bf16 peak.
* **memory**: the bytes each pass must read and write once (inputs, features, fp32
  partials; re-reads of key tiles assumed to hit L2) / HBM bandwidth.

Plus 3 us per launch. It ignores latency, occupancy and wave tails, so it predicts a
lower bound that a good kernel approaches; the GPU suite prints each prediction next to
its measurement. The matched-FLOP SDPA ceiling is the same FLOPs at the dense peak.

    python -m benchmarks.static.perf_model        # table + benchmarks/results/perf-model-sm90.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List

RESULTS = Path(__file__).resolve().parent.parent / "results"
SASS = RESULTS / "sass-sm90-bf16-nh2-d32.json"
LAUNCH_S = 3e-6


@dataclass(frozen=True)
class Device:
    """Datasheet figures (SXM parts): the dense bf16 rate is 4096 FLOP/cycle/SM at this clock."""

    name: str
    sms: int = 132
    clock_hz: float = 1.83e9
    hbm_bytes_per_s: float = 3.35e12
    issue_per_cycle_per_sm: float = 4.0
    mufu_per_cycle_per_sm: float = 0.5
    mma_flops_per_cycle_per_sm: float = 4096.0

    @property
    def peak_flops(self) -> float:
        return self.mma_flops_per_cycle_per_sm * self.sms * self.clock_hz


DEVICES = {"H100": Device("H100"), "H200": Device("H200", hbm_bytes_per_s=4.8e12)}


# ------------------------------------------------------------------------- tiling
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def flash_iterations(role: str, T: int, bm: int, bn: int) -> List[Dict[str, int]]:
    """Per program of one (head, sequence): iterations of the unmasked loop and the masked
    band, as the kernels' loop bounds give them."""
    out = []
    if role in ("forward", "backward-q"):
        for i in range(_cdiv(T, bm)):
            start = i * bm
            band = (start // bn) * bn
            out.append(dict(unmasked=band // bn, masked=_cdiv(min(start + bm, T) - band, bn)))
    else:  # backward-kv: key blocks; the band of query blocks first, then the rest
        for j in range(_cdiv(T, bn)):
            start = j * bn
            lo = (start // bm) * bm
            hi = min(_cdiv(start + bn, bm) * bm, T)
            out.append(dict(masked=_cdiv(hi - lo, bm), unmasked=_cdiv(max(T - hi, 0), bm)))
    return out


# --------------------------------------------------------------------------- bytes
def pass_bytes(role: str, D: int, NH: int, in_bytes: int = 2, feat_bytes: int = 2, opart_bytes: int = 4,
               grad_bytes: int = 4) -> float:
    """HBM bytes per (token, head) that a pass must read and write once: bf16 inputs and
    features; ``O_partial`` in ``opart_bytes`` (fp32 now), the flash backward's dq^, dk^,
    dv^ in ``grad_bytes`` (fp32 now); statistics and R fp32. See PERF_LOG.md."""
    bd = max(16, 1 << (D - 1).bit_length())
    nh_p = 1 << (NH - 1).bit_length()
    kw, vw = 2 * bd, 2 * nh_p * bd
    feat_fwd = 2 * D * in_bytes + 2 * kw * feat_bytes + vw * feat_bytes + 4
    table = {
        "feature": feat_fwd,
        "forward": 2 * kw * feat_bytes + vw * feat_bytes + 4 + vw * opart_bytes + 4,
        "demodulate": D * in_bytes + 8 + vw * opart_bytes + D * in_bytes + NH * D * 4,
        "feature-bwd": feat_fwd + 2 * D * in_bytes + vw * feat_bytes + 4,
        "backward-kv": 2 * kw * feat_bytes + 2 * vw * feat_bytes + 8 + (kw + vw) * grad_bytes,
        "backward-q": 2 * kw * feat_bytes + 2 * vw * feat_bytes + 8 + kw * grad_bytes,
        "chain": 3 * D * in_bytes + NH * D * 4 + 12 + (2 * kw + vw) * grad_bytes + 2 * D * in_bytes,
    }
    return table[role]


# --------------------------------------------------------------------------- model
def kernel_time(k: Dict, B: int, T: int, H: int, D: int, NH: int, dev: Device, **bytes_kw) -> Dict:
    """The four times and the prediction of one kernel launch (seconds)."""
    role, warps = k["role"], k["num_warps"]
    if k["loops"]:
        loops = {x["name"]: x for x in k["loops"]}
        per_seq = flash_iterations(role, T, k["block_m"], k["block_n"])
        instrs = sum(k["outside"] + sum(it[n] * loops[n]["instrs"] for n in loops) for it in per_seq)
        mufu = sum(k.get("mufu_outside", 0) + sum(it[n] * loops[n].get("mufu", 0) for n in loops) for it in per_seq)
        mma = sum(sum(it[n] * loops[n]["mma_flops"] for n in loops) for it in per_seq)
        programs = len(per_seq) * B * H
        instrs, mufu, mma = instrs * B * H, mufu * B * H, mma * B * H
    else:
        programs = _cdiv(B * T, k["block_m"]) * H  # token tiles of BLOCK_T rows
        instrs, mufu, mma = programs * k["instrs"], programs * k.get("mufu_outside", 0), 0
    issue = instrs * warps / (dev.issue_per_cycle_per_sm * dev.sms * dev.clock_hz)
    sfu = mufu * warps / (dev.mufu_per_cycle_per_sm * dev.sms * dev.clock_hz)
    tensor = mma / dev.peak_flops
    memory = B * T * H * pass_bytes(role, D, NH, **bytes_kw) / dev.hbm_bytes_per_s
    terms = dict(issue=issue, sfu=sfu, tensor=tensor, memory=memory)
    bound = max(terms, key=terms.get)
    return dict(role=role, programs=programs, **{f"{n}_us": round(v * 1e6, 2) for n, v in terms.items()},
                bound=bound, predicted_us=round((terms[bound] + LAUNCH_S) * 1e6, 2))


FWD_ROLES = ("feature", "forward", "demodulate")
# Proposed changes of the per-token traffic (PERF_LOG.md), as byte widths of pass_bytes:
VARIANTS = {
    "now": {},
    "opartial-bf16": dict(opart_bytes=2),  # O_partial stored in the operand dtype
    "bf16-partials": dict(opart_bytes=2, grad_bytes=2),  # and dq^, dk^, dv^ too
}
BWD_ROLES = ("feature-bwd", "backward-kv", "backward-q", "chain")


def predict(sass: Dict, B: int, T: int, H: int, dev: Device, variant: str = "now") -> List[Dict]:
    """Predictions for the fused op (launched configs: each kernel's first candidate),
    forward and forward + backward, and the matched-FLOP SDPA ceiling. ``variant``: one of
    ``VARIANTS`` (the kernels as they are, or a proposed change of what the passes store)."""
    from benchmarks import lib

    D, NH = sass["D"], sass["NH"]
    first = {}
    for k in sass["kernels"]:
        if k.get("config_index", 0) == 0 and k["role"] not in first:
            first[k["role"]] = k
    kernels = {r: kernel_time(first[r], B, T, H, D, NH, dev, **VARIANTS[variant]) for r in FWD_ROLES + BWD_ROLES}
    out = []
    for passes, roles in (("fwd", FWD_ROLES), ("fwd+bwd", FWD_ROLES + BWD_ROLES)):
        ms = sum(kernels[r]["predicted_us"] for r in roles) / 1e3
        flops = lib.op_flops(B, T, H, D, NH, passes)
        token_ms = sum(kernels[r]["predicted_us"] for r in roles if r not in ("forward", "backward-kv", "backward-q"))
        out.append(dict(device=dev.name, variant=variant, B=B, T=T, H=H, D=D, NH=NH, **{"pass": passes},
                        fused_ms=round(ms, 4),
                        fused_tflops=round(flops / (ms * 1e-3) / 1e12, 1),
                        sdpa_ceiling_ms=round(flops / dev.peak_flops * 1e3, 4),
                        per_token_share=round(token_ms / 1e3 / ms, 3),
                        kernels=[kernels[r] for r in roles]))
    return out


def build(sass_path: Path = SASS, tokens: int = 16384, H: int = 16, ts=(1024, 2048, 4096, 8192, 16384)) -> Dict:
    sass = json.loads(Path(sass_path).read_text())
    preds = [p for name in DEVICES for T in ts for p in predict(sass, max(tokens // T, 1), T, H, DEVICES[name])]
    proposals = [p for name in DEVICES for T in ts for v in VARIANTS if v != "now"
                 for p in predict(sass, max(tokens // T, 1), T, H, DEVICES[name], v)]
    return dict(model="benchmarks/static/perf_model.py", sass=Path(sass_path).name, triton=sass["triton"],
                devices={n: asdict(d) for n, d in DEVICES.items()}, launch_us=LAUNCH_S * 1e6, predictions=preds,
                proposals=proposals)


def table(doc: Dict) -> str:
    lines = [f"{'device':6} {'variant':13} {'pass':8} {'T':>6} {'B':>3} {'fused ms':>9} {'TFLOP/s':>8} "
             f"{'ceiling ms':>10} {'per-token':>9}  kernels (predicted us, bound)"]
    for p in doc["predictions"] + doc["proposals"]:
        ks = ", ".join(f"{k['role']} {k['predicted_us']:.0f} {k['bound']}" for k in p["kernels"])
        lines.append(f"{p['device']:6} {p['variant']:13} {p['pass']:8} {p['T']:>6} {p['B']:>3} {p['fused_ms']:>9.3f} "
                     f"{p['fused_tflops']:>8.1f} {p['sdpa_ceiling_ms']:>10.3f} {p['per_token_share']:>9.2f}  {ks}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sass", default=str(SASS), help="a sass_loops result file")
    p.add_argument("--out", default=str(RESULTS / "perf-model-sm90.json"))
    args = p.parse_args(argv)
    doc = build(Path(args.sass))
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(table(doc))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
