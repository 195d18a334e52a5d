"""The run directory of ``fsn-train``: one run at a time, its files, and resuming it.

A run directory holds ``checkpoint.pt`` and ``log.json``, written atomically at every
evaluation and at the end (:func:`save_run`). :class:`RunDirectory` creates and locks it
for the whole run (:class:`fsn_model.run_lock.RunLock`: a second run, resume or sweep into it
is refused naming the holder), refuses a fresh run into a directory that already holds one
unless ``overwrite``, and removes what a killed writer left. A resume continues from the
directory's checkpoint with its saved settings (:func:`resume_config`); the fields given that
differ override them and are announced (:func:`resume_overrides`), except those of
:data:`fsn_model.train_config.FIXED_ON_RESUME`.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from .checkpoint import atomic_write_text, load_checkpoint, remove_stale_temporaries, save_checkpoint
from .cli import describe_os_error
from .run_lock import RunLock
from .train_config import FIXED_ON_RESUME, RUNTIME_FIELDS, TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.json"


def saved_config(ckpt: Dict[str, Any]) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in ckpt["train_config"].items() if k in known})


def checkpoint_to_resume(out: Path) -> Dict[str, Any]:
    path = out / CHECKPOINT_NAME
    if not path.is_file():
        raise ValueError(f"resume: no checkpoint at {path}, so there is no run to resume (drop --resume to start one)")
    mtime = path.stat().st_mtime_ns
    return dict(load_checkpoint(str(path)), _read_mtime_ns=mtime)


def resume_config(out: str, **overrides: Any) -> TrainConfig:
    """The saved config of the run in ``out`` with ``overrides`` applied and ``resume=True``.

    Raises ValueError when ``out`` holds no checkpoint or an override names an unknown field.
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"resume_config: unknown TrainConfig fields {unknown}")
    saved = saved_config(checkpoint_to_resume(Path(out)))
    # allow_different_data is a choice of this resume, never inherited from the saved one
    return dataclasses.replace(saved, **{"allow_different_data": False, **overrides}, out=out, resume=True)


def resume_overrides(cfg: TrainConfig, ckpt: Dict[str, Any]) -> List[str]:
    """The fields of ``cfg`` that override the saved config of ``ckpt``, as ["steps 1000 -> 2000", ...].
    Raises ValueError for a field that cannot change on resume."""
    saved = saved_config(ckpt)
    changed = []
    for f in dataclasses.fields(TrainConfig):
        new, old = getattr(cfg, f.name), getattr(saved, f.name)
        if f.name == "data":  # the same file, however it was spelled
            new, old = resolved_data(new), resolved_data(old)
        if f.name in RUNTIME_FIELDS or new == old:
            continue
        if f.name == "data" and cfg.allow_different_data:
            changed.append(f"data {old!r} -> {new!r}")
            continue
        if f.name in FIXED_ON_RESUME:
            raise ValueError(f"resume: {f.name} cannot change on resume (saved {old!r}, given {new!r})")
        changed.append(f"{f.name} {old!r} -> {new!r}")
    return changed


def resolved_data(data: Optional[str]) -> Optional[str]:
    """A corpus path made absolute (symlinks followed); None (the default corpus) stays None."""
    return None if data is None else str(Path(data).resolve())


def writable_directory(path: Union[str, Path], what: str) -> Path:
    """Create ``path`` (and its parents) and check a file can be created in it; returns it.

    Raises:
        ValueError: ``what`` (e.g. "out", "--out") names the folder, which is not a directory or
            not writable.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path} is not a writable directory ({describe_os_error(e)})") from None
    return path


class RunDirectory:
    """``with RunDirectory(cfg) as out:`` the run directory ``cfg.out``, created and locked for
    the block: a directory, writable, held by no other run, and for a fresh run free of an
    earlier run (unless ``cfg.overwrite``, which removes its files); stale temporaries are
    removed. On exit the lock is released, and a directory this run created and left empty is
    removed. Raises ValueError (an unusable directory, another run's files) before the block."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg, self.path = cfg, Path(cfg.out)
        self._lock: Optional[RunLock] = None
        self._created = False

    def __enter__(self) -> Path:
        out, cfg = self.path, self.cfg
        if out.exists() and not out.is_dir():
            raise ValueError(f"out {cfg.out} exists and is not a directory")
        self._created = not out.exists()
        writable_directory(out, "out")
        self._lock = RunLock(out).acquire()
        try:
            if not cfg.resume and (out / CHECKPOINT_NAME).exists():
                if not cfg.overwrite:
                    raise ValueError(f"out {cfg.out} already holds a run ({CHECKPOINT_NAME}); pass --resume to "
                                     "continue it or --overwrite to replace it")
                for name in (CHECKPOINT_NAME, LOG_NAME):
                    (out / name).unlink(missing_ok=True)
            remove_stale_temporaries(out)
        except BaseException:
            self.__exit__()
            raise
        return out

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._created:
            try:
                self.path.rmdir()  # only when empty
            except OSError:
                pass


def already_done(cfg: TrainConfig, ckpt: Dict[str, Any]) -> Optional[str]:
    """For a resume with nothing left to run: what to say (and what to pass to continue)."""
    step = ckpt["step"]
    if step >= cfg.steps:
        return (f"the run in {cfg.out} is already complete ({step} of {cfg.steps} steps); nothing to do "
                f"(to train it further pass --resume with --steps N, N > {step})")
    if cfg.stop_at is not None and step >= cfg.stop_at:
        return (f"the run in {cfg.out} already stopped at step {step} (stop_at {cfg.stop_at}, of {cfg.steps} "
                f"steps); nothing to do (to continue pass --resume with --stop-at N, {step} < N <= {cfg.steps})")
    return None


def save_run(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, step: int,
          log: Dict[str, Any]) -> None:
    """Write the run's checkpoint (model, optimizer, configs, ``step``: the next step to run,
    log, corpus) and ``log.json`` into ``path``, each atomically."""
    save_checkpoint(str(path / CHECKPOINT_NAME), {
        "model_config": log["model_config"], "train_config": dataclasses.asdict(cfg),
        "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
        "log": log, "corpus": {k: log["corpus"][k] for k in ("name", "path", "sha256")},
    })
    atomic_write_text(path / LOG_NAME, json.dumps(log, indent=1, allow_nan=False))


