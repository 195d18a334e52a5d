"""Run directories of the study tools: named and checked by what they train.

``fsn-compare`` and ``fsn-sweep`` run every training through :func:`execute`, so both resume
and read back the same way:

* A run's **identity** (:func:`run_identity`) is everything that changes what it trains: the
  full model config (as built), every training setting of :class:`fsn_model.train.TrainConfig`
  (trial knobs, lr, warmup, steps, batch size, window length, seed, evaluation settings, ...)
  and the corpus's sha256; not where or how the process runs (device, progress bar, ...).
  Floats enter as their ``repr`` (0.012 and 0.0120000001 are two runs).
* Its directory is ``<runs-dir>/<readable prefix>-<hash>`` (:func:`run_dir_name`), the hash
  that of the canonical JSON of the identity; ``identity.json`` in it holds the identity.
* Read-back checks it twice: ``identity.json`` and the settings the run recorded in its
  ``log.json`` must both equal the identity sought. A directory holding anything else is
  refused in one line, never read back as this run and never overwritten.
* A finished run is read back, never retrained or replaced; a started one is resumed
  (``fsn_model.train``'s exact resume); Ctrl-C saves and says to run the command again
  (:class:`StudyInterrupted`, exit 130); a NaN loss names the run that diverged
  (:class:`RunDiverged`, exit 1). :func:`run_study_cli` turns both into one line.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from fsn_model import train as train_mod  # the module: tests may patch train_mod.train
from fsn_model.build import parse_params
from fsn_model.cli import run_cli
from fsn_model.config import config_to_dict

from .files import canonical_json, stable_hash, write_text

IDENTITY_NAME = "identity.json"
# TrainConfig fields that do not change what a run trains: where and how the process runs,
# how often it reports, and the corpus's path (its sha256 stands in for it)
NOT_IDENTITY = tuple(train_mod.RUNTIME_FIELDS) + ("data", "log_every", "stop_at")
FLOAT_FIELDS = ("lr", "min_lr_ratio", "weight_decay", "grad_clip")


class StudyInterrupted(Exception):
    """Ctrl-C stopped a run; its checkpoint is saved and a rerun of the command continues it."""


class RunDiverged(Exception):
    """A run's loss became NaN or inf; the message names the run and what to change."""


def _json_plain(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples -> lists), for comparisons with read files."""
    return json.loads(json.dumps(obj))


def training_settings(config: Dict[str, Any]) -> Dict[str, Any]:
    """The identity part of a TrainConfig (as a dict): fields that change the training, floats
    as floats and ``params`` as its integer count (``"250k"`` and ``250000`` train the same)."""
    out = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    for k in FLOAT_FIELDS:
        if isinstance(out.get(k), (int, float)) and not isinstance(out.get(k), bool):
            out[k] = float(out[k])
    if "params" in out:
        out["params"] = parse_params(out["params"])
    return out


def run_identity(cfg: "train_mod.TrainConfig", data_sha256: str) -> Dict[str, Any]:
    """Everything that changes what ``cfg`` trains (see the module docstring), JSON-plain."""
    return _json_plain({"model_config": config_to_dict(train_mod.model_config_of(cfg)), "data_sha256": data_sha256,
                        "training": training_settings(dataclasses.asdict(cfg))})


def identity_of_log(log: Dict[str, Any]) -> Dict[str, Any]:
    """The identity of the run a ``log.json`` records (the settings it actually trained with)."""
    return _json_plain({"model_config": log.get("model_config"), "data_sha256": log.get("corpus", {}).get("sha256"),
                        "training": training_settings(log.get("train_config", {}))})


def run_id(identity: Dict[str, Any]) -> str:
    """16 hex digits: the sha256 of the identity's canonical JSON."""
    return stable_hash(identity, 16)


def run_dir_name(prefix: str, seed: int, identity: Dict[str, Any]) -> str:
    """``<prefix>-s<seed>-<12 hex digits of run_id>``, the prefix made file-name safe."""
    slug = "".join(ch if ch.isalnum() or ch in ".-_=" else "_" for ch in prefix.replace(" ", "_"))
    return f"{slug}-s{seed}-{run_id(identity)[:12]}"


def _same(a: Any, b: Any) -> bool:
    """Equal identities, compared as canonical JSON (a NaN knob equals itself there)."""
    return canonical_json(a) == canonical_json(b)


def _differences(want: Dict[str, Any], got: Dict[str, Any], prefix: str = "") -> List[str]:
    out = []
    for key in sorted(set(want) | set(got)):
        a, b = want.get(key), got.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif not _same(a, b):
            out.append(f"{prefix}{key} {b!r} (this run: {a!r})")
    return out


def _refuse_other(run_dir: Path, what: str, want: Dict[str, Any], got: Dict[str, Any]) -> None:
    diff = _differences(want, got)
    shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
    raise ValueError(f"run directory {run_dir} holds a run with other settings ({what}: {shown}); it is not read "
                     "back as this run: move it away or pass another --runs-dir")


def finished(log: Dict[str, Any]) -> bool:
    """Whether the run of ``log`` trained and evaluated its last step."""
    steps = log.get("train_config", {}).get("steps")
    return bool(log.get("val")) and log["val"][-1].get("step") == steps and "final_val_bpb" in log


