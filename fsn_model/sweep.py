"""Tuning sweeps: ``fsn-sweep`` / ``python -m fsn_model.sweep``.

Trains a list of *trials* (an architecture, a learning rate and any ``build_model``
knobs) for one or more seeds, on the same data, token budget, optimizer and schedule
(every run goes through :func:`fsn_model.train.train`, so equal seeds see equal
batches), and writes the files ``fsn-compare`` writes, in its schema:

* ``sweep-<corpus>-<params>-<steps>steps.json``: ``kind`` = "quality", ``study`` = "sweep",
  ``device``, ``corpus``, ``corpus_info``, ``commit``, ``settings``, ``runs`` (one per trial x
  seed: ``{model, trial, knobs, params, seed, lr, tokens, final_val_bpc, final_train_bpb, epochs, curve,
  ...}``, the fit fields as in :func:`fsn_model.compare.train_fit`),
  ``summary`` (per trial: mean / std / min of the final val bits per byte over seeds) and
  ``copy_depth`` (test-window loss per copy-depth bin of each architecture's best run);
* ``.png``: validation curves, one colour per trial; ``-copy-depth.png``;
* ``.md``: the sweep table (one row per run), the per-trial summary, the copy-depth table.

A trial is ``MODEL[:key=value,...]``: MODEL in fsn, fsn-meanfield, transformer; keys
``lr``, ``warmup`` and any ``build_model`` override (``n_layers``, ``head_dim``, ``n_harmonics``,
``k1_init``, ``coupling_std``, ``gate_std``, ``readout_norm``, ``delay``, ...). Unset keys
take the command-line defaults (``--lr``, ``--warmup``).

Runs that already finished in ``--runs-dir`` (same trial, seed, size and step count) are
read back, not retrained, so a study can be extended a few trials at a time and the
tables rebuilt from everything run so far.

Examples::

    fsn-sweep --params 250k --steps 800 --seeds 0 \\
        --trial fsn:lr=3e-3 --trial fsn:lr=6e-3 --trial transformer:lr=3e-3 --trial transformer:lr=6e-3
    fsn-sweep --params 250k --steps 800 --seeds 0,1 --trial fsn:lr=6e-3,k1_init=1.0 --out benchmarks/results
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from . import train as train_mod
from .build import MODEL_NAMES
from .checkpoint import resolve_device
from .cli import OneLineParser, add_dataclass_flags, parse_knobs, run_cli, values_for
from .compare import SHARED_SETTINGS, _copy_depth, parse_seeds, train_fit, write_quality_files
from .data import load_corpus
from .provenance import REPO_ROOT, device_name, git_commit
from .threads import add_threads_flag, apply_threads

TRAIN_KEYS = ("lr", "warmup")


def parse_trial(spec: str) -> Dict[str, Any]:
    """``"fsn:lr=6e-3,k1_init=1.0"`` -> ``{"model": "fsn", "knobs": {"lr": 0.006, "k1_init": 1.0}}``."""
    model, _, rest = spec.partition(":")
    if model not in MODEL_NAMES:
        raise ValueError(f"--trial {spec!r}: model must be one of {', '.join(MODEL_NAMES)}")
    return {"model": model, "knobs": parse_knobs(rest, f"--trial {spec!r}")}


def trial_label(trial: Dict[str, Any], lr: float) -> str:
    """``fsn lr=0.006 k1_init=1`` (knobs in the order given)."""
    extra = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial["knobs"].items() if k != "lr"]
    return " ".join([trial["model"], f"lr={lr:g}"] + extra)


def _plan(a) -> List[Dict[str, Any]]:
    if not a.trial:
        raise ValueError("--trial: give at least one, e.g. --trial fsn:lr=3e-3")
    seeds = parse_seeds(a.seeds)
    plan = []
    for spec in a.trial:
        trial = parse_trial(spec)
        lr = trial["knobs"].get("lr", a.lr)
        warmup = trial["knobs"].get("warmup", base_config(a).warmup)
        overrides = {k: v for k, v in trial["knobs"].items() if k not in TRAIN_KEYS}
        try:  # every setting checked before any training (a knob build_model does not take included)
            train_mod.validate(dataclasses.replace(base_config(a), model=trial["model"], lr=lr, warmup=warmup,
                                                   model_overrides=overrides))
        except ValueError as e:
            raise ValueError(f"--trial {spec!r}: {e}") from None
        lr = float(lr)
        label = trial_label(trial, lr)
        for seed in seeds:
            plan.append(dict(model=trial["model"], trial=label, knobs=trial["knobs"], overrides=overrides,
                             lr=lr, warmup=warmup, seed=seed))
    return plan


def _run_dir(runs_dir: Path, item: Dict[str, Any], a) -> Path:
    slug = "".join(ch if ch.isalnum() or ch in ".-_=" else "_" for ch in item["trial"].replace(" ", "_"))
    return runs_dir / f"{a.params}-{a.steps}steps" / f"{slug}-s{item['seed']}"


def _run_one(item: Dict[str, Any], a, runs_dir: Path) -> Dict[str, Any]:
    out = _run_dir(runs_dir, item, a)
    finished_or_started = (out / train_mod.CHECKPOINT_NAME).exists()
    # a run with a checkpoint is resumed (a finished one is read back, not retrained)
    cfg = dataclasses.replace(base_config(a), model=item["model"], lr=item["lr"], warmup=item["warmup"],
                              seed=item["seed"], out=str(out), model_overrides=dict(item["overrides"]),
                              resume=finished_or_started, overwrite=not finished_or_started)
    log = train_mod.train(cfg)
    per_step = a.batch_size * a.seq_len
    return dict(model=item["model"], architecture=item["model"], trial=item["trial"], knobs=item["knobs"],
                params=log["params"], target_params=str(a.params), seed=item["seed"], lr=item["lr"],
                warmup=item["warmup"], tokens=a.steps * per_step, final_val_bpc=log["final_val_bpb"],
                **train_fit(log, a.eval_every, a.steps * per_step),
                curve=[[v["step"] * per_step, v["bpb"]] for v in log["val"]], overrides=item["overrides"],
                wall_time_s=log.get("wall_time_s"), run_dir=str(out), model_config=log["model_config"])


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per trial label: model, lr, knobs, params, seeds, mean/std/min final val bits/byte."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["trial"], []).append(r)
    out = {}
    for key, rs in groups.items():
        vals = [r["final_val_bpc"] for r in rs]
        out[key] = dict(model=rs[0]["model"], lr=rs[0]["lr"], knobs=rs[0]["knobs"], params=rs[0]["params"],
                        seeds=[r["seed"] for r in rs], mean=statistics.fmean(vals),
                        std=statistics.stdev(vals) if len(vals) > 1 else 0.0, min=min(vals))
    for model in {s["model"] for s in out.values()}:
        best = min((k for k in out if out[k]["model"] == model), key=lambda k: out[k]["mean"])
        for k in out:
            if out[k]["model"] == model:
                out[k]["best_of_model"] = k == best
    return out


def tables(runs: List[Dict[str, Any]], summary: Dict[str, Dict[str, Any]], fit_steps: int) -> str:
    """The sweep table (one row per run, with its training fit over the last ``fit_steps``
    steps) and the per-trial summary, as markdown."""
    lines = ["| model | trial | lr | seed | final val bits/byte | tokens | "
             f"train bits/byte (last {fit_steps} steps) | epochs |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        knobs = ", ".join(f"{k}={v}" for k, v in r["knobs"].items() if k != "lr") or "defaults"
        lines.append(f"| {r['model']} | {knobs} | {r['lr']:g} | {r['seed']} | {r['final_val_bpc']:.4f} | "
                     f"{r['tokens']:,} | {r['final_train_bpb']:.4f} | {r['epochs']:.2f} |")
    lines += ["", "| trial | params | seeds | final val bits/byte (mean +/- std) | min |", "|---|---|---|---|---|"]
    for key, s in sorted(summary.items(), key=lambda kv: (kv[1]["model"], kv[1]["mean"])):
        lines.append(f"| {key}{' (best of ' + s['model'] + ')' if s.get('best_of_model') else ''} | "
                     f"{s['params']:,} | {len(s['seeds'])} | {s['mean']:.4f} +/- {s['std']:.4f} | {s['min']:.4f} |")
    return "\n".join(lines)


def _parser() -> OneLineParser:
    p = OneLineParser(prog="fsn-sweep", description="Tuning sweep: train trials (model, lr, build_model knobs) "
                      "x seeds at one budget; write the quality JSON/PNG/markdown with the sweep table.")
    p.add_argument("--trial", action="append", default=[], metavar="MODEL[:key=value,...]",
                   help="repeatable; keys lr, warmup and build_model overrides, e.g. fsn:lr=6e-3,k1_init=1.0")
    p.add_argument("--seeds", default="0")
    add_dataclass_flags(p, train_mod.TrainConfig, SHARED_SETTINGS,
                        defaults={"params": "250k", "steps": 800, "eval_every": 100}, helps={
                            "params": "parameter target for every trial (default %(default)s)",
                            "steps": "steps per run; tokens = steps*batch*seq_len",
                            "lr": "learning rate of trials that set none",
                            "warmup": "warmup steps (capped at steps/10)"})
    p.add_argument("--copy-windows", type=int, default=64, help="test windows for the copy-depth table (0: skip)")
    p.add_argument("--out", default=None, help="folder for the JSON/PNG/MD (default .benchmarks/sweep)")
    p.add_argument("--name", default=None, help="file stem (default sweep-<corpus>-<params>-<steps>steps)")
    p.add_argument("--runs-dir", default=None, help="run checkpoints; finished runs here are reused "
                   "(default runs/sweep/<corpus>)")
    add_threads_flag(p)
    return p


def base_config(a) -> "train_mod.TrainConfig":
    """The settings every run of this sweep shares (trials differ by model, lr, warmup, knobs)."""
    return train_mod.TrainConfig(**dict(values_for(a, SHARED_SETTINGS), warmup=min(a.warmup, max(1, a.steps // 10))))


def _main(argv: Sequence[str]) -> int:
    a = _parser().parse_args(argv)
    apply_threads(a.threads)  # once, for every run of this process
    device = resolve_device(a.device)
    plan = _plan(a)
    if a.copy_windows < 0:
        raise ValueError(f"--copy-windows must be >= 0, got {a.copy_windows}")
    corpus = load_corpus(a.data)
    out_dir = Path(a.out) if a.out else REPO_ROOT / ".benchmarks" / "sweep"
    runs_dir = Path(a.runs_dir) if a.runs_dir else Path("runs") / "sweep" / corpus.name
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in corpus.name)
    stem = a.name or f"sweep-{slug}-{a.params}-{a.steps}steps"
    runs = []
    for i, item in enumerate(plan):
        print(f"[{i + 1}/{len(plan)}] {item['trial']} seed {item['seed']}", flush=True)
        runs.append(_run_one(item, a, runs_dir))
        print(f"    final val {runs[-1]['final_val_bpc']:.4f} bits/byte ({runs[-1]['params']:,} params)", flush=True)
    summary = summarise(runs)
    copy = _copy_depth(runs, a, device) if a.copy_windows > 0 else None
    doc = dict(
        kind="quality", study="sweep", device=device_name(device), corpus=corpus.name,
        corpus_info=corpus.describe(), commit=git_commit(), date=_dt.datetime.now().isoformat(timespec="seconds"),
        torch=torch.__version__, trials=list(a.trial),
        settings=dict(params=str(a.params), steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len,
                      default_lr=a.lr, eval_every=a.eval_every, eval_windows=a.eval_windows,
                      tokens_per_run=a.steps * a.batch_size * a.seq_len, optimizer="AdamW (fsn_model.train)",
                      schedule="linear warmup + cosine (fsn_model.train)"),
        runs=runs, summary=summary, copy_depth=copy,
    )
    write_quality_files(out_dir, stem, doc, [dict(r, model=r["trial"]) for r in runs],
                        f"{corpus.name}, ~{a.params} params, {a.steps * a.batch_size * a.seq_len:,} tokens/run, "
                        f"{doc['device']}", tables(runs, summary, a.eval_every))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-sweep``."""
    return run_cli("fsn-sweep", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
