"""Quality comparison: ``fsn-compare`` / ``python -m fsn_model.compare``.

Trains several models on the same data with the same token budget, optimizer, schedule
and seeds (every run goes through :func:`fsn_model.train.train`, so two runs with the same
seed see the same batches), then writes

* ``quality-<corpus>-<date>.json``: top level ``kind`` = "quality", ``device``, ``corpus``
  (its name), ``commit``, ``settings``, ``runs`` (one per model x seed [x lr]:
  ``{model, params, seed, tokens, final_val_bpc, final_train_bpb, epochs, curve: [[tokens, val_bpc],
  ...], lr, ...}``; :func:`train_fit` defines the two fit fields),
  ``corpus_info`` (path, bytes, sha256, splits), ``summary`` (mean / std / min of final
  val bits per byte per model) and ``copy_depth`` (mean loss per copy-depth bin of each
  model's best checkpoint on test windows; see ``fsn_model/README.md``, "Copy depth");
* ``quality-<corpus>-<date>.png``: validation learning curves (bits/byte vs tokens);
* ``quality-<corpus>-<date>-copy-depth.png``: the copy-depth bar chart;
* ``quality-<corpus>-<date>.md``: the summary and copy-depth tables.

Models: ``fsn``, ``fsn-meanfield``, ``transformer`` at one parameter target, plus the
ablations ``fsn-no-delay`` (``build_model(..., delay=False)``: the delay kernel L_n is
zeroed at init and masked out at use, so it never moves; its parameters still count) and ``fsn-nh1``
(one harmonic, ``n_harmonics=1``, width re-solved to the same parameter target).
Bytes are characters here: bits per byte = bits per character (bpc) on byte corpora.

Output goes to ``--out`` (default: benchmarks/results on a CUDA machine, ``.benchmarks/quality``
otherwise, so a CPU run never lands among committed results); run directories
(checkpoints, logs) to ``--runs-dir``.

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
import json
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import train as train_mod  # the module; train_mod.train is the function
from .checkpoint import load_model, resolve_device
from .cli import OneLineParser, add_dataclass_flags, run_cli, values_for
from .data import eval_windows, load_corpus
from .provenance import REPO_ROOT, device_name, git_commit
from .threads import add_threads_flag, apply_threads

BASE_MODELS = ("fsn", "fsn-meanfield", "transformer")
ABLATIONS = {
    "no-delay": ("fsn", {"delay": False}),  # label fsn-no-delay: (architecture, build_model overrides)
    "nh1": ("fsn", {"n_harmonics": 1}),
}


def _plan(a) -> List[Dict[str, Any]]:
    """Every run: label, architecture, overrides, seed, lr."""
    models = [m for m in a.models.split(",") if m]
    bad = [m for m in models if m not in BASE_MODELS]
    if bad:
        raise ValueError(f"--models: unknown {bad}; choose from {', '.join(BASE_MODELS)}")
    ablations = [] if a.ablations in ("", "none") else a.ablations.split(",")
    bad = [x for x in ablations if x not in ABLATIONS]
    if bad:
        raise ValueError(f"--ablations: unknown {bad}; choose from {', '.join(ABLATIONS)} or 'none'")
    seeds = parse_seeds(a.seeds)
    try:
        t_lrs = [float(x) for x in a.transformer_lrs.split(",")] if a.transformer_lrs else [a.lr]
    except ValueError:
        raise ValueError(f"--transformer-lrs: expected numbers separated by commas, got {a.transformer_lrs!r}"
                         ) from None
    plan = []
    for label in models + [f"fsn-{x}" for x in ablations]:
        arch, overrides = (label, {}) if label in BASE_MODELS else ABLATIONS[label[4:]]
        for lr in (t_lrs if label == "transformer" else [a.lr]):
            for seed in seeds:
                plan.append(dict(label=label, arch=arch, overrides=overrides, seed=seed, lr=lr))
    return plan


def parse_seeds(text: str) -> List[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ValueError naming --seeds unless non-negative integers."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise ValueError(f"--seeds: expected integers >= 0 separated by commas, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds: expected integers >= 0 separated by commas, e.g. 0,1,2; got {text!r}")
    return seeds


def _run_one(item: Dict[str, Any], a, runs_dir: Path) -> Dict[str, Any]:
    lr_tag = f"-lr{item['lr']:g}" if a.transformer_lrs and item["label"] == "transformer" else ""
    out = runs_dir / f"{item['label']}{lr_tag}-s{item['seed']}"
    cfg = dataclasses.replace(base_config(a), model=item["arch"], lr=item["lr"], seed=item["seed"], out=str(out),
                              model_overrides=dict(item["overrides"]))
    log = train_mod.train(cfg)
    per_step = a.batch_size * a.seq_len
    curve = [[v["step"] * per_step, v["bpb"]] for v in log["val"]]
    return dict(model=item["label"], architecture=item["arch"], params=log["params"], target_params=str(a.params),
                seed=item["seed"], lr=item["lr"], tokens=a.steps * per_step, final_val_bpc=log["final_val_bpb"],
                **train_fit(log, a.eval_every, a.steps * per_step),
                curve=curve, overrides=item["overrides"], delay=item["overrides"].get("delay", True),
                wall_time_s=log.get("wall_time_s"), run_dir=str(out), model_config=log["model_config"])


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
        each training byte on average (batches are random windows). ``final_val_bpc -
        final_train_bpb`` is the split's own shift (validation is the corpus's next 5%) plus
        what the model has memorised, which grows with ``epochs``.
    """
    losses = [t["loss"] for t in log["train"][-max(1, last_steps):]]
    start, stop = log["corpus"]["splits"]["train"]
    return dict(final_train_bpb=statistics.fmean(losses) / math.log(2), epochs=tokens / (stop - start))


