"""The GPU suite's summary: the ratios the speed and parity targets name, each prediction
of the performance model next to its measurement, read from the suite's JSONL file.

* parity: every check within flash-attention's 2x rule (per mode: worst fused error /
  bound);
* fused ("triton" backend) fwd+bwd TFLOP/s over the SDPA yardstick's at matched FLOPs,
  per T (target >= 0.9);
* fused over the op's stock-PyTorch backend ("stock") at T = 4096 (target >= 2x), both
  passes;
* model training tokens/s, FSN over the transformer; decode tokens/s likewise;
* the fused op's predicted time (``benchmarks/results/perf-model-sm90.json``) next to
  the measured one, and what was skipped for the budget or failed.

    python -m benchmarks.suite.summary RESULT.jsonl
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from benchmarks.lib import YARDSTICK
from benchmarks.suite.records import read_records

PREDICTIONS = Path(__file__).resolve().parent.parent / "results" / "perf-model-sm90.json"


def _key(c: Dict):
    return (c.get("pass"), c.get("B"), c.get("T"), c.get("H"), c.get("D"), c.get("NH"), c.get("dtype"))


def _op_cases(records: List[Dict]) -> List[Dict]:
    return [r for r in records if r.get("case_kind") == "op" and r.get("kind") == "case" and r.get("ms")]


def _predicted_device(gpu_name: Optional[str]) -> Optional[str]:
    name = (gpu_name or "").upper()
    return "H200" if "H200" in name else "H100" if "H100" in name else None


def load_predictions(path: Path = PREDICTIONS) -> Dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _prediction(preds: Dict, device: Optional[str], c: Dict) -> Optional[Dict]:
    for p in preds.get("predictions", []):
        if p["device"] == device and all(p.get(k) == c.get(k) for k in ("B", "T", "H", "D", "NH", "pass")):
            return p
    return None


def summarize(records: List[Dict], preds: Optional[Dict] = None) -> str:
    preds = load_predictions() if preds is None else preds
    env = next((r for r in records if r.get("kind") == "environment"), {})
    lines = [f"== fsn GPU suite summary: {env.get('device')} torch {env.get('torch')} triton {env.get('triton')} "
             f"commit {env.get('commit')}" + (" (DRY RUN: CPU interpreter, figures mean nothing)"
                                             if env.get("dry_run") else "")]

    # parity
    parity = [r for r in records if r.get("case_kind") == "parity" and r.get("kind") == "case"]
    if parity:
        lines.append("parity (fused err <= 2 x same-precision PyTorch err + floor):")
        for r in parity:
            worst = max(r["checks"], key=lambda c: c["fused_err"] / c["bound"])
            verdict = "PASS" if r["ok"] else "FAIL"
            lines.append(f"  {verdict} {r['mode']:22} {r['shape_spec']:>14}  worst {worst['quantity']}: "
                         f"fused {worst['fused_err']:.2e} bound {worst['bound']:.2e} "
                         f"({worst['fused_err'] / worst['bound']:.2f} of it)")

    # op ratios
    ops = _op_cases(records)
    best: Dict = {}
    for c in ops:
        k = _key(c) + (c["impl"],)
        if c["impl"] != "fused":
            best[k] = min(best.get(k, float("inf")), c["ms"])
    device = _predicted_device(env.get("gpu") or env.get("device"))
    fused = sorted((c for c in ops if c["impl"] == "fused"), key=lambda c: (c["D"], c["dtype"], c["pass"], c["T"]))
    if fused:
        lines.append("op (B*T fixed): fused vs the SDPA yardstick at matched FLOPs (target fwd+bwd >= 0.9) and vs "
                     "the stock backend (target >= 2 at T=4096); predicted = perf model "
                     "(benchmarks/static/perf_model.py)")
        lines.append(f"  {'pass':8} {'T':>6} {'D':>3} {'dtype':9} {'fused ms':>9} {'TFLOP/s':>8} {'yard ms':>8} "
                     f"{'vs yard':>8} {'stock ms':>8} {'vs stock':>8} {'pred ms':>8} {'meas/pred':>9}")
        for c in fused:
            sd = best.get(_key(c) + (YARDSTICK,))
            stock = best.get(_key(c) + ("stock",))
            p = _prediction(preds, device, c) if c["dtype"] == "bfloat16" else None
            pm = p["fused_ms"] if p else None
            lines.append(
                f"  {c['pass']:8} {c['T']:>6} {c['D']:>3} {c['dtype']:9} {c['ms']:>9.3f} {c['tflops']:>8.1f} "
                + (f"{sd:>8.3f} {sd / c['ms']:>8.2f} " if sd else f"{'-':>8} {'-':>8} ")
                + (f"{stock:>8.3f} {stock / c['ms']:>8.2f} " if stock else f"{'-':>8} {'-':>8} ")
                + (f"{pm:>8.3f} {c['ms'] / pm:>9.2f}" if pm else f"{'-':>8} {'-':>9}"))
        targets = []
        for c in fused:
            if c["dtype"] != "bfloat16" or c["D"] != 32:
                continue
            sd = best.get(_key(c) + (YARDSTICK,))
            stock = best.get(_key(c) + ("stock",))
            if c["pass"] == "fwd+bwd" and sd and 1024 <= c["T"] <= 16384:
                targets.append(f"fwd+bwd T={c['T']}: fused/yardstick TFLOP/s {sd / c['ms']:.2f} "
                               f"({'meets' if sd / c['ms'] >= 0.9 else 'misses'} 0.9)")
            if c["T"] == 4096 and stock:
                targets.append(f"{c['pass']} T=4096: fused vs stock {stock / c['ms']:.2f}x "
                               f"({'meets' if stock / c['ms'] >= 2 else 'misses'} 2x)")
        if targets:
            lines.append("targets: " + "; ".join(targets))

    # models and decode
    for kind, label in (("model", "training tokens/s"), ("decode", "decode tokens/s")):
        rows = [r for r in records if r.get("case_kind") == kind and r.get("kind") == "case"]
        if not rows:
            continue
        lines.append(f"{kind}: {label}")
        by = {}
        for r in rows:
            by.setdefault((r["params"], r["T"]), {})[r["model"]] = r
        for (params, T), pair in by.items():
            f, t = pair.get("fsn"), pair.get("transformer")
            cells = [f"{m} {pair[m]['tokens_per_s']:,.0f}" for m in ("fsn", "transformer") if m in pair]
            ratio = f"  fsn/transformer {f['tokens_per_s'] / t['tokens_per_s']:.2f}" if f and t else ""
            lines.append(f"  {params:>5} T={T:<6} " + "  ".join(cells) + ratio)

    skipped = [r for r in records if r.get("kind") == "skipped"]
    errors = [r for r in records if r.get("kind") == "error"]
    failed = [r for r in records if r.get("kind") == "case" and r.get("ok") is False]
    end = next((r for r in records if r.get("kind") == "end"), None)
    done = sum(1 for r in records if r.get("kind") == "case")
    lines.append(f"cases: {done} measured, {len(skipped)} skipped for the budget, {len(errors)} errors, "
                 f"{len(failed)} failed checks; "
                 + (f"finished in {end['elapsed_s']:.0f} s" if end else "NOT FINISHED (killed or still running)"))
    for r in errors:
        lines.append(f"  error: {r['stage']} {r['case']}: {r['error']}")
    stages_skipped = sorted({r["stage"] for r in skipped})
    if stages_skipped:
        lines.append(f"  skipped cases in stages: {', '.join(stages_skipped)}")
    return "\n".join(lines)


def write_summary(jsonl: Path) -> str:
    """Summarize ``jsonl`` and write the text beside it as ``<stem>-summary.txt``."""
    text = summarize(read_records(jsonl))
    Path(jsonl).with_name(Path(jsonl).stem + "-summary.txt").write_text(text + "\n")
    return text


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.suite.summary RESULT.jsonl", file=sys.stderr)
        return 2
    print(write_summary(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
