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
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from fsn_model import train as train_mod  # the module; train_mod.train is the function
from fsn_model.build import MODEL_NAMES
from fsn_model.checkpoint import load_model, resolve_device
from fsn_model.cli import OneLineParser, add_dataclass_flags, values_for
from fsn_model.data import eval_windows, load_corpus
from fsn_model.provenance import device_name, git_commit
from fsn_model.threads import add_threads_flag, apply_threads

from . import report
from .files import settings_id
from .records import FINAL_VAL, final_val
from .runs import Run, execute, plan_run, refuse_repeats, run_study_cli, training_settings, unique

# the default comparison: the recommended FSN models, the paper's FSN and the baseline
BASE_MODELS = ("fsn", "fsn-paper", "fsn-meanfield", "transformer")
ABLATIONS = {  # label fsn-<key>: (build_model name, its overrides); ablations of the recommended FSN
    "no-delay": ("fsn", {"delay": False}),
    "nh1": ("fsn", {"n_harmonics": 1}),
}


def default_dir(tool: str, corpus_name: str) -> Path:
    """``runs/<tool>/<corpus>`` relative to the current working directory: where a study tool
    keeps its run directories (and, in ``results/``, its result files) unless told otherwise."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in corpus_name)
    return Path("runs") / tool / safe


def parse_seeds(text: str) -> List[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ValueError naming --seeds unless distinct non-negative integers."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise ValueError(f"--seeds: expected integers >= 0 separated by commas, got {text!r}") from None
    if not seeds or min(seeds) < 0 or max(seeds) > train_mod.MAX_SEED:
        raise ValueError(f"--seeds: expected integers in 0..2**64 - 1 separated by commas, e.g. 0,1,2; got {text!r}")
    return unique(seeds, "--seeds")


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


def train_fit(log: Dict[str, Any], last_steps: int, tokens: int) -> Dict[str, float]:
    """How well a finished run fits its training data, beside its validation loss.

    Args:
        log: the run's ``log.json`` (:func:`fsn_model.train.train`'s return value).
        last_steps: how many final steps to average the training loss over (>= 1).
        tokens: the bytes the run trained on (steps x batch x seq_len).

    Returns:
        ``final_train_bpb``: the mean training loss over the last ``last_steps`` steps, in bits
        per byte (each step's loss is taken before its update, on its own batch); ``epochs``:
        ``tokens`` over the bytes of the corpus's training split, how often the run has seen
        each training byte on average (batches are random windows). ``final_val_bits_per_byte -
        final_train_bpb`` is the split's own shift (validation is the corpus's next 5%) plus
        what the model has memorised, which grows with ``epochs``.
    """
    losses = [t["loss"] for t in log["train"][-max(1, last_steps):]]
    start, stop = log["corpus"]["splits"]["train"]
    return dict(final_train_bpb=statistics.fmean(losses) / math.log(2), epochs=tokens / (stop - start))


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


def _copy_depth(runs: List[Dict[str, Any]], a, device: torch.device) -> Dict[str, Any]:
    """Loss per copy-depth bin of each model's best run (lowest final val), measured on
    test windows: the run was selected on val, so val would flatter it. Only runs whose
    directory still holds their finished run (same identity) take part."""
    from fsn_model.copy_depth import format_table, loss_by_bin, window_depths
    from fsn_model.evaluate import per_position_loss

    windows = eval_windows(load_corpus(a.data).split("test"), a.seq_len, a.copy_windows)
    depths = window_depths(windows)
    best: Dict[str, Dict[str, Any]] = {}
    for r in runs:
        if not report.run_still_there(r):
            continue
        if r["model"] not in best or final_val(r) < final_val(best[r["model"]]):
            best[r["model"]] = r
    results = {}
    for label, r in best.items():
        model, _ = load_model(str(Path(r["run_dir"]) / "checkpoint.pt"), str(device))
        results[label] = loss_by_bin(per_position_loss(model, windows).numpy() / math.log(2), depths)
    return dict(split="test", windows=int(len(windows)), seq_len=a.seq_len,
                checkpoints={k: str(Path(v["run_dir"]) / "checkpoint.pt") for k, v in best.items()},
                bins=results, table=format_table(results))


# the TrainConfig settings fsn-compare and fsn-sweep take (flags derived from the dataclass);
# the others keep TrainConfig's defaults
SHARED_SETTINGS = ("params", "data", "steps", "batch_size", "seq_len", "lr", "warmup", "eval_every", "eval_windows",
                   "device", "progress", "compile")


def add_study_flags(p: OneLineParser, tool: str, stem: str, defaults: Dict[str, Any], helps: Dict[str, str]) -> None:
    """The flags fsn-compare and fsn-sweep share: the :data:`SHARED_SETTINGS` of TrainConfig
    (with this tool's ``defaults`` and ``helps``), the copy-depth windows and where runs and
    results go (``runs/<tool>/<corpus>`` under the working directory by default)."""
    add_dataclass_flags(p, train_mod.TrainConfig, SHARED_SETTINGS, defaults=defaults, helps={
        "steps": "steps per run; tokens = steps*batch*seq_len", "warmup": "warmup steps (capped at steps/10)",
        **helps})
    p.add_argument("--copy-windows", type=int, default=64, help="test windows for the copy-depth table (0: skip)")
    p.add_argument("--out", default=None, help=f"folder for the JSON/PNG/MD (default runs/{tool}/<corpus>/results, "
                   "under the current directory)")
    p.add_argument("--name", default=None, help=f"file stem (default {stem}-<corpus>-<params>-<steps>steps-"
                   "<settings id>); a file of other settings there is refused, one of the same settings grows")
    p.add_argument("--runs-dir", default=None, help="folder for run directories; finished runs of the same settings "
                   f"there are read back (default runs/{tool}/<corpus>, under the current directory)")
    add_threads_flag(p)


def base_config(a) -> "train_mod.TrainConfig":
    """The settings every run of a comparison or sweep shares (runs differ by model, knobs, lr,
    warmup and seed); the warmup is capped at a tenth of the steps."""
    return train_mod.TrainConfig(**dict(values_for(a, SHARED_SETTINGS), warmup=min(a.warmup, max(1, a.steps // 10))))


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


def shared_settings(tool: str, a, data_sha256: str) -> Dict[str, Any]:
    """What a results file of ``tool`` belongs to: the corpus, every shared training setting and
    the copy-depth windows (runs differ only by model, knobs, lr and seed)."""
    train = training_settings(dataclasses.asdict(base_config(a)))
    for varies in ("model", "seed", "model_overrides"):
        train.pop(varies, None)
    return dict(tool=tool, data_sha256=data_sha256, copy_windows=a.copy_windows, **train)


def start_study(a) -> torch.device:
    """What fsn-compare and fsn-sweep do first: the thread count (once, for every run of this
    process), the device and the copy-depth windows checked."""
    apply_threads(a.threads)
    device = resolve_device(a.device)
    if a.copy_windows < 0:
        raise ValueError(f"--copy-windows must be >= 0, got {a.copy_windows}")
    return device


@dataclasses.dataclass
class Study:
    """What :func:`run_study` ran: the corpus, the shared settings, every record of the results
    file (earlier ones merged), and where the files go (``out_dir / stem.*``)."""

    corpus: Any
    settings: Dict[str, Any]
    records: List[Dict[str, Any]]
    out_dir: Path
    stem: str


def run_study(a, tool: str, stem_prefix: str, plan: List[Dict[str, Any]], plan_runs_fn, record_fn,
              describe: Callable[[Dict[str, Any]], str], key: Callable[[Dict[str, Any]], Any]) -> Study:
    """Read the corpus, identify the runs (``plan_runs_fn(a, plan, sha256)``), claim the
    results file of these settings before any training (:func:`fsn_studies.report.prepare`),
    execute every run (finished ones are read back) and merge the records with the file's
    earlier ones by ``key``; runs go to ``--runs-dir`` and files to ``--out``, by default under
    ``runs/<tool>/<corpus>`` of the working directory."""
    corpus = load_corpus(a.data)
    runs = plan_runs_fn(a, plan, corpus.sha256)
    settings = shared_settings(f"fsn-{tool}", a, corpus.sha256)
    runs_dir = Path(a.runs_dir) if a.runs_dir else default_dir(tool, corpus.name)
    out_dir = Path(a.out) if a.out else default_dir(tool, corpus.name) / "results"
    stem = a.name or f"{stem_prefix}-{report.slug(corpus.name)}-{a.params}-{a.steps}steps-{settings_id(settings)}"
    earlier = report.prepare(out_dir, stem, settings)  # before any training: --out writable, file ours
    records = []
    for i, (item, run) in enumerate(zip(plan, runs)):
        print(f"[{i + 1}/{len(plan)}] {describe(item)}", flush=True)
        records.append(record_fn(item, run, execute(run, runs_dir), a, runs_dir))
        print(f"    final val {final_val(records[-1]):.4f} bits/byte ({records[-1]['params']:,} params)", flush=True)
    return Study(corpus, settings, report.merge(earlier, records, key=key), out_dir, stem)


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
    copy = _copy_depth(records, a, device) if a.copy_windows > 0 else None
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
