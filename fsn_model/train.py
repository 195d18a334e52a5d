"""Training: ``fsn-train`` / ``python -m fsn_model.train`` and the programmatic ``train``.

    from fsn_model.train import TrainConfig, train
    log = train(TrainConfig(model="transformer", params="1M", steps=2000, seed=1, out="runs/t"))

``train(config) -> dict`` returns the run log (also written to ``OUT/log.json``): the
configs, parameter count, corpus (name, path, sha256), per-step ``train`` records
``{step, loss, lr}``, ``val`` records ``{step, bpb}``, ``final_val_bpb``, ``wall_time_s``.
Two runs with the same config (model, params, seed, data, batch, seq_len, lr, steps) see
the same init and the same batches, which is what a fair comparison needs.

AdamW (betas 0.9/0.95, weight decay on 2-D weights but not embeddings), linear warmup
then cosine decay to ``min_lr_ratio * lr``, grad-norm clipping, bf16 autocast on CUDA.
The loop reads the loss back from the device only every ``log_every`` steps (and at each
evaluation), so the GPU never waits on the host in between.

Every setting is checked before any work (:func:`validate`), and the data file is read,
before the run directory is created. Run directory ``out``: one run at a time; a run
holds its lock (:mod:`fsn_model.run_lock`) while it trains, and a second run, resume or
sweep into it is refused naming the holder. ``checkpoint.pt`` and ``log.json`` are written
atomically at every evaluation and at the end; a failed write (no space left, ...) is
named in one line and the previous files stay. A fresh run refuses a directory that
already holds a checkpoint unless ``overwrite=True``; ``resume=True`` continues the run
there (and fails if there is none) with its saved settings: fields of the given config
that differ from the saved ones override them and are announced, except model, params,
model_overrides and data, which cannot change. :func:`resume_config` builds the config of
a resume with only the given overrides. The next step's loss of a resumed run equals an
uninterrupted run's. A resume with no step left to run says so and returns the log.

The corpus: ``data`` is stored resolved (absolute) with the file's sha256; a resume
refuses a file whose sha256 differs from the recorded one (naming both) unless
``allow_different_data=True`` (the change is then kept in ``log["corpus_history"]``).

Stops: SIGINT (Ctrl-C) finishes the current step, saves a checkpoint and raises
:class:`TrainingInterrupted`; a non-finite loss raises :class:`NonFiniteLossError` and
leaves the last good checkpoint in place. ``fsn-train`` reports either as one line
(exit 130 and 1).

Under ``torchrun --nproc_per_node N`` it trains with DDP (gloo on CPU, nccl on CUDA):
each rank draws its own windows (seeded by rank), logged losses are averaged over
ranks, rank 0 evaluates, writes files and shows progress.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .build import MODEL_NAMES, build_model, count_params, model_from_config, parse_params
from .checkpoint import (
    atomic_write_text,
    load_checkpoint,
    remove_stale_temporaries,
    resolve_device,
    save_checkpoint,
)
from .cli import OneLineParser, add_dataclass_flags, explicit_args, run_cli
from .config import config_to_dict
from .data import check_same_corpus, document_boundaries, eval_windows, get_batch, load_corpus, separator_bytes
from .evaluate import bits_per_byte
from .run_lock import RunLock
from .threads import add_threads_flag, apply_threads, choose_threads

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.json"


def _setting(default: Any = dataclasses.MISSING, help: str = "", **metadata: Any) -> Any:
    """A TrainConfig field; ``help`` (and ``choices``, ``metavar``) become its fsn-train flag's."""
    extra = {"default_factory": dict} if default is dict else {"default": default}
    return field(metadata=dict(help=help, **metadata), **extra)


