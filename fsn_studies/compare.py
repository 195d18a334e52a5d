"""Quality comparison: ``fsn-compare`` / ``python -m fsn_studies.compare``.

Trains several models on the same data with the same token budget, optimizer, schedule
and seeds (every run goes through :func:`fsn_model.train.train`, so two runs with the same
seed see the same batches), then writes

* ``quality-<corpus>-<params>-<steps>steps-<settings_id>.json`` (or ``--name STEM``): top level
  ``kind`` = "quality", ``device``, ``corpus`` (its name), ``commit``, ``settings``,
  ``settings_id`` (the shared settings the file belongs to, :mod:`fsn_studies.report`), ``runs``
  (one per model x seed [x lr]: ``{model, params, seed, tokens, final_val_bits_per_byte,
  final_train_bpb, epochs, curve: [[tokens, val bits/byte], ...], lr, run_id, run_dir, ...}``;
  :func:`train_fit` defines the two fit fields),
  ``corpus_info`` (path, bytes, sha256, splits), ``summary`` (mean / std / min of final
  val bits per byte per model) and ``copy_depth`` (mean loss per copy-depth bin of each
  model's best checkpoint on test windows; see ``fsn_model/README.md``, "Copy depth");
* ``<stem>.png``: validation learning curves (bits/byte vs tokens);
* ``<stem>-copy-depth.png``: the copy-depth bar chart;
* ``<stem>.md``: the summary and copy-depth tables.

Runs go through :func:`fsn_studies.runs.execute`, as ``fsn-sweep``'s: each run directory is
named and checked by the run's identity (everything that changes what it trains), a finished
run is read back and never retrained or replaced, a started one resumes, and a repeated model
or seed is refused before anything trains. A later comparison with the same shared settings
into the same results file adds its runs to it (:mod:`fsn_studies.report`).

Models (``--models``, any of :data:`fsn_model.build.MODEL_NAMES`; default ``fsn``,
``fsn-paper``, ``fsn-meanfield``, ``transformer``) at one parameter target: ``fsn`` and
``fsn-meanfield`` have learned projections around the attention, ``fsn-paper`` is the paper's
FSN without them. Plus the ablations of ``fsn`` (the recommended FSN, projections kept):
``fsn-no-delay`` (``build_model("fsn", ..., delay=False)``: the delay kernel L_n is zeroed at
init and masked out at use, so it never moves; its parameters still count) and ``fsn-nh1``
(one harmonic, ``n_harmonics=1``, width re-solved to the same parameter target).
Bytes are characters here: bits per byte = bits per character (bpc) on byte corpora.

Everything goes under the current working directory, never into the installed package: run
directories (checkpoints, logs) to ``--runs-dir`` (default ``runs/compare/<corpus>``, as
``fsn-train`` writes ``runs/...``), the result files to ``--out`` (default
``runs/compare/<corpus>/results``). Committed study results live in ``fsn_studies/results/``
(pass ``--out`` to write there).

Data: ``--data FILE`` takes any byte file (enwik8 gets its standard 90M/5M/5M split,
other files 90/5/5%). Without it the default corpus is the Python standard library's
sources (code, on every machine). No natural-English corpus of >= 10 MB ships offline
with Python or a PyPI package we found (the Gutenberg packages download at run time), so
for English pass a file, e.g. enwik8 (``http://mattmahoney.net/dc/enwik8.zip``, unzip).

Examples::

    fsn-compare --params 1M --seeds 0,1,2 --steps 5000 --data enwik8 --transformer-lrs 1e-3,2e-3,3e-3
    fsn-compare --params 200k --seeds 0 --steps 300 --ablations none          # CPU, minutes

Default learning rates are each model's best from the 250k tuning study (``fsn-sweep``):
1.2e-2 for the FSN models (``--lr``), 6e-3 for the transformer (``--transformer-lrs``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from fsn_model import train as train_mod  # the module; train_mod.train is the function
from fsn_model.build import MODEL_NAMES
from fsn_model.cli import OneLineParser
from fsn_model.provenance import device_name, git_commit

from . import report
from .files import settings_id
from .records import FINAL_VAL, final_val
from .runs import Run, plan_run, refuse_repeats, run_study_cli, unique
from .study import (
    add_study_flags,
    base_config,
    copy_depth_table,
    parse_seeds,
    run_study,
    start_study,
    train_fit,
)

# the default comparison: the recommended FSN models, the paper's FSN and the baseline
BASE_MODELS = ("fsn", "fsn-paper", "fsn-meanfield", "transformer")
ABLATIONS = {  # label fsn-<key>: (build_model name, its overrides); ablations of the recommended FSN
    "no-delay": ("fsn", {"delay": False}),
    "nh1": ("fsn", {"n_harmonics": 1}),
}


def _label(item: Dict[str, Any]) -> str:
    """The summary's group: the model, and the transformer's lr (``repr``: distinct rates stay distinct)."""
    return item["model"] + (f" lr={item['lr']!r}" if item["model"] == "transformer" else "")


def _plan(a) -> List[Dict[str, Any]]:
    """Every run: label, architecture, overrides, seed, lr (checked: unknown or repeated names refused)."""
    models = unique([m for m in a.models.split(",") if m], "--models")
    bad = [m for m in models if m not in MODEL_NAMES]
    if bad:
        raise ValueError(f"--models: unknown {bad}; choose from {', '.join(MODEL_NAMES)}")
    ablations = [] if a.ablations in ("", "none") else unique(a.ablations.split(","), "--ablations")
    bad = [x for x in ablations if x not in ABLATIONS]
    if bad:
        raise ValueError(f"--ablations: unknown {bad}; choose from {', '.join(ABLATIONS)} or 'none'")
    seeds = parse_seeds(a.seeds)
    try:
        t_lrs = [float(x) for x in a.transformer_lrs.split(",")] if a.transformer_lrs else [a.lr]
    except ValueError:
        raise ValueError(f"--transformer-lrs: expected numbers separated by commas, got {a.transformer_lrs!r}"
                         ) from None
    t_lrs = unique(t_lrs, "--transformer-lrs")
    plan = []
    for label in models + [f"fsn-{x}" for x in ablations]:
        arch, overrides = (label, {}) if label in MODEL_NAMES else ABLATIONS[label[4:]]
        for lr in (t_lrs if label == "transformer" else [a.lr]):
            for seed in seeds:
                plan.append(dict(label=label, arch=arch, overrides=overrides, seed=seed, lr=lr))
    return plan


def _config(a, item: Dict[str, Any]) -> "train_mod.TrainConfig":
    return dataclasses.replace(base_config(a), model=item["arch"], lr=item["lr"], seed=item["seed"],
                               model_overrides=dict(item["overrides"]))


def _remedy(item: Dict[str, Any]) -> str:
    """What to change when this model's run diverges, with the flag that changes it."""
    if item["label"] == "transformer":
        return "lower its rate (--transformer-lrs) or leave it out (--models)"
    leave_out = "--ablations" if item["label"] not in BASE_MODELS else "--models"
    return f"lower the FSN models' rate (--lr) or leave it out ({leave_out})"