@dataclasses.dataclass
class Run:
    """One planned run: its config (``out`` unset), a readable label, and its identity."""

    config: "train_mod.TrainConfig"
    label: str
    identity: Dict[str, Any]
    remedy: str = "change or drop its settings"  # what to do when it diverges, with the tool's flag

    @property
    def id(self) -> str:
        return run_id(self.identity)

    def directory(self, runs_dir: Path) -> Path:
        return Path(runs_dir) / run_dir_name(self.label, self.config.seed, self.identity)


def plan_run(cfg: "train_mod.TrainConfig", label: str, data_sha256: str, remedy: str = Run.remedy) -> Run:
    """A :class:`Run` of ``cfg`` (its settings checked first: ValueError names a bad one);
    ``remedy`` says, with the tool's flags, what to change if it diverges."""
    train_mod.validate(cfg)
    return Run(cfg, label, run_identity(cfg, data_sha256), remedy)


def refuse_repeats(runs: Sequence[Run], describe: Callable[[Run], str]) -> None:
    """ValueError naming the first run planned twice (same identity: same settings and seed)."""
    seen: Dict[str, Run] = {}
    for r in runs:
        if r.id in seen:
            first, again = describe(seen[r.id]), describe(r)
            same = f"{again} is the same run as {first}" if again != first else f"{again} is given twice"
            raise ValueError(f"{same} (same settings and seed); give each run once")
        seen[r.id] = r


def read_back(run: Run, run_dir: Path) -> Optional[Dict[str, Any]]:
    """The log of the finished run of ``run``'s identity in ``run_dir``; None when it has not
    finished (or not started). ValueError when the directory holds a run of other settings."""
    ident_path, log_path = run_dir / IDENTITY_NAME, run_dir / train_mod.LOG_NAME
    has_run = (run_dir / train_mod.CHECKPOINT_NAME).exists() or log_path.exists()
    if ident_path.exists():
        try:
            stored = json.loads(ident_path.read_text(encoding="utf-8"))
        except ValueError:
            raise ValueError(f"run directory {run_dir}: {IDENTITY_NAME} is not valid JSON; move the directory "
                             "away or pass another --runs-dir") from None
        if not _same(stored, run.identity):
            _refuse_other(run_dir, IDENTITY_NAME, run.identity, stored if isinstance(stored, dict) else {})
    elif has_run:
        raise ValueError(f"run directory {run_dir} holds a run without {IDENTITY_NAME} (not made by this tool); "
                         "move it away or pass another --runs-dir")
    if not log_path.exists():
        return None
    log = json.loads(log_path.read_text(encoding="utf-8"))
    recorded = identity_of_log(log)
    if not _same(recorded, run.identity):
        _refuse_other(run_dir, train_mod.LOG_NAME, run.identity, recorded)
    return log if finished(log) and (run_dir / train_mod.CHECKPOINT_NAME).exists() else None


def _stopped_at(run_dir: Path) -> str:
    try:
        log = json.loads((run_dir / train_mod.LOG_NAME).read_text(encoding="utf-8"))
        return f"at step {log['train'][-1]['step'] + 1}"
    except (OSError, ValueError, KeyError, IndexError):
        return "before its first checkpoint"


def execute(run: Run, runs_dir: Path, say: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train ``run`` in its directory under ``runs_dir``, resume it, or read it back.

    Returns the run's ``log.json`` dict (:func:`fsn_model.train.train`'s) of the finished run.

    Raises:
        ValueError: the directory holds a run of other settings (or is in use by another run).
        StudyInterrupted: Ctrl-C; the run saved a checkpoint and a rerun continues it.
        RunDiverged: the loss became NaN/inf; the last good checkpoint is kept.
    """
    run_dir = run.directory(runs_dir)
    log = read_back(run, run_dir)
    if log is not None:
        say(f"    read back the finished run in {run_dir}")
        return log
    started = (run_dir / train_mod.CHECKPOINT_NAME).exists()
    if not (run_dir / IDENTITY_NAME).exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / IDENTITY_NAME, json.dumps(run.identity, indent=1, sort_keys=True) + "\n")
    cfg = dataclasses.replace(run.config, out=str(run_dir), resume=started, overwrite=False)
    try:
        return train_mod.train(cfg)
    except train_mod.TrainingInterrupted:
        raise StudyInterrupted(f"interrupted: {run.label} seed {run.config.seed} stopped {_stopped_at(run_dir)} of "
                               f"{run.config.steps}, saved in {run_dir}; run the same command again to continue it "
                               "(finished runs are read back)") from None
    except train_mod.NonFiniteLossError as e:
        raise RunDiverged(f"run {run.label} seed {run.config.seed} diverged ({e}; in {run_dir}); {run.remedy} "
                          "and run the command again (finished runs are read back)") from None


def run_study_cli(prog: str, body: Callable[[Sequence[str]], Optional[int]], argv: Optional[Sequence[str]]) -> int:
    """:func:`fsn_model.cli.run_cli` plus the study outcomes: :class:`StudyInterrupted` -> one
    line, exit 130; :class:`RunDiverged` -> one line, exit 1."""
    def guarded(args: Sequence[str]) -> Optional[int]:
        try:
            return body(args)
        except StudyInterrupted as e:
            print(f"{prog}: {e}", file=sys.stderr)
            raise SystemExit(130)
        except RunDiverged as e:
            print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
            raise SystemExit(1)
    return run_cli(prog, guarded, argv)


def unique(values: Iterable[Any], flag: str) -> List[Any]:
    """``values`` as a list; ValueError naming ``flag`` and the first value given twice."""
    out: List[Any] = []
    for v in values:
        if v in out:
            raise ValueError(f"{flag}: {v!r} given twice; give each once")
        out.append(v)
    return out
