"""Runs' curves as a result file, finished or stopped: ``python -m fsn_studies.record_runs RUN_DIR... --out FILE.json``.

``fsn-train`` (and so ``fsn-sweep``) rewrites ``log.json`` in the run directory at every
evaluation, so a run stopped before its schedule ended has one too. For each run
directory this writes:

* ``model_config``, ``params`` and ``train_config`` as the run saved them;
* ``steps_trained`` and ``finished`` (whether it reached ``train_config["steps"]``);
* ``val_bits_per_byte``: ``[step, bits per byte]`` at each evaluation;
* ``train_bits_per_byte``: ``[step, mean]``, the training loss in bits per byte averaged
  over each full block of ``--train-block`` steps ending at ``step`` (the fit, beside the
  validation curve).

``--path-alias OLD=NEW`` (repeatable) rewrites path prefixes in the run directory and in
the settings, so a result file names no machine's directories. Prints one line per run.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


def _alias(value: object, aliases: Sequence[Tuple[str, str]]) -> object:
    if isinstance(value, str):
        for old, new in aliases:
            if value.startswith(old):
                return new + value[len(old):]
    return value


def record(run_dir: str, train_block: int = 100, aliases: Sequence[Tuple[str, str]] = ()) -> Dict[str, object]:
    """The record of one run directory (see the module docstring).

    Raises:
        ValueError: no ``log.json`` in ``run_dir``, or one without training steps.
    """
    path = Path(run_dir) / "log.json"
    if not path.is_file():
        raise ValueError(f"run_dir: expected a run directory holding log.json, got {run_dir!r}")
    log = json.loads(path.read_text())
    loss = {row["step"]: row["loss"] for row in log.get("train", [])}
    if not loss:
        raise ValueError(f"run_dir: {run_dir!r} has no training steps in its log.json")
    trained = max(loss) + 1
    train_bpb = [[end, sum(loss[s] for s in range(end - train_block, end)) / train_block / math.log(2)]
                 for end in range(train_block, trained + 1, train_block)
                 if all(s in loss for s in range(end - train_block, end))]
    settings = {k: _alias(v, aliases) for k, v in log["train_config"].items()}
    return {
        "run_dir": _alias(str(run_dir), aliases), "model_config": log["model_config"], "params": log["params"],
        "train_config": settings, "steps_trained": trained, "finished": trained >= settings["steps"],
        "val_bits_per_byte": [[row["step"], row["bpb"]] for row in log.get("val", [])],
        "train_block": train_block, "train_bits_per_byte": train_bpb,
    }


def _parse_alias(text: str) -> Tuple[str, str]:
    old, sep, new = text.partition("=")
    if not sep or not old:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW (a path prefix and its replacement), got {text!r}")
    return old, new


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fsn_studies.record_runs", description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--train-block", type=int, default=100, help="steps per training-loss mean (default 100)")
    p.add_argument("--path-alias", type=_parse_alias, action="append", default=[], metavar="OLD=NEW")
    p.add_argument("--note", default="", help="what the record is for, stored in the file")
    a = p.parse_args(argv)
    if a.train_block < 1:
        p.error(f"--train-block must be a positive int, got {a.train_block}")
    try:
        runs: List[Dict[str, object]] = [record(d, a.train_block, a.path_alias) for d in a.run_dirs]
    except ValueError as err:
        print(f"record_runs: {err}", file=sys.stderr)
        return 2
    Path(a.out).write_text(json.dumps({"kind": "run-record", "note": a.note, "runs": runs}, indent=1) + "\n")
    for r in runs:
        last = r["val_bits_per_byte"][-1] if r["val_bits_per_byte"] else None
        state = "finished" if r["finished"] else f"stopped at step {r['steps_trained']} of {r['train_config']['steps']}"
        print(f"{r['run_dir']}: {state}; last val {last[1]:.4f} at step {last[0]}" if last else
              f"{r['run_dir']}: {state}; no evaluation yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