@dataclass
class TrainConfig:
    """Everything a run depends on: the one declaration of a run's settings. Defaults are the
    CPU quickstart (~2-3 min on 2 idle cores, ~200k-param FSN, 1000 steps).

    Each field is a flag of ``fsn-train`` (``batch_size`` -> ``--batch-size``, help from the
    field's metadata; ``progress`` -> ``--no-progress``); ``fsn-compare`` and ``fsn-sweep``
    take the shared ones from here too (:func:`fsn_model.cli.add_dataclass_flags`)."""

    model: str = _setting("fsn", "architecture", choices=MODEL_NAMES)
    params: Union[int, str] = _setting("200k", "target size, e.g. 250k, 1M")
    data: Optional[str] = _setting(None, "byte corpus file (enwik8 gets its standard split); None: Python stdlib "
                                   "sources. Stored resolved, with its sha256")
    steps: int = _setting(1000, "optimizer steps")
    batch_size: int = _setting(16, "windows per step")
    seq_len: int = _setting(128, "bytes per window")
    lr: float = _setting(1.2e-2, "peak learning rate (FSN's best at 250k in the tuning study; the transformer's "
                         "was 6e-3)")
    min_lr_ratio: float = _setting(0.1, "the cosine schedule ends at min_lr_ratio * lr")
    warmup: int = _setting(50, "linear warmup steps")
    weight_decay: float = _setting(0.1, "AdamW weight decay of 2-D weights (not embeddings)")
    grad_clip: float = _setting(1.0, "gradient-norm clipping")
    seed: int = _setting(0, "init and batch seed (>= 0)")
    device: str = _setting("auto", "auto, cpu, cuda, cuda:1 ...")
    out: str = _setting("runs/fsn-quickstart", "run directory (checkpoint.pt, log.json); one run at a time")
    resume: bool = _setting(False, "continue the run in --out with its saved settings; flags given explicitly "
                            "override them")
    overwrite: bool = _setting(False, "replace a run already in --out")
    allow_different_data: bool = _setting(False, "resume on a corpus whose sha256 differs from the one the run "
                                          "recorded (or on another --data file)")
    eval_every: int = _setting(250, "validate and checkpoint every N steps")
    eval_windows: int = _setting(64, "validation windows")
    log_every: int = _setting(10, "read the loss back from the device and update the progress bar every N steps")
    stop_at: Optional[int] = _setting(None, "stop (with a checkpoint) after this step, as if interrupted")
    progress: bool = _setting(True, "a progress bar on stderr; --no-progress turns it off")
    model_overrides: Dict[str, Any] = _setting(dict, "build_model knobs, e.g. n_layers=2,k1_init=1.0")
    pack_documents: Optional[str] = _setting(None, "split each training window into documents ending with SEP "
                                             "(backslash escapes allowed, e.g. '\\n\\n'); attention never "
                                             "crosses a document (FSN models)", metavar="SEP")
    compile: bool = _setting(False, "torch.compile the model (CPU and CUDA; the first steps compile; "
                             "fsn_model/README.md says when it pays)")


# Fields that describe where and how this process runs, not the run itself.
RUNTIME_FIELDS = ("device", "out", "resume", "overwrite", "progress", "allow_different_data", "compile")
# Fields a resumed run cannot change: the saved weights and batches depend on them.
FIXED_ON_RESUME = ("model", "params", "model_overrides", "data", "pack_documents")


class TrainingInterrupted(Exception):
    """SIGINT stopped training; a checkpoint of the last finished step was saved."""


