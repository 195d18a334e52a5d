"""What ``fsn-compare`` and ``fsn-sweep`` share: their common flags and base training
settings, the start of a study (threads, device, checks), its run loop (:func:`run_study`:
corpus, run identities, the results file claimed before any training, execute, merge), the
training fit of a run and the copy-depth table of the best runs. Each tool keeps only what
differs: how it plans its runs, what it records of each and how it summarises them."""
from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from fsn_model import train as train_mod  # the module; train_mod.train is the function
from fsn_model.checkpoint import load_model, resolve_device
from fsn_model.cli import OneLineParser, add_dataclass_flags, values_for
from fsn_model.data import eval_windows, load_corpus
from fsn_model.threads import add_threads_flag, apply_threads

from . import report
from .files import settings_id
from .records import final_val
from .runs import execute, training_settings, unique


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


def copy_depth_table(runs: List[Dict[str, Any]], a, corpus, device: torch.device) -> Dict[str, Any]:
    """Loss per copy-depth bin of each model's best run (lowest final val), measured on
    ``corpus``'s test windows: the run was selected on val, so val would flatter it. Only runs whose
    directory still holds their finished run (same identity) take part."""
    from fsn_model.copy_depth import format_table, loss_by_bin, window_depths
    from fsn_model.evaluate import per_position_loss

    windows = eval_windows(corpus.split("test"), a.seq_len, a.copy_windows)
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