def plan_runs(a, plan: List[Dict[str, Any]], data_sha256: str) -> List[Run]:
    """A checked :class:`fsn_studies.runs.Run` per plan item; a run planned twice is refused."""
    runs = [plan_run(_config(a, item), _label(dict(item, model=item["label"])), data_sha256, _remedy(item))
            for item in plan]
    refuse_repeats(runs, lambda r: f"{r.label} seed {r.config.seed}")
    return runs


def _record(item: Dict[str, Any], run: Run, log: Dict[str, Any], a, runs_dir: Path) -> Dict[str, Any]:
    per_step = a.batch_size * a.seq_len
    curve = [[v["step"] * per_step, v["bpb"]] for v in log["val"]]
    return dict(model=item["label"], architecture=item["arch"], params=log["params"], target_params=str(a.params),
                seed=item["seed"], lr=item["lr"], tokens=a.steps * per_step, **{FINAL_VAL: log["final_val_bpb"]},
                **train_fit(log, a.eval_every, a.steps * per_step),
                curve=curve, overrides=item["overrides"], delay=item["overrides"].get("delay", True),
                wall_time_s=log.get("wall_time_s"), run_id=run.id, run_dir=str(run.directory(runs_dir)),
                model_config=log["model_config"])


def _summary(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(_label(r), []).append(r)
    out = {}
    for key, rs in groups.items():
        vals = [final_val(r) for r in rs]
        out[key] = dict(model=rs[0]["model"], lr=rs[0]["lr"], params=rs[0]["params"], seeds=[r["seed"] for r in rs],
                        mean=statistics.fmean(vals), std=statistics.stdev(vals) if len(vals) > 1 else 0.0,
                        min=min(vals))
    # the transformer LR sweep: mark the best lr (lowest mean)
    tr = [k for k in out if out[k]["model"] == "transformer"]
    if tr:
        best = min(tr, key=lambda k: out[k]["mean"])
        for k in tr:
            out[k]["best_lr"] = k == best
    return out


def _parser() -> OneLineParser:
    p = OneLineParser(prog="fsn-compare", description="Train FSN, its ablations and the transformer on the same "
                      "data, budget and seeds; write quality JSON, learning-curve PNG and copy-depth table.")
    p.add_argument("--models", default=",".join(BASE_MODELS), help="comma list of %s (default %%(default)s)"
                   % ", ".join(MODEL_NAMES))
    p.add_argument("--ablations", default="no-delay,nh1", help="comma list of %s, or 'none'" % ", ".join(ABLATIONS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--transformer-lrs", default="6e-3", help="the transformer's learning rate(s), e.g. 3e-3,6e-3 "
                   "(default %(default)s, its best at 250k in the tuning study; '' = the --lr of the FSN models)")
    add_study_flags(p, "compare", "quality", defaults={"params": "1M"}, helps={
        "params": "parameter target for every model (default %(default)s)",
        "lr": "learning rate of the FSN models (and the transformer without --transformer-lrs)"})
    return p


def _main(argv: Sequence[str]) -> int:
    a = _parser().parse_args(argv)
    device = start_study(a)
    plan = _plan(a)
    for item in plan:  # every setting checked before the corpus is read and before the first run
        train_mod.validate(_config(a, item))
    study = run_study(a, "compare", "quality", plan, plan_runs, _record,
                      describe=lambda item: f"{item['label']} seed {item['seed']} lr {item['lr']:g}",
                      key=lambda r: (_label(r), r["seed"]))
    corpus, settings, records, out_dir, stem = study.corpus, study.settings, study.records, study.out_dir, study.stem
    summary = _summary(records)
    copy = copy_depth_table(records, a, corpus, device) if a.copy_windows > 0 else None
    doc = dict(
        kind="quality", device=device_name(device), corpus=corpus.name, corpus_info=corpus.describe(),
        commit=git_commit(),
        date=_dt.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
        settings_id=settings_id(settings), shared_settings=settings,
        settings=dict(params=str(a.params), steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len, lr=a.lr,
                      transformer_lrs=a.transformer_lrs, warmup=min(a.warmup, max(1, a.steps // 10)),
                      eval_every=a.eval_every, eval_windows=a.eval_windows,
                      tokens_per_run=a.steps * a.batch_size * a.seq_len, optimizer="AdamW (fsn_model.train)",
                      schedule="linear warmup + cosine (fsn_model.train)"),
        runs=records, summary=summary, copy_depth=copy,
    )
    lines = ["| model | params | seeds | final val bits/byte (mean +/- std) | min |", "|---|---|---|---|---|"]
    for key, s in summary.items():
        lines.append(f"| {key}{' (best lr)' if s.get('best_lr') else ''} | {s['params']:,} | {len(s['seeds'])} | "
                     f"{s['mean']:.4f} +/- {s['std']:.4f} | {s['min']:.4f} |")
    report.write_quality_files(out_dir, stem, doc, [dict(r, model=_label(r)) for r in records],
                               f"{corpus.name}, ~{a.params} params, {a.steps * a.batch_size * a.seq_len:,} "
                               f"tokens/run, {doc['device']}", "\n".join(lines))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-compare``."""
    return run_study_cli("fsn-compare", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
