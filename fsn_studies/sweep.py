"""Tuning sweeps: ``fsn-sweep`` / ``python -m fsn_studies.sweep``.

Trains a list of *trials* (an architecture, a learning rate and any ``build_model``
knobs) for one or more seeds, on the same data, token budget, optimizer and schedule
(every run goes through :func:`fsn_model.train.train`, so equal seeds see equal
batches), and writes the files ``fsn-compare`` writes, in its schema:

* ``sweep-<corpus>-<params>-<steps>steps-<settings_id>.json`` (or ``--name STEM``): ``kind`` =
  "quality", ``study`` = "sweep", ``device``, ``corpus``, ``corpus_info``, ``commit``, ``settings``,
  ``settings_id`` (the shared settings the file belongs to, :mod:`fsn_studies.report`), ``runs``
  (one per trial x seed: ``{model, trial, knobs, params, seed, lr, tokens, final_val_bits_per_byte,
  final_train_bpb, epochs, curve, run_id, run_dir, ...}``, the fit fields as in
  :func:`fsn_studies.study.train_fit`), ``summary`` (per trial: mean / std / min of the final
  val bits per byte over seeds) and ``copy_depth`` (test-window loss per copy-depth bin of each
  architecture's best run);
* ``.png``: validation curves, one colour per trial; ``-copy-depth.png``;
* ``.md``: the sweep table (one row per run), the per-trial summary, the copy-depth table.

A trial is ``MODEL[:key=value,...]``: MODEL one of :data:`fsn_model.build.MODEL_NAMES` (fsn,
fsn-meanfield: with learned projections around the attention; fsn-paper, fsn-meanfield-paper:
the paper's models, without them; transformer); keys ``lr``, ``warmup`` and any
``build_model`` override (``n_layers``, ``head_dim``, ``n_harmonics``, ``k1_init``,
``coupling_std``, ``gate_std``, ``readout_norm``, ``delay``, ``projections``, ...). Unset keys
take the command-line defaults (``--lr``, ``--warmup``).

Everything goes under the current working directory: run directories to ``--runs-dir``
(default ``runs/sweep/<corpus>``), the result files to ``--out`` (default
``runs/sweep/<corpus>/results``); committed study results live in ``fsn_studies/results/``.

Runs go through :func:`fsn_studies.runs.execute`: each run directory is named and checked by
the run's identity (full model config, trial knobs, steps, batch, window length, corpus sha256,
seed, evaluation settings, ...), so a run that already finished with exactly these settings is
read back, not retrained, a started one resumes, and a run of other settings is never taken
for it. A study can grow a few trials at a time: a later sweep with the same shared settings
into the same results file adds its trials (:mod:`fsn_studies.report`). A trial or seed given
twice is refused before anything trains.

Examples::

    fsn-sweep --params 250k --steps 800 --seeds 0 \\
        --trial fsn:lr=3e-3 --trial fsn:lr=6e-3 --trial transformer:lr=3e-3 --trial transformer:lr=6e-3
    fsn-sweep --params 250k --steps 800 --seeds 0,1 --trial fsn:lr=6e-3,k1_init=1.0 --out runs/my-sweep
    fsn-sweep --params 250k --steps 800 --seeds 0,1,2 --trial fsn:lr=1.2e-2 --trial fsn-paper:lr=1.2e-2
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from fsn_model import train as train_mod
from fsn_model.build import MODEL_NAMES
from fsn_model.cli import OneLineParser, model_knob_types, parse_knobs
from fsn_model.provenance import device_name, git_commit

from . import report
from .files import settings_id
from .records import FINAL_VAL, final_val
from .runs import Run, plan_run, refuse_repeats, run_study_cli
from .study import add_study_flags, base_config, copy_depth_table, parse_seeds, run_study, start_study, train_fit

TRAIN_KEYS = ("lr", "warmup")


def parse_trial(spec: str) -> Dict[str, Any]:
    """``"fsn:lr=6e-3,k1_init=1.0"`` -> ``{"model": "fsn", "knobs": {"lr": 0.006, "k1_init": 1.0}}``
    (each knob of its type: ``lr=true`` is refused, not lr 1)."""
    model, _, rest = spec.partition(":")
    if model not in MODEL_NAMES:
        raise ValueError(f"--trial {spec!r}: model must be one of {', '.join(MODEL_NAMES)}")
    types = dict(model_knob_types(), lr=float, warmup=int)
    return {"model": model, "knobs": parse_knobs(rest, f"--trial {spec!r}", types)}


def _value(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def trial_label(trial: Dict[str, Any], lr: float) -> str:
    """``fsn lr=0.006 k1_init=1.0`` (knobs in the order given; floats as ``repr``, so two
    distinct values never share a label)."""
    extra = [f"{k}={_value(v)}" for k, v in trial["knobs"].items() if k != "lr"]
    return " ".join([trial["model"], f"lr={_value(float(lr))}"] + extra)


def _plan(a) -> List[Dict[str, Any]]:
    if not a.trial:
        raise ValueError("--trial: give at least one, e.g. --trial fsn:lr=3e-3")
    seeds = parse_seeds(a.seeds)
    plan = []
    for spec in a.trial:
        trial = parse_trial(spec)
        lr = float(trial["knobs"].get("lr", a.lr))
        warmup = trial["knobs"].get("warmup", base_config(a).warmup)
        overrides = {k: v for k, v in trial["knobs"].items() if k not in TRAIN_KEYS}
        label = trial_label(trial, lr)
        for seed in seeds:
            item = dict(model=trial["model"], trial=label, knobs=trial["knobs"], overrides=overrides, lr=lr,
                        warmup=warmup, seed=seed, spec=spec)
            try:  # every setting checked before any training (a knob build_model does not take included)
                train_mod.validate(_config(a, item))
            except ValueError as e:
                raise ValueError(f"--trial {spec!r}: {e}") from None
            plan.append(item)
    return plan


def _config(a, item: Dict[str, Any]) -> "train_mod.TrainConfig":
    return dataclasses.replace(base_config(a), model=item["model"], lr=item["lr"], warmup=item["warmup"],
                               seed=item["seed"], model_overrides=dict(item["overrides"]))


def plan_runs(a, plan: List[Dict[str, Any]], data_sha256: str) -> List[Run]:
    """A :class:`fsn_studies.runs.Run` per plan item; a trial x seed planned twice (the same
    settings, however spelled) is refused."""
    runs = [plan_run(_config(a, item), item["trial"], data_sha256,
                     f"change that trial (e.g. a lower lr= in --trial {item['spec']!r}) or leave it out")
            for item in plan]
    specs = {id(r): item["spec"] for r, item in zip(runs, plan)}
    refuse_repeats(runs, lambda r: f"--trial {specs[id(r)]!r} seed {r.config.seed}")
    return runs


def _record(item: Dict[str, Any], run: Run, log: Dict[str, Any], a, runs_dir: Path) -> Dict[str, Any]:
    per_step = a.batch_size * a.seq_len
    return dict(model=item["model"], architecture=item["model"], trial=item["trial"], knobs=item["knobs"],
                params=log["params"], target_params=str(a.params), seed=item["seed"], lr=item["lr"],
                warmup=item["warmup"], tokens=a.steps * per_step, **{FINAL_VAL: log["final_val_bpb"]},
                **train_fit(log, a.eval_every, a.steps * per_step),
                curve=[[v["step"] * per_step, v["bpb"]] for v in log["val"]], overrides=item["overrides"],
                wall_time_s=log.get("wall_time_s"), run_id=run.id, run_dir=str(run.directory(runs_dir)),
                model_config=log["model_config"])


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per trial label: model, lr, knobs, params, seeds, mean/std/min final val bits/byte."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["trial"], []).append(r)
    out = {}
    for key, rs in groups.items():
        vals = [final_val(r) for r in rs]
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
        lines.append(f"| {r['model']} | {knobs} | {r['lr']:g} | {r['seed']} | {final_val(r):.4f} | "
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
    add_study_flags(p, "sweep", "sweep", defaults={"params": "250k", "steps": 800, "eval_every": 100},
                    helps={"params": "parameter target for every trial (default %(default)s)",
                           "lr": "learning rate of trials that set none"})
    return p


def _main(argv: Sequence[str]) -> int:
    a = _parser().parse_args(argv)
    device = start_study(a)
    plan = _plan(a)
    study = run_study(a, "sweep", "sweep", plan, plan_runs, _record, describe=lambda item: f"{item['trial']} seed "
                      f"{item['seed']}", key=lambda r: (r["trial"], r["seed"]))
    corpus, settings, records, out_dir, stem = study.corpus, study.settings, study.records, study.out_dir, study.stem
    summary = summarise(records)
    copy = copy_depth_table(records, a, corpus, device) if a.copy_windows > 0 else None
    doc = dict(
        kind="quality", study="sweep", device=device_name(device), corpus=corpus.name,
        corpus_info=corpus.describe(), commit=git_commit(), date=_dt.datetime.now().isoformat(timespec="seconds"),
        torch=torch.__version__, trials=sorted({r["trial"] for r in records}),
        settings_id=settings_id(settings), shared_settings=settings,
        settings=dict(params=str(a.params), steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len,
                      default_lr=a.lr, eval_every=a.eval_every, eval_windows=a.eval_windows,
                      tokens_per_run=a.steps * a.batch_size * a.seq_len, optimizer="AdamW (fsn_model.train)",
                      schedule="linear warmup + cosine (fsn_model.train)"),
        runs=records, summary=summary, copy_depth=copy,
    )
    report.write_quality_files(out_dir, stem, doc, [dict(r, model=r["trial"]) for r in records],
                               f"{corpus.name}, ~{a.params} params, {a.steps * a.batch_size * a.seq_len:,} "
                               f"tokens/run, {doc['device']}", tables(records, summary, a.eval_every))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-sweep``."""
    return run_study_cli("fsn-sweep", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