class NonFiniteLossError(RuntimeError):
    """The loss (or validation figure) became NaN or inf; the last good checkpoint is kept."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from lr to ``min_lr_ratio * lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def _dist_setup(device: torch.device) -> Tuple[int, int, torch.device]:
    """(rank, world, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return rank, world, device


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first bad field of ``cfg``. Checks every setting before
    any work (a knob of ``model_overrides`` that build_model does not take included)."""
    if cfg.model not in MODEL_NAMES:
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}; got {cfg.model!r}")
    parse_params(cfg.params)
    for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_windows", "log_every"):
        value = getattr(cfg, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    for name in ("warmup", "seed"):
        value = getattr(cfg, name)
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    for name, low, low_ok in (("lr", 0.0, False), ("grad_clip", 0.0, False), ("weight_decay", 0.0, True),
                              ("min_lr_ratio", 0.0, True)):
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and (value >= low if low_ok else value > low)):
            raise ValueError(f"{name} must be a finite number {'>=' if low_ok else '>'} {low:g}, got {value!r}")
    if cfg.min_lr_ratio > 1:
        raise ValueError(f"min_lr_ratio must be <= 1, got {cfg.min_lr_ratio}")
    if cfg.stop_at is not None and (not _is_int(cfg.stop_at) or cfg.stop_at < 1):
        raise ValueError(f"stop_at must be an int >= 1 when set, got {cfg.stop_at!r}")
    if not isinstance(cfg.out, (str, os.PathLike)) or not str(cfg.out).strip():
        raise ValueError(f"out must name a run directory, got {cfg.out!r}")
    if cfg.data is not None and not isinstance(cfg.data, (str, os.PathLike)):
        raise ValueError(f"data must be a file path or None, got {cfg.data!r}")
    if not isinstance(cfg.model_overrides, dict):
        raise ValueError(f"model_overrides must be a dict of build_model knobs, got {cfg.model_overrides!r}")
    if cfg.pack_documents is not None:
        separator_bytes(cfg.pack_documents)
        if cfg.model == "transformer":
            raise ValueError("pack_documents: the transformer baseline has no packed attention; "
                             "use it with the FSN models (fsn, fsn-meanfield)")
    if cfg.model_overrides and not cfg.resume:
        with torch.device("meta"):  # an unknown knob fails here, not after the data is read
            try:
                build_model(cfg.model, cfg.params, **cfg.model_overrides)
            except TypeError as e:
                raise ValueError(f"model_overrides {cfg.model_overrides}: {e}") from None


_validate = validate  # the name used before it was public


def _saved_config(ckpt: Dict[str, Any]) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in ckpt["train_config"].items() if k in known})


def _checkpoint_to_resume(out: Path) -> Dict[str, Any]:
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
    saved = _saved_config(_checkpoint_to_resume(Path(out)))
    # allow_different_data is a choice of this resume, never inherited from the saved one
    return dataclasses.replace(saved, **{"allow_different_data": False, **overrides}, out=out, resume=True)


def _resume_overrides(cfg: TrainConfig, ckpt: Dict[str, Any]) -> List[str]:
    """The fields of ``cfg`` that override the saved config of ``ckpt``, as ["steps 1000 -> 2000", ...].
    Raises ValueError for a field that cannot change on resume."""
    saved = _saved_config(ckpt)
    changed = []
    for f in dataclasses.fields(TrainConfig):
        new, old = getattr(cfg, f.name), getattr(saved, f.name)
        if f.name == "data":  # the same file, however it was spelled
            new, old = _resolved(new), _resolved(old)
        if f.name in RUNTIME_FIELDS or new == old:
            continue
        if f.name == "data" and cfg.allow_different_data:
            changed.append(f"data {old!r} -> {new!r}")
            continue
        if f.name in FIXED_ON_RESUME:
            raise ValueError(f"resume: {f.name} cannot change on resume (saved {old!r}, given {new!r})")
        changed.append(f"{f.name} {old!r} -> {new!r}")
    return changed


def _resolved(data: Optional[str]) -> Optional[str]:
    """A corpus path made absolute (symlinks followed); None (the default corpus) stays None."""
    return None if data is None else str(Path(data).resolve())


def _prepare_out_dir(cfg: TrainConfig) -> Tuple[Path, RunLock, bool]:
    """Create and lock the run directory: a directory, writable, held by no other run
    (:class:`fsn_model.run_lock.RunLock`), and for a fresh run free of an earlier run
    (unless ``overwrite``). Removes stale temporaries. Returns (path, the held lock,
    whether this call created the directory)."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {cfg.out} exists and is not a directory")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"out {cfg.out} is not a writable directory ({e.strerror or e})") from None
    lock = RunLock(out).acquire()
    try:
        if not cfg.resume and (out / CHECKPOINT_NAME).exists():
            if not cfg.overwrite:
                raise ValueError(f"out {cfg.out} already holds a run ({CHECKPOINT_NAME}); pass --resume to continue "
                                 "it or --overwrite to replace it")
            for name in (CHECKPOINT_NAME, LOG_NAME):
                (out / name).unlink(missing_ok=True)
        remove_stale_temporaries(out)
    except BaseException:
        _release(out, lock, created)
        raise
    return out, lock, created