def _summary(runs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in runs:
        key = r["model"] + (f" lr={r['lr']:g}" if r["model"] == "transformer" else "")
        groups.setdefault(key, []).append(r)
    out = {}
    for key, rs in groups.items():
        vals = [r["final_val_bpc"] for r in rs]
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
    test windows: the run was selected on val, so val would flatter it."""
    from .copy_depth import format_table, loss_by_bin, window_depths
    from .evaluate import per_position_loss

    windows = eval_windows(load_corpus(a.data).split("test"), a.seq_len, a.copy_windows)
    depths = window_depths(windows)
    best: Dict[str, Dict[str, Any]] = {}
    for r in runs:
        if r["model"] not in best or r["final_val_bpc"] < best[r["model"]]["final_val_bpc"]:
            best[r["model"]] = r
    results = {}
    for label, r in best.items():
        model, _ = load_model(str(Path(r["run_dir"]) / "checkpoint.pt"), str(device))
        results[label] = loss_by_bin(per_position_loss(model, windows).numpy() / math.log(2), depths)
    return dict(split="test", windows=int(len(windows)), seq_len=a.seq_len,
                checkpoints={k: str(Path(v["run_dir"]) / "checkpoint.pt") for k, v in best.items()},
                bins=results, table=format_table(results))


def _no_nan(obj):
    """NaN (an empty copy-depth bin) -> None, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def plot_curves(runs: List[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    labels = sorted({r["model"] + (f" lr={r['lr']:g}" if r["model"] == "transformer" else "") for r in runs})
    colors = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    seen = set()
    for r in runs:
        lab = r["model"] + (f" lr={r['lr']:g}" if r["model"] == "transformer" else "")
        pts = np.asarray(r["curve"], dtype=float).reshape(-1, 2)
        ax.plot(pts[:, 0], pts[:, 1], "-o", ms=2, lw=1, color=colors[lab], label=None if lab in seen else lab)
        seen.add(lab)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation bits per byte")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# the TrainConfig settings fsn-compare takes (flags derived from the dataclass); the
# others keep TrainConfig's defaults
SHARED_SETTINGS = ("params", "data", "steps", "batch_size", "seq_len", "lr", "warmup", "eval_every", "eval_windows",
                   "device", "progress", "compile")


def _parser() -> OneLineParser:
    p = OneLineParser(prog="fsn-compare", description="Train FSN, its ablations and the transformer on the same "
                      "data, budget and seeds; write quality JSON, learning-curve PNG and copy-depth table.")
    p.add_argument("--models", default=",".join(BASE_MODELS), help="comma list of %s" % ", ".join(BASE_MODELS))
    p.add_argument("--ablations", default="no-delay,nh1", help="comma list of %s, or 'none'" % ", ".join(ABLATIONS))
    p.add_argument("--seeds", default="0,1,2")
    add_dataclass_flags(p, train_mod.TrainConfig, SHARED_SETTINGS, defaults={"params": "1M"}, helps={
        "params": "parameter target for every model (default %(default)s)",
        "steps": "steps per run; tokens = steps*batch*seq_len",
        "lr": "learning rate of the FSN models (and the transformer without --transformer-lrs)",
        "warmup": "warmup steps (capped at steps/10)"})
    p.add_argument("--transformer-lrs", default="6e-3", help="the transformer's learning rate(s), e.g. 3e-3,6e-3 "
                   "(default %(default)s, its best at 250k in the tuning study; '' = the --lr of the FSN models)")
    p.add_argument("--copy-windows", type=int, default=64, help="val windows for the copy-depth table (0: skip)")
    p.add_argument("--out", default=None, help="folder for the JSON/PNG/MD (default: benchmarks/results on CUDA, "
                   ".benchmarks/quality on CPU)")
    p.add_argument("--runs-dir", default=None, help="folder for run checkpoints (default runs/compare)")
    add_threads_flag(p)
    return p


def base_config(a) -> "train_mod.TrainConfig":
    """The settings every run of this comparison shares (runs differ by model, lr, seed, out)."""
    return train_mod.TrainConfig(**dict(values_for(a, SHARED_SETTINGS), warmup=min(a.warmup, max(1, a.steps // 10))),
                                 overwrite=True)


def _main(argv: Sequence[str]) -> int:
    a = _parser().parse_args(argv)
    apply_threads(a.threads)  # once, for every run of this process
    device = resolve_device(a.device)
    plan = _plan(a)
    for item in plan:  # every setting checked before the first run
        train_mod.validate(dataclasses.replace(base_config(a), model=item["arch"], lr=item["lr"],
                                               model_overrides=dict(item["overrides"])))
    if a.copy_windows < 0:
        raise ValueError(f"--copy-windows must be >= 0, got {a.copy_windows}")
    corpus = load_corpus(a.data)
    corpus_info = corpus.describe() if hasattr(corpus, "describe") else {"name": corpus.name}
    out_dir = Path(a.out) if a.out else (REPO_ROOT / "benchmarks" / "results" if device.type == "cuda"
                                         else REPO_ROOT / ".benchmarks" / "quality")
    runs_dir = Path(a.runs_dir) if a.runs_dir else Path("runs") / "compare" / corpus.name
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in corpus.name)
    stem = f"quality-{slug}-{_dt.date.today().isoformat()}"
    runs = []
    for i, item in enumerate(plan):
        print(f"[{i + 1}/{len(plan)}] {item['label']} seed {item['seed']} lr {item['lr']:g}", flush=True)
        runs.append(_run_one(item, a, runs_dir))
        print(f"    final val {runs[-1]['final_val_bpc']:.4f} bits/byte ({runs[-1]['params']:,} params)", flush=True)
    summary = _summary(runs)
    copy = _copy_depth(runs, a, device) if a.copy_windows > 0 else None
    doc = dict(
        kind="quality", device=device_name(device), corpus=corpus.name, corpus_info=corpus_info,
        commit=git_commit(),
        date=_dt.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
        settings=dict(params=str(a.params), steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len, lr=a.lr,
                      transformer_lrs=a.transformer_lrs, warmup=min(a.warmup, max(1, a.steps // 10)),
                      eval_every=a.eval_every, eval_windows=a.eval_windows,
                      tokens_per_run=a.steps * a.batch_size * a.seq_len, optimizer="AdamW (fsn_model.train)",
                      schedule="linear warmup + cosine (fsn_model.train)"),
        runs=runs, summary=summary, copy_depth=copy,
    )
    lines = ["| model | params | seeds | final val bits/byte (mean +/- std) | min |", "|---|---|---|---|---|"]
    for key, s in summary.items():
        lines.append(f"| {key}{' (best lr)' if s.get('best_lr') else ''} | {s['params']:,} | {len(s['seeds'])} | "
                     f"{s['mean']:.4f} +/- {s['std']:.4f} | {s['min']:.4f} |")
    write_quality_files(out_dir, stem, doc, runs, f"{corpus.name}, ~{a.params} params, "
                        f"{a.steps * a.batch_size * a.seq_len:,} tokens/run, {doc['device']}", "\n".join(lines))
    return 0


def write_quality_files(out_dir: Path, stem: str, doc: Dict[str, Any], runs: List[Dict[str, Any]], title: str,
                        table: str) -> None:
    """Write ``<stem>.json`` (``doc``), the learning curves ``<stem>.png`` (one line per
    run's ``model``), the copy-depth chart (when ``doc["copy_depth"]``) and ``<stem>.md``
    (``table`` plus the copy-depth table); print the tables."""
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(_no_nan(doc), indent=1))
    plot_curves(runs, out_dir / f"{stem}.png", title)
    copy = doc.get("copy_depth")
    if copy is not None:
        from .copy_depth import plot

        plot(copy["bins"], str(out_dir / f"{stem}-copy-depth.png"))
        table += "\n\nCopy depth (mean bits/byte per bin on test windows, best run of each model):\n\n" + copy["table"]
    (out_dir / f"{stem}.md").write_text(table + "\n")
    print(table)
    print(f"wrote {json_path} (+ .png, .md{', -copy-depth.png' if copy else ''})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-compare``."""
    return run_cli("fsn-compare", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