def _release(out: Path, lock: RunLock, created: bool) -> None:
    """Drop the run directory's lock; a directory this run created and left empty is removed."""
    lock.release()
    if created:
        try:
            out.rmdir()  # only when empty
        except OSError:
            pass


def _already_done(cfg: TrainConfig, ckpt: Dict[str, Any]) -> Optional[str]:
    """For a resume with nothing left to run: what to say (and what to pass to continue)."""
    step = ckpt["step"]
    if step >= cfg.steps:
        return (f"the run in {cfg.out} is already complete ({step} of {cfg.steps} steps); nothing to do "
                f"(to train it further pass --resume with --steps N, N > {step})")
    if cfg.stop_at is not None and step >= cfg.stop_at:
        return (f"the run in {cfg.out} already stopped at step {step} (stop_at {cfg.stop_at}, of {cfg.steps} "
                f"steps); nothing to do (to continue pass --resume with --stop-at N, {step} < N <= {cfg.steps})")
    return None


class _DeferredSigint:
    """While active (main thread only), the first SIGINT only sets ``requested``, so the
    current step finishes before the loop stops; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_DeferredSigint":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _progress_bar(total: int, initial: int, desc: str, enabled: bool, file=None) -> tqdm:
    """A tqdm bar on ``file`` (stderr). A terminal that reports 0 columns (as under
    ``script``) would make tqdm print nothing at all, so the bar gets 100 columns there."""
    file = sys.stderr if file is None else file
    try:
        columns = os.get_terminal_size(file.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = None  # not a terminal: tqdm writes plain updates
    sizing = dict(ncols=100) if columns == 0 else dict(dynamic_ncols=True)
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", file=file, **sizing)


def _flush_losses(pending: List[Tuple[int, float, torch.Tensor]], log: Dict[str, Any], world: int) -> None:
    """Move the losses still on the device into ``log["train"]``: one host sync (and one
    all-reduce under DDP) for the whole interval. Raises NonFiniteLossError on NaN/inf."""
    if not pending:
        return
    losses = torch.stack([loss for _, _, loss in pending])
    if world > 1:
        dist.all_reduce(losses)
        losses /= world
    for (step, lr, _), loss in zip(pending, losses.tolist()):
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"step {step}: training loss is {loss}")
        log["train"].append({"step": step, "loss": loss, "lr": lr})
    pending.clear()


def _save(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, step: int,
          log: Dict[str, Any]) -> None:
    """Checkpoint and log.json, each written atomically."""
    save_checkpoint(str(path / CHECKPOINT_NAME), {
        "model_config": log["model_config"], "train_config": dataclasses.asdict(cfg),
        "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
        "log": log, "corpus": {k: log["corpus"][k] for k in ("name", "path", "sha256")},
    })
    atomic_write_text(path / LOG_NAME, json.dumps(log, indent=1, allow_nan=False))


def train(config: TrainConfig) -> Dict[str, Any]:
    """Train (or resume) one run; returns its log dict (see module docstring).

    Raises:
        ValueError: a bad config, an unusable run directory, or a resume that cannot be.
        TrainingInterrupted: SIGINT (after saving a checkpoint).
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint stays).
    """
    # settings: validate; a resume starts from its checkpoint's config
    cfg = dataclasses.replace(config, data=_resolved(config.data))
    validate(cfg)
    ckpt = _checkpoint_to_resume(Path(cfg.out)) if cfg.resume else None
    overridden = _resume_overrides(cfg, ckpt) if ckpt is not None else []
    rank, world, device = _dist_setup(resolve_device(cfg.device))
    if ckpt is not None:
        done = _already_done(cfg, ckpt)
        if done is not None:
            if rank == 0:
                print(f"fsn-train: {done}", flush=True)
            return ckpt["log"]

    # data: read (and, on resume, checked against the recorded sha256) before out is touched
    corpus = load_corpus(cfg.data)
    if ckpt is not None:
        check_same_corpus(corpus, ckpt.get("corpus"), f"the run in {cfg.out}", cfg.allow_different_data)

    # the run directory: created only now, and held for the whole run
    if rank != 0:
        return _train_in(cfg, ckpt, overridden, corpus, rank, world, device, Path(cfg.out))
    out, lock, created = _prepare_out_dir(cfg)
    try:
        if ckpt is not None and (out / CHECKPOINT_NAME).stat().st_mtime_ns != ckpt["_read_mtime_ns"]:
            raise ValueError(f"resume: another run wrote {out / CHECKPOINT_NAME} while this one started; "
                             "run the resume again")
        return _train_in(cfg, ckpt, overridden, corpus, rank, world, device, out)
    finally:
        _release(out, lock, created)


def _train_in(cfg: TrainConfig, ckpt: Optional[Dict[str, Any]], overridden: List[str], corpus, rank: int,
              world: int, device: torch.device, out: Path) -> Dict[str, Any]:
    """The run itself, in the locked run directory ``out`` (see :func:`train`)."""
    # data: the train split and fixed validation windows
    train_data, val = corpus.split("train"), eval_windows(corpus.split("val"), cfg.seq_len, cfg.eval_windows)

    # model and optimizer: fresh from the seed, or restored from the checkpoint
    torch.manual_seed(cfg.seed)
    if ckpt is None:
        model = build_model(cfg.model, cfg.params, **cfg.model_overrides)
    else:
        model = model_from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
    model.to(device).train()
    opt = _optimizer(model, cfg)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
    step = ckpt["step"] if ckpt else 0
    log = ckpt["log"] if ckpt else {
        "model_config": config_to_dict(model.config), "params": count_params(model),
        "corpus": corpus.describe(), "world_size": world, "train": [], "val": [], "wall_time_s": 0.0,
    }
    if ckpt is not None and log["corpus"].get("sha256") != corpus.sha256:  # allowed by allow_different_data
        log.setdefault("corpus_history", []).append(dict(log["corpus"], until_step=step))
        log["corpus"] = corpus.describe()
    log["train_config"] = dataclasses.asdict(cfg)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if cfg.compile:  # the checkpoint keeps saving `model`; only the calls go through the compiled wrapper
        ddp = torch.compile(ddp)
    stop = cfg.steps if cfg.stop_at is None else min(cfg.steps, cfg.stop_at)
    if rank == 0:
        what = f"resuming {out} at step {step}" if ckpt else f"training {cfg.model} ({log['params']:,} params) in {out}"
        print(f"fsn-train: {what}, {stop} steps" + (f" (overridden: {', '.join(overridden)})" if overridden else ""),
              flush=True)

    # the loop: one optimizer step per iteration; losses stay on the device until logged
    separator = None if cfg.pack_documents is None else separator_bytes(cfg.pack_documents)
    tokens_per_step = cfg.batch_size * cfg.seq_len * world
    bar = _progress_bar(stop, step, f"{cfg.model} {cfg.params}", rank == 0 and cfg.progress)
    pending: List[Tuple[int, float, torch.Tensor]] = []
    t_start, t_log, last_log_step = time.time(), time.time(), step
    try:
        with _DeferredSigint() as sigint:
            while step < stop:
                # learning rate of this step
                lr = lr_at(step, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                # batch: a pure function of (seed, step, rank), so resume sees the same data
                x, y = (t.to(device) for t in get_batch(train_data, cfg.batch_size, cfg.seq_len, cfg.seed, step,
                                                         rank))
                # forward, backward, clip, update
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    if separator is None:
                        logits = ddp(x)
                    else:  # documents packed in one row; a target across a boundary is ignored
                        cu_seqlens, crosses = document_boundaries(x, separator)
                        logits = ddp(x.reshape(1, -1), cu_seqlens=cu_seqlens).view(*x.shape, -1)
                        y = y.masked_fill(crosses, -100)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                pending.append((step, lr, loss.detach()))
                step += 1
                bar.update(1)
                is_eval = step % cfg.eval_every == 0 or step == stop
                # log: the one host-device sync between evaluations
                if step % cfg.log_every == 0 or is_eval or sigint.requested:
                    _flush_losses(pending, log, world)
                    now = time.time()
                    bar.set_postfix(loss=f"{log['train'][-1]['loss']:.3f}",
                                    tok_s=f"{tokens_per_step * (step - last_log_step) / max(now - t_log, 1e-9):,.0f}")
                    t_log, last_log_step = now, step
                # evaluate and checkpoint (rank 0)
                if is_eval and rank == 0:
                    bpb = bits_per_byte(model, val)
                    if not math.isfinite(bpb):
                        raise NonFiniteLossError(f"step {step}: validation bits per byte is {bpb}")
                    log["val"].append({"step": step, "bpb": bpb})
                    log["final_val_bpb"] = bpb
                    bar.write(f"step {step}: val {bpb:.4f} bits/byte")
                    log["wall_time_s"] += time.time() - t_start
                    t_start = time.time()
                    _save(out, model, opt, cfg, step, log)
                # stop on Ctrl-C after a finished step, with a checkpoint of it
                if sigint.requested:
                    if rank == 0 and not is_eval:
                        log["wall_time_s"] += time.time() - t_start
                        _save(out, model, opt, cfg, step, log)
                    raise TrainingInterrupted(f"interrupted at step {step}; saved {out / CHECKPOINT_NAME} "
                                              "(continue with --resume)")
    except NonFiniteLossError as e:
        kept = f"the last good checkpoint ({out / CHECKPOINT_NAME}) is kept" if (out / CHECKPOINT_NAME).exists() \
            else "no checkpoint was written"
        raise NonFiniteLossError(f"{e}; stopped, {kept}") from None
    finally:
        bar.close()
    if world > 1:
        dist.barrier()
    return log


CLI_ONLY = ("threads", "sample")  # fsn-train flags that are not settings of the run


def _parser() -> OneLineParser:
    """fsn-train's flags: one per TrainConfig field, plus :data:`CLI_ONLY`."""
    p = OneLineParser(prog="fsn-train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      description="Train an FSN (or baseline) byte-level LM. With no arguments: the CPU quickstart "
                      "on the Python stdlib corpus.")
    add_dataclass_flags(p, TrainConfig)
    add_threads_flag(p)
    p.add_argument("--sample", type=int, default=200, help="bytes to sample at the end (0: none)")
    return p


def _config_from_args(argv: Sequence[str]) -> Tuple[TrainConfig, Dict[str, Any]]:
    """(TrainConfig, CLI-only options {sample, threads}) from the command line. A resume
    takes the saved config and only the flags given explicitly."""
    args = vars(_parser().parse_args(argv))
    cli_only = {name: args.pop(name) for name in CLI_ONLY}
    choose_threads(cli_only["threads"])  # a bad --threads fails before anything runs
    if cli_only["sample"] < 0:
        raise ValueError(f"--sample must be >= 0, got {cli_only['sample']}")
    if not args["resume"]:
        return TrainConfig(**args), cli_only
    given = explicit_args(_parser(), argv)
    for name in CLI_ONLY + ("resume", "out"):
        given.pop(name, None)
    return resume_config(args["out"], **given), cli_only


def _main(argv: Sequence[str]) -> int:
    cfg, cli_only = _config_from_args(argv)
    apply_threads(cli_only["threads"])
    t0 = time.time()
    try:
        log = train(cfg)
    except TrainingInterrupted as e:
        print(f"fsn-train: {e}", file=sys.stderr)
        return 130
    except NonFiniteLossError as e:
        print(f"fsn-train: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fsn-train: interrupted; nothing was saved after the last checkpoint", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0 and "final_val_bpb" in log:
        print(f"final val bits/byte: {log['final_val_bpb']:.4f}  ({log['params']:,} params, "
              f"corpus {log['corpus']['name']} sha256 {log['corpus']['sha256'][:12]}, {time.time() - t0:.0f}s)")
        if cli_only["sample"] > 0:
            from .checkpoint import load_model
            from .generate import sample

            model, _ = load_model(str(Path(cfg.out) / CHECKPOINT_NAME))
            prompt = b"def "
            text = bytes(list(prompt) + sample(model, list(prompt), cli_only["sample"], 0.8, 0, cfg.seed,
                                               cfg.seq_len))
            print("sample:\n" + text.decode("utf-8", errors="replace"))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point ``fsn-train``."""
    return run_cli("fsn-train", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
